"""Binomial-tree algorithms, for any world size and any root.

Ranks are renumbered relative to the root, rel = (rank - root) mod p, so the
root is rel 0.  With L = ceil(log2 p) the tree has L levels; at level k the
distance is d = 2^(L-1-k) and every rel that is a multiple of 2d sends to
rel + d (when that rank exists).  So rel 0 first reaches the far half of the
ranks, and rel x is the root of the subtree rel x .. x + (lowest set bit of x) - 1:

    p = 6, root 0:   step 0: 0->4    step 1: 0->2 (rel 6 absent)    step 2: 0->1, 2->3, 4->5

broadcast and scatter walk the tree down (largest distance first); reduce and
gather walk it up (smallest distance first).  scatter and gather move a whole
subtree's chunks as one multi-chunk transfer.  all_reduce is a reduce to rank 0
followed by a broadcast from rank 0.  Costs, S the full buffer:

    broadcast, reduce   L (alpha + S/bw)
    all_reduce          2L (alpha + S/bw)
    scatter, gather     L alpha + (p-1)/p * S/bw     (the root's first send is the largest)

(Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication
Operations in MPICH", IJHPCA 2005.)
"""

from __future__ import annotations

from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COPY, REDUCE, Schedule, Step, Transfer, make_steps


def broadcast(p: int, root: int) -> Schedule:
    """Binomial broadcast of one chunk from `root`: ceil(log2 p) steps."""
    return Schedule(Collective.BROADCAST, "tree", p, 1, _down(p, root), root)


def reduce(p: int, root: int) -> Schedule:
    """Binomial reduce of one chunk into `root`: ceil(log2 p) steps."""
    return Schedule(Collective.REDUCE, "tree", p, 1, _up(p, root), root)


def all_reduce(p: int) -> Schedule:
    """Binomial reduce to rank 0, then binomial broadcast from rank 0: 2 ceil(log2 p) steps, 1 chunk."""
    return Schedule(Collective.ALL_REDUCE, "tree", p, 1, _up(p, 0) + _down(p, 0))


def scatter(p: int, root: int) -> Schedule:
    """Binomial scatter of p chunks: each send carries the receiver's whole subtree."""
    return Schedule(Collective.SCATTER, "tree", p, p, _down(p, root, subtrees=True), root)


def gather(p: int, root: int) -> Schedule:
    """Binomial gather of p chunks: each send carries the sender's whole subtree."""
    return Schedule(Collective.GATHER, "tree", p, p, _up(p, root, subtrees=True), root)


def _distances(p: int) -> list[int]:
    """Tree distances, largest first: 2^(L-1), ..., 2, 1 with L = ceil(log2 p)."""
    return [1 << k for k in reversed(range((p - 1).bit_length()))]


def _down(p: int, root: int, subtrees: bool = False) -> tuple[Step, ...]:
    """Broadcast (one chunk) or scatter (`subtrees`: p chunks) down the tree."""
    steps = []
    for d in _distances(p):
        # rel x (a multiple of 2d) hands rel x+d either chunk 0 or the chunks of rels x+d .. x+2d-1
        steps.append(
            [
                Transfer(_abs(x, root, p), _abs(x + d, root, p), _span(x + d, x + 2 * d, root, p, subtrees))
                for x in range(0, p - d, 2 * d)
            ]
        )
    return make_steps(steps)


def _up(p: int, root: int, subtrees: bool = False) -> tuple[Step, ...]:
    """Reduce (one chunk, op reduce) or gather (`subtrees`: p chunks, op copy) up the tree."""
    op = COPY if subtrees else REDUCE
    steps = []
    for d in reversed(_distances(p)):
        # rel x+d hands rel x its partial sum, or the chunks of its subtree x+d .. x+2d-1
        steps.append(
            [
                Transfer(
                    _abs(x + d, root, p), _abs(x, root, p), _span(x + d, x + 2 * d, root, p, subtrees), op
                )
                for x in range(0, p - d, 2 * d)
            ]
        )
    return make_steps(steps)


def _abs(rel: int, root: int, p: int) -> int:
    return (rel + root) % p


def _span(lo: int, hi: int, root: int, p: int, subtrees: bool) -> tuple[int, ...]:
    """The chunks of relative ranks lo .. hi-1 (clipped to p), or the single chunk 0."""
    if not subtrees:
        return (0,)
    return tuple(_abs(x, root, p) for x in range(lo, min(hi, p)))
