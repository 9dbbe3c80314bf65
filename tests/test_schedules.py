"""Every registered algorithm computes its collective, in the number of steps its closed form says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.collectives import Collective
from tpsim.collectives.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, build
from tpsim.collectives.schedule import COLLECTIVES, COPY, REDUCE, ROOTED
from tpsim.errors import AlgorithmError, RootError, WorldSizeError

PAIRS = [(c, a) for c, names in ALGORITHMS.items() for a in names]
pairs = st.sampled_from(PAIRS)
world_sizes = st.integers(1, 64)


def expected_steps(collective: str, algorithm: str, p: int) -> int:
    """The closed-form step count of each algorithm."""
    log2_floor, log2_ceil = p.bit_length() - 1, (p - 1).bit_length()
    fold = 2 if p & (p - 1) else 0  # one step in and one step out when p is not a power of two
    if algorithm == "ring":
        return 2 * (p - 1) if collective == Collective.ALL_REDUCE else p - 1
    if algorithm == "halving_doubling":
        return 2 * log2_floor + fold
    if algorithm in ("recursive_halving", "recursive_doubling"):
        return log2_floor + fold
    if algorithm == "tree":
        return 2 * log2_ceil if collective == Collective.ALL_REDUCE else log2_ceil
    if algorithm == "pairwise":
        return p  # the local copy step, then p-1 exchanges
    assert algorithm == "direct"
    return 1 if p > 1 or collective == Collective.ALL_TO_ALL else 0


def chunk_sends(schedule, rank: int) -> int:
    """Chunks `rank` sends over links (local copies excluded)."""
    return sum(len(t.chunks) for step in schedule for t in step if t.src == rank and t.dst != rank)


def test_registry():
    assert tuple(ALGORITHMS) == COLLECTIVES
    assert ALGORITHMS[Collective.ALL_REDUCE] == ("ring", "halving_doubling", "tree", "direct")
    assert ALGORITHMS[Collective.REDUCE_SCATTER] == ("ring", "recursive_halving", "direct")
    assert ALGORITHMS[Collective.ALL_GATHER] == ("ring", "recursive_doubling", "direct")
    assert ALGORITHMS[Collective.BROADCAST] == ALGORITHMS[Collective.REDUCE] == ("tree", "direct")
    assert ALGORITHMS[Collective.SCATTER] == ALGORITHMS[Collective.GATHER] == ("direct", "tree")
    assert ALGORITHMS[Collective.ALL_TO_ALL] == ("pairwise", "direct")
    assert {c: names[0] for c, names in ALGORITHMS.items()} == DEFAULT_ALGORITHM


@pytest.mark.parametrize("p", range(1, 17))
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_schedule_computes_its_collective(collective, algorithm, p):
    for root in range(p) if collective in ROOTED else [None]:
        schedule = build(collective, algorithm, p, root)
        assert (schedule.collective, schedule.algorithm, schedule.world_size, schedule.root) == (
            collective,
            algorithm,
            p,
            root,
        )
        schedule.verify()


@given(pair=pairs, p=world_sizes, data=st.data())
def test_step_count_is_the_closed_form(pair, p, data):
    collective, algorithm = pair
    root = data.draw(st.integers(0, p - 1)) if collective in ROOTED else None
    schedule = build(collective, algorithm, p, root)
    assert len(schedule) == expected_steps(collective, algorithm, p)
    assert all(len(step) > 0 for step in schedule)


@given(p=world_sizes)
def test_ring_all_reduce_every_rank_sends_2_p_minus_1_chunks_to_its_right(p):
    schedule = build(Collective.ALL_REDUCE, "ring", p)
    assert schedule.num_chunks == p
    assert [chunk_sends(schedule, r) for r in range(p)] == [2 * (p - 1)] * p
    for step in schedule:
        assert step.dst == tuple((r + 1) % p for r in step.src)


@given(p=world_sizes)
def test_pairwise_every_step_is_a_permutation(p):
    schedule = build(Collective.ALL_TO_ALL, "pairwise", p)
    local, *rounds = schedule.steps
    assert all(t.src == t.dst for t in local)
    for step in rounds:
        assert sorted(step.src) == sorted(step.dst) == list(range(p))


@given(p=world_sizes)
def test_halving_doubling_all_reduce_uses_one_chunk_per_active_rank(p):
    assert build(Collective.ALL_REDUCE, "halving_doubling", p).num_chunks == 1 << (p.bit_length() - 1)


def test_ring_all_reduce_at_1024_ranks():
    p = 1024
    schedule = build(Collective.ALL_REDUCE, "ring", p)
    assert (len(schedule), schedule.num_chunks, schedule.num_transfers) == (2 * (p - 1), p, 2 * (p - 1) * p)
    steps = schedule.steps
    for r in (0, 1, 511, 1023):
        # reduce-scatter step s: r sends chunk (r-s-1) mod p; all-gather step s: chunk (r-s) mod p
        assert tuple(steps[0])[r] == ((r, (r + 1) % p, ((r - 1) % p,), REDUCE, ((r - 1) % p,)))
        assert tuple(steps[p - 2])[r][2:4] == (((r + 1) % p,), REDUCE)
        assert tuple(steps[p - 1])[r][2:4] == ((r,), COPY)
        assert tuple(steps[-1])[r][2:4] == (((r + 2) % p,), COPY)


def test_build_is_memoised_and_defaults():
    assert build(Collective.ALL_REDUCE, "ring", 8) is build(Collective.ALL_REDUCE, "ring", 8)
    assert build(Collective.ALL_REDUCE, world_size=8) is build(Collective.ALL_REDUCE, "ring", 8)
    assert build(Collective.SCATTER, world_size=4, root=2).algorithm == "direct"


def test_non_rooted_collectives_have_no_root():
    assert build(Collective.ALL_REDUCE, "ring", 4, root=2).root is None


def test_one_rank_needs_no_steps_except_all_to_all_local_copy():
    for collective, algorithm in PAIRS:
        schedule = build(collective, algorithm, 1, 0 if collective in ROOTED else None)
        assert len(schedule) == (1 if collective == Collective.ALL_TO_ALL else 0)


def test_unknown_collective():
    with pytest.raises(AlgorithmError, match=r"'allreduce'.*all_reduce, reduce, reduce_scatter"):
        build("allreduce", world_size=4)


@pytest.mark.parametrize(
    "collective, algorithm, valid",
    [
        (Collective.ALL_REDUCE, "rng", "ring, halving_doubling, tree, direct"),
        (Collective.ALL_GATHER, "recursive_halving", "ring, recursive_doubling, direct"),
        (Collective.BROADCAST, "ring", "tree, direct"),
    ],
)
def test_unknown_algorithm(collective, algorithm, valid):
    with pytest.raises(AlgorithmError, match=f"'{algorithm}'.*{collective}.*{valid}"):
        build(collective, algorithm, 4)


@pytest.mark.parametrize("world_size", [0, -3, 2.5, True, "4", None])
def test_bad_world_size(world_size):
    with pytest.raises(WorldSizeError, match="world_size"):
        build(Collective.ALL_REDUCE, "ring", world_size)
    if world_size is not None:
        with pytest.raises(WorldSizeError, match=f"got {world_size!r}"):
            build(Collective.ALL_REDUCE, "ring", world_size)


@pytest.mark.parametrize("collective", sorted(ROOTED))
@pytest.mark.parametrize("root", [-1, 4, 9, None, 1.5])
def test_bad_root(collective, root):
    with pytest.raises(RootError, match=rf"{collective}.*0\.\.3.*got {root!r}"):
        build(collective, world_size=4, root=root)


def test_names_are_checked_before_sizes():
    with pytest.raises(AlgorithmError, match="'nope'"):
        build(Collective.ALL_REDUCE, "nope", -1)
