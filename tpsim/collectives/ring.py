"""Ring algorithms: every rank talks only to its right neighbour (r -> r+1 mod p).

The buffer is cut into p chunks.  The reduce-scatter phase runs p-1 steps; in
step s rank r sends chunk (r-s-1) mod p to r+1, which reduces it into its own
copy, so after the phase rank j holds chunk j summed over all ranks.  The
all-gather phase runs p-1 steps; in step s rank r copies chunk (r-s) mod p to
r+1, so every fully reduced (or, for all_gather, original) chunk travels round
the ring once.  This is NCCL's ring (Patarasuk & Yuan, "Bandwidth optimal
all-reduce algorithms for clusters of workstations", JPDC 2009).

Cost for a buffer of S bytes, link latency alpha and bandwidth bw:

    all_reduce      2(p-1) alpha + 2(p-1)/p * S/bw      (bandwidth optimal)
    reduce_scatter   (p-1) alpha +  (p-1)/p * S/bw
    all_gather       (p-1) alpha +  (p-1)/p * S/bw

Steps are built straight in columnar form: the src, dst and ops columns are
shared by every step, and each step's chunk column is a slice of a doubled
table of 1-tuples, so a p = 1024 all_reduce (2 million transfers) builds in a
few milliseconds instead of going through 2 million `Transfer` objects.
"""

from __future__ import annotations

from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COPY, REDUCE, Schedule, Step


def all_reduce(p: int) -> Schedule:
    """Ring all-reduce: reduce-scatter then all-gather, 2(p-1) steps, p chunks."""
    return Schedule(Collective.ALL_REDUCE, "ring", p, p, _reduce_scatter_steps(p) + _all_gather_steps(p))


def reduce_scatter(p: int) -> Schedule:
    """Ring reduce-scatter: p-1 steps; rank j ends with chunk j reduced."""
    return Schedule(Collective.REDUCE_SCATTER, "ring", p, p, _reduce_scatter_steps(p))


def all_gather(p: int) -> Schedule:
    """Ring all-gather: p-1 steps; chunk j starts on rank j and goes once round the ring."""
    return Schedule(Collective.ALL_GATHER, "ring", p, p, _all_gather_steps(p))


def _reduce_scatter_steps(p: int) -> tuple[Step, ...]:
    # step s: rank r sends chunk (r-s-1) mod p, i.e. the column starts at chunk (p-s-1)
    return _rotating_steps(p, REDUCE, [p - s - 1 for s in range(p - 1)])


def _all_gather_steps(p: int) -> tuple[Step, ...]:
    # step s: rank r sends chunk (r-s) mod p, i.e. the column starts at chunk (p-s) mod p
    return _rotating_steps(p, COPY, [(p - s) % p for s in range(p - 1)])


def _rotating_steps(p: int, op: str, starts: list[int]) -> tuple[Step, ...]:
    """One step per start: rank r sends chunk (start + r) mod p to r+1 with `op`."""
    src = tuple(range(p))
    dst = src[1:] + src[:1]  # (1, 2, ..., p-1, 0)
    ops = (op,) * p
    ones = tuple((c,) for c in range(p)) * 2  # doubled so that any rotation is one slice
    steps = []
    for start in starts:
        chunks = ones[start : start + p]  # (p,) 1-tuples, shared with dst_chunks
        steps.append(Step(src, dst, chunks, ops, chunks))
    return tuple(steps)
