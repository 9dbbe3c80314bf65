"""Direct algorithms: everything in one step, every rank talking to every peer at once.

On a fully connected topology (one link per ordered pair of devices) a direct
collective costs a single latency; it pays for it in bytes, since each rank
sends to p-1 peers over p-1 links at the same time.  With S the full buffer:

    all_reduce      alpha + S/bw       one-shot: everyone sends S to everyone, (p-1) S sent per rank
    reduce          alpha + S/bw       everyone sends S to the root
    broadcast       alpha + S/bw       the root sends S to everyone
    all_gather      alpha + S/(p bw)   rank r sends chunk r to everyone
    reduce_scatter  alpha + S/(p bw)   rank r sends chunk j to rank j
    scatter         alpha + S/(p bw)   the root sends chunk j to rank j
    gather          alpha + S/(p bw)   rank j sends chunk j to the root
    all_to_all      alpha + S/(p bw)   rank r sends chunk j to rank j's slot p+r

The one-shot all_reduce relies on the schedule's reduction order: the p-1
values that reduce into one chunk in one step are combined in ascending rank
order with the receiver's own value at its rank, so every rank computes the
same sum in the same order and holds the same bits.

p = 1 gives zero steps, except all_to_all, whose local copy of the own chunk
(chunk 0 -> slot 1, a transfer with src == dst that crosses no link) remains.
"""

from __future__ import annotations

from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COPY, REDUCE, Schedule, Transfer, make_steps


def all_reduce(p: int) -> Schedule:
    """One-shot all-reduce: every rank reduces its whole buffer (1 chunk) into every other rank."""
    step = [Transfer(s, d, (0,), REDUCE) for s in range(p) for d in range(p) if s != d]
    return Schedule(Collective.ALL_REDUCE, "direct", p, 1, make_steps([step]))


def reduce(p: int, root: int) -> Schedule:
    """Every other rank reduces its whole buffer (1 chunk) into the root."""
    step = [Transfer(s, root, (0,), REDUCE) for s in range(p) if s != root]
    return Schedule(Collective.REDUCE, "direct", p, 1, make_steps([step]), root)


def broadcast(p: int, root: int) -> Schedule:
    """The root copies its whole buffer (1 chunk) to every other rank."""
    step = [Transfer(root, d, (0,), COPY) for d in range(p) if d != root]
    return Schedule(Collective.BROADCAST, "direct", p, 1, make_steps([step]), root)


def all_gather(p: int) -> Schedule:
    """Rank r copies its chunk r to every other rank."""
    step = [Transfer(s, d, (s,), COPY) for s in range(p) for d in range(p) if s != d]
    return Schedule(Collective.ALL_GATHER, "direct", p, p, make_steps([step]))


def reduce_scatter(p: int) -> Schedule:
    """Rank r reduces its chunk j into rank j, for every j != r."""
    step = [Transfer(s, d, (d,), REDUCE) for s in range(p) for d in range(p) if s != d]
    return Schedule(Collective.REDUCE_SCATTER, "direct", p, p, make_steps([step]))


def scatter(p: int, root: int) -> Schedule:
    """The root copies chunk j to rank j."""
    step = [Transfer(root, d, (d,), COPY) for d in range(p) if d != root]
    return Schedule(Collective.SCATTER, "direct", p, p, make_steps([step]), root)


def gather(p: int, root: int) -> Schedule:
    """Rank j copies its chunk j to the root."""
    step = [Transfer(s, root, (s,), COPY) for s in range(p) if s != root]
    return Schedule(Collective.GATHER, "direct", p, p, make_steps([step]), root)


def all_to_all(p: int) -> Schedule:
    """Rank r copies input chunk j to rank j's slot p+r; its own chunk r moves locally to slot p+r."""
    step = [Transfer(s, d, (d,), COPY, (p + s,)) for s in range(p) for d in range(p)]
    return Schedule(Collective.ALL_TO_ALL, "direct", p, 2 * p, make_steps([step]))
