"""The closed-form costs: hand-computed cases, p = 1, and agreement with the schedules they describe."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.collectives import Collective
from tpsim.collectives.algorithms import ALGORITHMS, build
from tpsim.collectives.costs import COSTS, bus_bandwidth_factor, bytes_sent_per_rank, cost
from tpsim.collectives.schedule import ROOTED
from tpsim.errors import AlgorithmError, ShapeError, TopologyError, WorldSizeError

PAIRS = [(c, a) for c, names in ALGORITHMS.items() for a in names]
SYMMETRIC = [
    (Collective.ALL_REDUCE, "ring"),
    (Collective.REDUCE_SCATTER, "ring"),
    (Collective.ALL_GATHER, "ring"),
    (Collective.ALL_REDUCE, "direct"),
    (Collective.REDUCE_SCATTER, "direct"),
    (Collective.ALL_GATHER, "direct"),
    (Collective.ALL_TO_ALL, "direct"),
    (Collective.ALL_TO_ALL, "pairwise"),
]
ALPHA, BW, S = 2.0, 4.0, 48.0  # S/p is exact for p = 3, 4, 6


def chunk_bytes(schedule, nbytes: float) -> float:
    """Bytes per chunk: S is one rank's input, so p chunks for all_to_all (p more are output slots)."""
    return nbytes / (
        schedule.world_size if schedule.collective == Collective.ALL_TO_ALL else schedule.num_chunks
    )


def schedule_cost(schedule, nbytes: float, alpha: float, bandwidth: float) -> float:
    """The cost model step by step: alpha + largest transfer / bandwidth; local-only steps are free."""
    chunk = chunk_bytes(schedule, nbytes)
    total = 0.0
    for step in schedule:
        sizes = [len(t.chunks) for t in step if t.src != t.dst]
        if sizes:
            total += alpha + max(sizes) * chunk / bandwidth
    return total


def sent_by(schedule, rank: int, nbytes: float) -> float:
    chunk = chunk_bytes(schedule, nbytes)
    return sum(len(t.chunks) * chunk for step in schedule for t in step if t.src == rank != t.dst)


def test_every_registered_algorithm_has_a_cost():
    assert set(COSTS) == set(PAIRS)


@pytest.mark.parametrize(
    "collective, algorithm, p, seconds",
    [
        (Collective.ALL_REDUCE, "ring", 4, 2 * 3 * (2 + 3)),  # 2(p-1) steps of alpha + S/p/bw = 2 + 3
        (Collective.ALL_REDUCE, "halving_doubling", 4, 2 * 2 * 2 + 2 * 3 / 4 * 12),
        (
            Collective.ALL_REDUCE,
            "halving_doubling",
            6,
            2 * 2 * 2 + 2 * 3 / 4 * 12 + 2 * (2 + 12),
        ),  # p' = 4, folded
        (Collective.ALL_REDUCE, "tree", 6, 2 * 3 * (2 + 12)),
        (Collective.ALL_REDUCE, "direct", 6, 2 + 12),
        (Collective.REDUCE_SCATTER, "ring", 4, 3 * (2 + 3)),
        (Collective.REDUCE_SCATTER, "recursive_halving", 4, 2 * 2 + 3 / 4 * 12),
        (Collective.REDUCE_SCATTER, "recursive_halving", 6, (2 + 2 * 2) + (2 + 4 * 2) + (2 + 12) + (2 + 2)),
        (Collective.ALL_GATHER, "recursive_doubling", 6, (2 + 2 * 2) + (2 + 4 * 2) + (2 + 2) + (2 + 5 * 2)),
        (Collective.ALL_GATHER, "direct", 4, 2 + 3),
        (Collective.BROADCAST, "tree", 5, 3 * (2 + 12)),
        (Collective.SCATTER, "tree", 6, 3 * 2 + 5 / 6 * 12),
        (Collective.GATHER, "direct", 3, 2 + 4),
        (Collective.ALL_TO_ALL, "pairwise", 4, 3 * (2 + 3)),
        (Collective.ALL_TO_ALL, "direct", 4, 2 + 3),
    ],
)
def test_hand_computed(collective, algorithm, p, seconds):
    assert cost(collective, algorithm, p, S, ALPHA, BW) == pytest.approx(seconds)


