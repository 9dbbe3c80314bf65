"""Closed-form alpha-beta costs of every schedule in the registry, in pure Python.

The model: a uniform, fully connected topology.  Every ordered pair of devices
has its own link with latency `alpha` (seconds) and `bandwidth` (bytes/s), so
concurrent transfers on different links do not interfere, and a rank sending to
several peers in one step uses several links.  A step lasts

    alpha + (largest number of bytes one transfer of the step moves) / bandwidth

and a step made only of local copies (src == dst) costs nothing.  A schedule
costs the sum of its steps.  `nbytes` (S below) is the full buffer of one rank:
the full output for all_gather, the full input for reduce_scatter and for one
rank's all_to_all.  S is assumed to divide as the algorithm needs (into p chunks,
or p' for halving_doubling); p = 1 always costs 0.

References: R. Thakur, R. Rabenseifner and W. Gropp, "Optimization of Collective
Communication Operations in MPICH", IJHPCA 19(1), 2005 (tree, recursive halving
and doubling, Rabenseifner's all-reduce, pairwise all-to-all); P. Patarasuk and
X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of workstations",
JPDC 69(2), 2009 (the ring).  The tests check every formula against the
schedules themselves, step by step.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from tpsim.collectives.algorithms import check_algorithm
from tpsim.collectives.kinds import Collective
from tpsim.errors import AlgorithmError, ShapeError, TopologyError, WorldSizeError


def _log2_floor(p: int) -> int:
    return p.bit_length() - 1


def _log2_ceil(p: int) -> int:
    return (p - 1).bit_length()


def ring_all_reduce(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """2(p-1) steps of one S/p chunk: 2(p-1) alpha + 2(p-1)/p * S/bw."""
    return 2 * (p - 1) * (alpha + nbytes / p / bandwidth)


def ring_reduce_scatter(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """p-1 steps of one S/p chunk: (p-1) alpha + (p-1)/p * S/bw.  Also the ring all_gather."""
    return (p - 1) * (alpha + nbytes / p / bandwidth)


ring_all_gather = ring_reduce_scatter


def halving_doubling_all_reduce(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """2 log2(p') alpha + 2(p'-1)/p' * S/bw, plus 2(alpha + S/bw) for the fold steps when p' < p."""
    q = 1 << _log2_floor(p)
    fold = 2 * (alpha + nbytes / bandwidth) if q < p else 0.0
    return 2 * _log2_floor(p) * alpha + 2 * (q - 1) / q * nbytes / bandwidth + fold


def _halving_or_doubling(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """The power-of-two part over p chunks: at distance d a transfer carries at most d + min(d, r) chunks.

    Active rank v < r stands for two ranks and owns two chunks, so the aligned block of d
    active ranks at the front holds d + min(d, r) chunks.  For p a power of two (r = 0)
    this sums to log2(p) alpha + (p-1)/p * S/bw.
    """
    k = _log2_floor(p)
    r = p - (1 << k)
    return sum(alpha + ((1 << i) + min(1 << i, r)) * nbytes / p / bandwidth for i in range(k))


def recursive_halving_reduce_scatter(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """Halving part, plus (alpha + S/bw) to fold in (whole buffer) and (alpha + S/(p bw)) to hand back."""
    fold = 2 * alpha + nbytes / bandwidth + nbytes / p / bandwidth if p & (p - 1) else 0.0
    return _halving_or_doubling(p, nbytes, alpha, bandwidth) + fold


def recursive_doubling_all_gather(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """Doubling part, plus (alpha + S/(p bw)) to fold in one chunk and (alpha + (p-1)/p S/bw) to hand back."""
    fold = 2 * alpha + nbytes / p / bandwidth + (p - 1) * nbytes / p / bandwidth if p & (p - 1) else 0.0
    return _halving_or_doubling(p, nbytes, alpha, bandwidth) + fold


def tree_all_reduce(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """Binomial reduce then broadcast of the whole buffer: 2 ceil(log2 p) (alpha + S/bw)."""
    return 2 * _log2_ceil(p) * (alpha + nbytes / bandwidth)


def tree_broadcast(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """Binomial tree, whole buffer per step: ceil(log2 p) (alpha + S/bw).  Also the tree reduce."""
    return _log2_ceil(p) * (alpha + nbytes / bandwidth)


tree_reduce = tree_broadcast


def tree_scatter(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """ceil(log2 p) alpha + (p-1)/p * S/bw: the root's sends carry p - 2^(L-1), then 2^(L-2), ..., 1 chunks.

    Also the tree gather (the same sends, reversed).
    """
    return _log2_ceil(p) * alpha + (p - 1) / p * nbytes / bandwidth


tree_gather = tree_scatter


def direct_full(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """One step moving the whole buffer on each link: alpha + S/bw (all_reduce, broadcast, reduce)."""
    return alpha + nbytes / bandwidth if p > 1 else 0.0


def direct_chunk(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """One step moving one S/p chunk on each link: alpha + S/(p bw) (all_gather, reduce_scatter,
    scatter, gather, all_to_all)."""
    return alpha + nbytes / p / bandwidth if p > 1 else 0.0


def pairwise_all_to_all(p: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """A free local step, then p-1 steps of one S/p chunk: (p-1) alpha + (p-1)/p * S/bw."""
    return (p - 1) * (alpha + nbytes / p / bandwidth)


CostFunction = Callable[[int, float, float, float], float]

COSTS: dict[tuple[str, str], CostFunction] = {
    (Collective.ALL_REDUCE, "ring"): ring_all_reduce,
    (Collective.ALL_REDUCE, "halving_doubling"): halving_doubling_all_reduce,
    (Collective.ALL_REDUCE, "tree"): tree_all_reduce,
    (Collective.ALL_REDUCE, "direct"): direct_full,
    (Collective.REDUCE_SCATTER, "ring"): ring_reduce_scatter,
    (Collective.REDUCE_SCATTER, "recursive_halving"): recursive_halving_reduce_scatter,
    (Collective.REDUCE_SCATTER, "direct"): direct_chunk,
    (Collective.ALL_GATHER, "ring"): ring_all_gather,
    (Collective.ALL_GATHER, "recursive_doubling"): recursive_doubling_all_gather,
    (Collective.ALL_GATHER, "direct"): direct_chunk,
    (Collective.BROADCAST, "tree"): tree_broadcast,
    (Collective.BROADCAST, "direct"): direct_full,
    (Collective.REDUCE, "tree"): tree_reduce,
    (Collective.REDUCE, "direct"): direct_full,
    (Collective.SCATTER, "direct"): direct_chunk,
    (Collective.SCATTER, "tree"): tree_scatter,
    (Collective.GATHER, "direct"): direct_chunk,
    (Collective.GATHER, "tree"): tree_gather,
    (Collective.ALL_TO_ALL, "pairwise"): pairwise_all_to_all,
    (Collective.ALL_TO_ALL, "direct"): direct_chunk,
}

# Bytes every rank sends, as a multiple of S, for the algorithms where all ranks send the same.
_SENT_FRACTION: dict[tuple[str, str], Callable[[int], float]] = {
    (Collective.ALL_REDUCE, "ring"): lambda p: 2 * (p - 1) / p,
    (Collective.REDUCE_SCATTER, "ring"): lambda p: (p - 1) / p,
    (Collective.ALL_GATHER, "ring"): lambda p: (p - 1) / p,
    (Collective.ALL_REDUCE, "direct"): lambda p: p - 1,  # the whole buffer to each of p-1 peers
    (Collective.REDUCE_SCATTER, "direct"): lambda p: (p - 1) / p,
    (Collective.ALL_GATHER, "direct"): lambda p: (p - 1) / p,
    (Collective.ALL_TO_ALL, "direct"): lambda p: (p - 1) / p,
    (Collective.ALL_TO_ALL, "pairwise"): lambda p: (p - 1) / p,
}

_BUS_FACTOR: dict[str, Callable[[int], float]] = {
    Collective.ALL_REDUCE: lambda p: 2 * (p - 1) / p,
    Collective.REDUCE_SCATTER: lambda p: (p - 1) / p,
    Collective.ALL_GATHER: lambda p: (p - 1) / p,
    Collective.ALL_TO_ALL: lambda p: (p - 1) / p,
    Collective.BROADCAST: lambda p: 1.0,
    Collective.REDUCE: lambda p: 1.0,
    Collective.SCATTER: lambda p: (p - 1) / p,
    Collective.GATHER: lambda p: (p - 1) / p,
}


def cost(
    collective: str, algorithm: str | None, p: int, nbytes: float, alpha: float, bandwidth: float
) -> float:
    """Seconds `algorithm` (None: the default) takes for `collective` on p ranks with S = nbytes."""
    algorithm = check_algorithm(collective, algorithm)
    p = _check(collective, p, nbytes)
    if alpha < 0 or not bandwidth > 0:
        raise TopologyError(
            f"need alpha >= 0 and bandwidth > 0, got alpha={alpha!r}, bandwidth={bandwidth!r}"
        )
    return COSTS[collective, algorithm](p, nbytes, alpha, bandwidth)


def bytes_sent_per_rank(collective: str, algorithm: str | None, p: int, nbytes: float) -> float:
    """Bytes each rank sends (local copies excluded), for the ring, direct and pairwise algorithms
    of the symmetric collectives, e.g. ring all_reduce 2(p-1)/p S, ring all_gather (p-1)/p S."""
    algorithm = check_algorithm(collective, algorithm)
    p = _check(collective, p, nbytes)
    if (collective, algorithm) not in _SENT_FRACTION:
        valid = ", ".join(f"{c}/{a}" for c, a in _SENT_FRACTION)
        raise AlgorithmError(
            f"{algorithm} {collective}: ranks send different amounts, so there is no one number "
            f"per rank; count them on the schedule. Closed forms exist for: {valid}"
        )
    return _SENT_FRACTION[collective, algorithm](p) * nbytes


def wire_size(collective: str, p: int, rows: list[int], row_bytes: int) -> int:
    """The S that gloo and NCCL move for pieces of `rows` dim-0 rows of `row_bytes` each (all_gather:
    each rank's rows; the others: every rank's buffer rows, equal): uneven pieces go padded to the
    longest (layout.PADDED).

    all_gather / gather: p * max(rows) rows; reduce_scatter / scatter: p * ceil(n / p) rows; else n.
    Bytes sent are then bytes_sent_per_rank(collective, algorithm, p, wire_size(...)) where the closed
    form holds; with `padded=False` the same form takes the unpadded size.
    """
    p = _check(collective, p, 0)
    if collective in (Collective.ALL_GATHER, Collective.GATHER):
        return p * max(rows, default=0) * row_bytes
    if collective in (Collective.REDUCE_SCATTER, Collective.SCATTER):
        return p * -(-rows[0] // p) * row_bytes
    return rows[0] * row_bytes


def bus_bandwidth_factor(collective: str, p: int) -> float:
    """nccl-tests' busbw / algbw: 2(p-1)/p for all_reduce, (p-1)/p for all_gather, reduce_scatter,
    all_to_all, scatter and gather, 1 for broadcast and reduce."""
    check_algorithm(collective)
    p = _check(collective, p, 0)
    return _BUS_FACTOR[collective](p)


def _check(collective: str, p: int, nbytes: float) -> int:
    """Validate p and nbytes; return p as a plain int."""
    try:
        n = operator.index(p) if not isinstance(p, bool) else 0
    except TypeError:
        n = 0
    if n < 1:
        raise WorldSizeError(f"{collective}: world size p must be an int >= 1, got {p!r}")
    if nbytes < 0:
        raise ShapeError(f"{collective}: nbytes must be >= 0, got {nbytes!r}")
    return n
