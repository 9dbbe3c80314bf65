"""Recursive halving and doubling (Rabenseifner), with the standard fold-in for any p.

Power of two, p' ranks.  Recursive halving is a reduce-scatter: at distance
d = p'/2, p'/4, ..., 1 rank v exchanges with v XOR d; each keeps the half of its
current chunk range on its own side of d and sends the other half (op reduce),
so the range halves every step and v ends owning chunk v.  Recursive doubling is
an all-gather: at distance d = 1, 2, ..., p'/2 rank v copies its current block
(the d owners around it) to v XOR d, so the block doubles every step.

    p' = 4, halving:   d=2: 0<->2, 1<->3 (2 chunks each)    d=1: 0<->1, 2<->3 (1 chunk each)

Any p: the fold-in.  Let p' be the largest power of two <= p and r = p - p'.
Among ranks 0 .. 2r-1, each even rank 2i is folded into rank 2i+1 by a first
step: it reduces its whole buffer into 2i+1 (all_reduce, reduce_scatter) or
copies its chunk 2i there (all_gather).  The p' active ranks are renumbered
v = 0 .. p'-1 (rank 2v+1 for v < r, rank v+r after) and run the power-of-two
algorithm.  A last step hands the result back: rank 2i+1 copies the full
buffer (all_reduce), the chunks rank 2i lacks (all_gather: all but chunk 2i),
or chunk 2i (reduce_scatter) to rank 2i.

Chunks.  all_reduce cuts the buffer into p' chunks, one per active rank.
reduce_scatter and all_gather keep the p chunks of the buffer model; active
rank v then stands for the ranks it folded in (2v and 2v+1 for v < r, v+r
after) and owns their chunks, so its chunk set is the contiguous range
start(v) .. start(v+1)-1 with start(v) = 2v for v < r, v + r after.

Costs, S the full buffer, one step per latency; "fold" is present only when p' < p:

    all_reduce      2 log2(p') alpha + 2 (p'-1)/p' S/bw  +  fold 2 (alpha + S/bw)
    reduce_scatter  sum over d of (alpha + (d + min(d, r)) S/(p bw))  +  fold (2 alpha + S/bw + S/(p bw))
    all_gather      the same sum  +  fold (2 alpha + S/(p bw) + (p-1) S/(p bw))

(Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication
Operations in MPICH", IJHPCA 2005; R. Rabenseifner, "Optimization of collective
reduction operations", ICCS 2004.)
"""

from __future__ import annotations

from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COPY, REDUCE, Schedule, Transfer, make_steps


def all_reduce(p: int) -> Schedule:
    """Rabenseifner all-reduce: fold, halving reduce-scatter, doubling all-gather, unfold; p' chunks."""
    q, r = _split(p)
    real = _real_ranks(p)
    start = list(range(q + 1))  # active rank v owns chunk v
    everything = tuple(range(q))
    fold = [Transfer(2 * i, 2 * i + 1, everything, REDUCE) for i in range(r)]
    unfold = [Transfer(2 * i + 1, 2 * i, everything, COPY) for i in range(r)]
    steps = [fold, *_halving(q, real, start), *_doubling(q, real, start), unfold]
    return Schedule(Collective.ALL_REDUCE, "halving_doubling", p, q, make_steps(steps))


def reduce_scatter(p: int) -> Schedule:
    """Recursive-halving reduce-scatter over p chunks; folded ranks get their chunk back last."""
    q, r = _split(p)
    everything = tuple(range(p))
    fold = [Transfer(2 * i, 2 * i + 1, everything, REDUCE) for i in range(r)]
    unfold = [Transfer(2 * i + 1, 2 * i, (2 * i,), COPY) for i in range(r)]
    steps = [fold, *_halving(q, _real_ranks(p), _starts(p)), unfold]
    return Schedule(Collective.REDUCE_SCATTER, "recursive_halving", p, p, make_steps(steps))


def all_gather(p: int) -> Schedule:
    """Recursive-doubling all-gather over p chunks; folded ranks hand in their chunk first."""
    q, r = _split(p)
    fold = [Transfer(2 * i, 2 * i + 1, (2 * i,), COPY) for i in range(r)]
    unfold = [Transfer(2 * i + 1, 2 * i, tuple(c for c in range(p) if c != 2 * i), COPY) for i in range(r)]
    steps = [fold, *_doubling(q, _real_ranks(p), _starts(p)), unfold]
    return Schedule(Collective.ALL_GATHER, "recursive_doubling", p, p, make_steps(steps))


def _split(p: int) -> tuple[int, int]:
    """(p', r): the largest power of two <= p and the number of ranks folded in."""
    q = 1 << (p.bit_length() - 1)
    return q, p - q


def _real_ranks(p: int) -> list[int]:
    """Real rank of active rank v: 2v+1 for the r folding pairs, v+r after them."""
    q, r = _split(p)
    return [2 * v + 1 if v < r else v + r for v in range(q)]


def _starts(p: int) -> list[int]:
    """First chunk of active rank v's chunk range (p chunks); start[q] = p closes the last range."""
    q, r = _split(p)
    return [2 * v if v < r else v + r for v in range(q)] + [p]


def _halving(q: int, real: list[int], start: list[int]) -> list[list[Transfer]]:
    """Reduce-scatter among q active ranks: active v ends with chunks start[v] .. start[v+1]-1 reduced."""
    steps = []
    d = q // 2
    while d >= 1:
        step = []
        for v in range(q):
            base = v - v % (2 * d)  # v's current range is active ranks base .. base+2d-1
            give = base + d if v % (2 * d) < d else base  # the half on the partner's side of d
            step.append(Transfer(real[v], real[v ^ d], tuple(range(start[give], start[give + d])), REDUCE))
        steps.append(step)
        d //= 2
    return steps


def _doubling(q: int, real: list[int], start: list[int]) -> list[list[Transfer]]:
    """All-gather among q active ranks, each starting with chunks start[v] .. start[v+1]-1."""
    steps = []
    d = 1
    while d < q:
        step = []
        for v in range(q):
            base = v - v % d  # v holds the chunks of active ranks base .. base+d-1
            step.append(Transfer(real[v], real[v ^ d], tuple(range(start[base], start[base + d])), COPY))
        steps.append(step)
        d *= 2
    return steps