def test_ring_all_reduce_textbook_form():
    p, nbytes, alpha, bw = 8, 1 << 30, 5e-6, 100e9
    expected = 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / bw
    assert cost(Collective.ALL_REDUCE, "ring", p, nbytes, alpha, bw) == pytest.approx(expected)


@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_one_rank_costs_nothing(collective, algorithm):
    assert cost(collective, algorithm, 1, S, ALPHA, BW) == 0.0


@pytest.mark.parametrize("collective, algorithm", PAIRS)
@given(
    p=st.integers(1, 40),
    nbytes=st.floats(1, 1e9),
    alpha=st.floats(0, 1e-3),
    bandwidth=st.floats(1e6, 1e12),
)
def test_closed_form_matches_the_schedule(collective, algorithm, p, nbytes, alpha, bandwidth):
    schedule = build(collective, algorithm, p, p - 1 if collective in ROOTED else None)
    expected = schedule_cost(schedule, nbytes, alpha, bandwidth)
    assert cost(collective, algorithm, p, nbytes, alpha, bandwidth) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("p", range(1, 33))
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_closed_form_matches_the_schedule_on_integers(collective, algorithm, p):
    schedule = build(collective, algorithm, p, 0 if collective in ROOTED else None)
    nbytes = 1 << 20  # bytes terms dominate alpha = 1 s at bandwidth 1 B/s
    assert cost(collective, algorithm, p, nbytes, 1.0, 1.0) == pytest.approx(
        schedule_cost(schedule, nbytes, 1.0, 1.0)
    )


@pytest.mark.parametrize("p", range(1, 17))
@pytest.mark.parametrize("collective, algorithm", SYMMETRIC)
def test_bytes_sent_per_rank_matches_the_schedule(collective, algorithm, p):
    schedule = build(collective, algorithm, p)
    per_rank = bytes_sent_per_rank(collective, algorithm, p, S)
    assert [sent_by(schedule, r, S) for r in range(p)] == pytest.approx([per_rank] * p)


def test_bytes_sent_per_rank_closed_forms():
    assert bytes_sent_per_rank(Collective.ALL_REDUCE, "ring", 4, S) == 2 * 3 / 4 * S
    assert bytes_sent_per_rank(Collective.ALL_GATHER, "ring", 4, S) == 3 / 4 * S
    assert bytes_sent_per_rank(Collective.ALL_REDUCE, "direct", 4, S) == 3 * S
    assert bytes_sent_per_rank(Collective.ALL_REDUCE, None, 1, S) == 0.0


def test_bus_bandwidth_factor():
    factors = {c: bus_bandwidth_factor(c, 8) for c in ALGORITHMS}
    assert factors == {
        Collective.ALL_REDUCE: 1.75,
        Collective.REDUCE: 1.0,
        Collective.REDUCE_SCATTER: 0.875,
        Collective.ALL_GATHER: 0.875,
        Collective.BROADCAST: 1.0,
        Collective.SCATTER: 0.875,
        Collective.GATHER: 0.875,
        Collective.ALL_TO_ALL: 0.875,
    }
    assert bus_bandwidth_factor(Collective.ALL_REDUCE, 1) == 0.0


def test_bad_inputs():
    with pytest.raises(AlgorithmError, match="'rng'"):
        cost(Collective.ALL_REDUCE, "rng", 4, S, ALPHA, BW)
    with pytest.raises(AlgorithmError, match="'allreduce'"):
        bus_bandwidth_factor("allreduce", 4)
    with pytest.raises(WorldSizeError, match="got 0"):
        cost(Collective.ALL_REDUCE, "ring", 0, S, ALPHA, BW)
    with pytest.raises(ShapeError, match="got -1"):
        cost(Collective.ALL_REDUCE, "ring", 4, -1, ALPHA, BW)
    with pytest.raises(TopologyError, match="bandwidth=0"):
        cost(Collective.ALL_REDUCE, "ring", 4, S, ALPHA, 0)
    with pytest.raises(AlgorithmError, match="tree broadcast"):
        bytes_sent_per_rank(Collective.BROADCAST, "tree", 4, S)
