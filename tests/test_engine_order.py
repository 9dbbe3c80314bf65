"""The engine runs a schedule as schedule.py defines it, checked bit for bit against a naive interpreter.

The interpreter below is the definition, written as plainly as possible: every rank holds a list of chunks;
in each step every transfer reads its source before any transfer writes; a copy overwrites; the reductions
into one chunk combine in ascending rank order, the receiver's own value standing at its rank, in the
buffer's dtype.  Buffers are 1-d here, so chunks are runs of elements (torch.chunk rule).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal

import tpsim
from tpsim import Mesh
from tpsim.collectives import Collective, engine
from tpsim.collectives.algorithms import ALGORITHMS, build

PAIRS = [(c, a) for c, names in ALGORITHMS.items() for a in names]
REDUCING = (Collective.ALL_REDUCE, Collective.REDUCE, Collective.REDUCE_SCATTER)
ROOTED = (Collective.REDUCE, Collective.BROADCAST, Collective.SCATTER, Collective.GATHER)
UFUNCS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}


def pieces(a: np.ndarray, k: int) -> list[np.ndarray]:
    """The torch.chunk rule: pieces of ceil(n / k) elements, the last ones shorter or empty."""
    step = -(-len(a) // k)
    return [a[i * step : (i + 1) * step] for i in range(k)]


def initial_chunks(schedule, x: list[np.ndarray]) -> list[list]:
    """The buffer model of schedule.py: what each rank's chunks hold before the first step (None: nothing)."""
    p, k, root = schedule.world_size, schedule.num_chunks, schedule.root
    if schedule.collective in REDUCING:
        return [pieces(x[r], k) for r in range(p)]
    if schedule.collective in (Collective.ALL_GATHER, Collective.GATHER):
        return [[x[r] if c == r else None for c in range(k)] for r in range(p)]
    if schedule.collective in (Collective.BROADCAST, Collective.SCATTER):
        return [pieces(x[root], k) if r == root else [None] * k for r in range(p)]
    return [pieces(x[r], p) + [None] * p for r in range(p)]  # all_to_all


def interpret(schedule, chunks: list[list], op: str = "sum") -> list[list]:
    ufunc = UFUNCS[op]
    for step in schedule:
        sent = [(t, [chunks[t.src][c] for c in t.chunks]) for t in step]  # every read before any write
        reductions: dict[tuple[int, int], list] = {}
        for t, values in sent:
            for target, value in zip(t.targets, values, strict=True):
                if t.op == "copy":
                    chunks[t.dst][target] = value
                else:
                    reductions.setdefault((t.dst, target), []).append((t.src, value))
        for (dst, target), incoming in reductions.items():
            terms = sorted([(dst, chunks[dst][target]), *incoming], key=lambda term: term[0])
            total = terms[0][1]
            for _, value in terms[1:]:
                total = ufunc(total, value)
            chunks[dst][target] = total
    return chunks


def results_of(schedule, chunks: list[list]) -> list:
    """Each rank's result: its result chunks joined (None where the collective leaves it undefined)."""
    return [np.concatenate([chunks[r][c] for c in ids]) if (ids := schedule.result_chunks(r)) else None
            for r in range(schedule.world_size)]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def assert_same_bits(got: list, want: list) -> None:
    for rank, (a, b) in enumerate(zip(got, want, strict=True)):
        assert (a is None) == (b is None), f"rank {rank}"
        if b is not None:
            assert_array_equal(bits(a), bits(b), err_msg=f"rank {rank}")


def call(schedule, x: list, mesh: Mesh, op: str = "sum") -> list:
    kw = {"algorithm": schedule.algorithm}
    kw |= {"op": op} if schedule.collective in REDUCING else {}
    kw |= {"root": schedule.root} if schedule.collective in ROOTED else {}
    return getattr(tpsim, schedule.collective)(x, mesh, **kw)


def random_floats(dtype, n: int):
    """Random floats in `dtype`, signed zeros included: max and min show the order of their operands."""
    return hnp.arrays(np.float32, n, elements=st.floats(-2, 2, width=32)).map(lambda a: a.astype(dtype))


@pytest.mark.parametrize("p", range(1, 10))
@pytest.mark.parametrize("collective, algorithm", PAIRS)
@settings(max_examples=4)
@given(dtype=st.sampled_from([np.float32, np.float16, tpsim.bfloat16]), op=st.sampled_from(list(UFUNCS)),
       data=st.data())
def test_engine_matches_the_naive_interpreter_bitwise(collective, algorithm, p, dtype, op, data):
    """Random floats, every collective and algorithm, p = 1..9, any root, lengths below, at and above p."""
    schedule = build(collective, algorithm, p, data.draw(st.integers(0, p - 1)))
    if collective in (Collective.ALL_GATHER, Collective.GATHER):  # rank j's buffer is chunk j, of any length
        lengths = data.draw(st.lists(st.integers(0, 5), min_size=p, max_size=p))
    else:
        lengths = [data.draw(st.integers(0, 3 * p + 2))] * p
    x = [data.draw(random_floats(dtype, n)) for n in lengths]
    want = results_of(schedule, interpret(schedule, initial_chunks(schedule, x), op))
    assert_same_bits([None if a is None else a.reshape(-1) for a in call(schedule, x, Mesh(p), op)], want)


@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_big_chunks_take_the_in_place_path_with_the_same_bits(collective, algorithm, p, op):
    """Chunks over engine.BIG_CHUNK_BYTES (1 MiB) move one transfer at a time, in place."""
    schedule = build(collective, algorithm, p, p - 1)
    chunk = 270_001  # float32 elements in the longest chunk
    assert chunk * 4 >= engine.BIG_CHUNK_BYTES
    if collective in (Collective.ALL_GATHER, Collective.GATHER):  # each buffer is one chunk
        n = chunk
    else:  # the buffer is cut into num_chunks (all_to_all: p) pieces of ceil(n / pieces) = chunk
        n = (chunk - 1) * (p if collective == Collective.ALL_TO_ALL else schedule.num_chunks) + 1
    rng = np.random.default_rng(p)
    x = [rng.standard_normal(n, dtype=np.float32) * (rng.random(n) < 0.5) for _ in range(p)]  # half ±0.0
    want = results_of(schedule, interpret(schedule, initial_chunks(schedule, x), op))
    assert_same_bits(call(schedule, x, Mesh(p), op), want)


def test_one_reduction_into_a_chunk_follows_the_rank_order_too():
    """np.maximum(-0.0, 0.0) and np.maximum(0.0, -0.0) differ in sign, so the order of the operands shows.

    direct all_reduce (p=2) and direct reduce to rank 1 make rank 1 compute the very same reduction of
    rank 0's chunk into its own, in a step of two transfers and in a step of one: both in rank order."""
    x = [np.array([-0.0, 0.0], np.float32), np.array([0.0, -0.0], np.float32)]
    in_rank_order = np.maximum(x[0], x[1])
    if np.array_equal(bits(in_rank_order), bits(np.maximum(x[1], x[0]))):
        pytest.skip("np.maximum orders signed zeros here, so the operand order does not show")
    all_reduced = tpsim.all_reduce(x, Mesh(2), op="max", algorithm="direct")[1]
    reduced = tpsim.reduce(x, Mesh(2), op="max", algorithm="direct", root=1)[1]
    assert_array_equal(bits(all_reduced), bits(in_rank_order))
    assert_array_equal(bits(reduced), bits(in_rank_order))


def contributors(collective: str, p: int, root: int, chunk: int) -> frozenset:
    """The devices whose data result chunk `chunk` must contain."""
    if collective in REDUCING:
        return frozenset(range(p))
    if collective in (Collective.BROADCAST, Collective.SCATTER):
        return frozenset({root})
    # whose piece landed there
    return frozenset({chunk - p if collective == Collective.ALL_TO_ALL else chunk})


@pytest.mark.parametrize("collective, algorithm", PAIRS)
@settings(max_examples=10)
@given(p=st.integers(1, 9), n=st.integers(0, 20), data=st.data())
def test_stepwise_shows_every_step_from_the_start_to_the_results(collective, algorithm, p, n, data):
    schedule = build(collective, algorithm, p, data.draw(st.integers(0, p - 1)))
    x = [data.draw(random_floats(np.float32, n)) for _ in range(p)]
    kw = {"algorithm": algorithm}
    kw |= {"root": schedule.root} if collective in ROOTED else {}
    snapshots = list(tpsim.stepwise(collective, x, Mesh(p), **kw))
    first, last = snapshots[0], snapshots[-1]
    assert [s.step for s in snapshots] == list(range(len(schedule) + 1))
    assert (first.transfers, first.wire_bytes) == ([], 0)
    for r, chunks in enumerate(initial_chunks(schedule, x)):
        assert first.holds[r] == [None if c is None else frozenset({r}) for c in chunks]
        assert_same_bits([b for b, c in zip(first.buffers[r], chunks, strict=True) if c is not None],
                         [c for c in chunks if c is not None])
    for r in range(p):
        for c in schedule.result_chunks(r):
            assert last.holds[r][c] == contributors(collective, p, schedule.root, c)
    assert_same_bits(results_of(schedule, last.buffers), call(schedule, x, Mesh(p)))
    assert np.all(np.diff([s.wire_bytes for s in snapshots]) >= 0)
    assert np.all(np.diff([s.time for s in snapshots]) >= 0)

    shape_only = list(tpsim.stepwise(collective, [tpsim.meta(n, np.float32)] * p, Mesh(p), **kw))
    assert [s.buffers for s in shape_only] == [None] * len(snapshots)
    assert [s.wire_bytes for s in shape_only] == [s.wire_bytes for s in snapshots]


def test_stepwise_all_reduce_ends_with_every_device_in_every_chunk():
    x = [np.full(10, r, np.float32) for r in range(5)]
    *_, last = tpsim.stepwise(Collective.ALL_REDUCE, x, Mesh(5))
    assert all(chunk == frozenset(range(5)) for holds in last.holds.values() for chunk in holds)
