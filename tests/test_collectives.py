"""Every collective, with every algorithm, computes its plain NumPy definition and moves the bytes it must."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

import tpsim
from tpsim import Mesh, MetaArray
from tpsim.collectives import Collective
from tpsim.collectives.algorithms import ALGORITHMS
from tpsim.collectives.costs import bytes_sent_per_rank, wire_size

PAIRS = [(c, a) for c, names in ALGORITHMS.items() for a in names]
FLOATS = [np.float16, np.float32, np.float64, tpsim.bfloat16]
DTYPES = [*FLOATS, np.int32, np.int64]
REDUCING = (Collective.ALL_REDUCE, Collective.REDUCE, Collective.REDUCE_SCATTER)
ROOTED = (Collective.REDUCE, Collective.BROADCAST, Collective.SCATTER, Collective.GATHER)
GATHERING = (Collective.ALL_GATHER, Collective.GATHER)
REPLICATED = (Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.BROADCAST)
PLAIN = {"sum": np.sum, "avg": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


def pieces(a: np.ndarray, p: int) -> list[np.ndarray]:
    """The torch.chunk rule along dim 0: pieces of ceil(n / p) rows, the last ones shorter or empty."""
    step = -(-len(a) // p)
    return [a[i * step : (i + 1) * step] for i in range(p)]


def definition(collective: str, x: list[np.ndarray], op: str = "sum", root: int = 0) -> list:
    """What each rank must end with, computed plainly (None where the result is undefined).

    Reductions run in float64, exact on small integers, then round once to the buffer's dtype.
    """
    p, everyone = len(x), range(len(x))
    if collective in REDUCING:
        total = PLAIN[op](np.stack(x).astype(np.float64), axis=0).astype(x[0].dtype)
    return {
        Collective.ALL_REDUCE: lambda: [total] * p,
        Collective.REDUCE: lambda: [total if r == root else None for r in everyone],
        Collective.REDUCE_SCATTER: lambda: pieces(total, p),
        Collective.ALL_GATHER: lambda: [np.concatenate(x)] * p,
        Collective.GATHER: lambda: [np.concatenate(x) if r == root else None for r in everyone],
        Collective.BROADCAST: lambda: [x[root]] * p,
        Collective.SCATTER: lambda: pieces(x[root], p),
        Collective.ALL_TO_ALL: lambda: [
            np.concatenate([pieces(x[i], p)[j] for i in everyone]) for j in everyone
        ],
    }[collective]()


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bytes of `a`, so that comparisons are bitwise (-0.0 differs from 0.0)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def assert_bitwise(results: list, expected: list) -> None:
    for rank, (got, want) in enumerate(zip(results, expected, strict=True)):
        if want is None:
            assert got is None, f"rank {rank}"
            continue
        assert (got.shape, got.dtype) == (want.shape, want.dtype), f"rank {rank}"
        assert_array_equal(bits(got), bits(want), err_msg=f"rank {rank}")


def small_ints(dtype, shape, op):
    """Small integers stored in `dtype`: every sum and product of up to 16 of them is exact, in any order."""
    bound = 2 if op == "prod" else 4
    return hnp.arrays(np.int8, shape, elements=st.integers(-bound, bound)).map(lambda a: a.astype(dtype))


def random_floats(dtype, shape, op=None):
    """Random floats whose product over 16 ranks still fits float16."""
    return hnp.arrays(np.float64, shape, elements=st.floats(-1.5, 1.5)).map(lambda a: a.astype(dtype))


@st.composite
def problems(draw, collective, algorithm, dtypes, elements, p=None, groups=1):
    """`groups` lists of p buffers and the call's keywords: any world size, dtype, op and root; lengths below,
    at and above p, uneven, with trailing dims; all_gather and gather lengths differ per rank."""
    p = p or draw(st.integers(1, 16))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    kw = {"algorithm": algorithm}
    if collective in REDUCING:
        floating = dtype in map(np.dtype, FLOATS)
        kw["op"] = draw(st.sampled_from([o for o in PLAIN if floating or o != "avg"]))
    if collective in ROOTED:
        kw["root"] = draw(st.integers(0, p - 1))
    rest = draw(st.sampled_from([(), (), (3,), (2, 2)]))
    rows = st.integers(0, 4) if collective in GATHERING else st.just(draw(st.integers(0, 2 * p + 2)))
    lengths = draw(st.lists(rows, min_size=p, max_size=p))
    x = [[draw(elements(dtype, (n, *rest), kw.get("op"))) for n in lengths] for _ in range(groups)]
    return x, kw


def shapes(results: list) -> list:
    return [None if a is None else (a.shape, a.dtype) for a in results]


def call(collective: str, x: list, mesh: Mesh, kw: dict) -> list:
    return getattr(tpsim, collective)(x, mesh, **kw)


@pytest.mark.parametrize("collective, algorithm", PAIRS)
@given(data=st.data())
def test_exact_data_gives_the_definition_bitwise(collective, algorithm, data):
    """Small integers in any dtype: every result equals the plain definition bit for bit, from every root."""
    (x,), kw = data.draw(problems(collective, algorithm, DTYPES, small_ints))
    for root in range(len(x)) if collective in ROOTED else [0]:
        args = {**kw, "root": root} if collective in ROOTED else kw
        expected = definition(collective, x, kw.get("op", "sum"), root)
        assert_bitwise(call(collective, x, Mesh(len(x)), args), expected)


@pytest.mark.parametrize("collective, algorithm", [(c, a) for c, a in PAIRS if c in REDUCING])
@given(data=st.data())
def test_random_floats_reduce_within_the_summation_error(collective, algorithm, data):
    """|result - definition| <= p eps sum|x|, the bound of any order of p - 1 additions."""
    (x,), kw = data.draw(problems(collective, algorithm, [np.float32, np.float64], random_floats))
    p, eps = len(x), np.finfo(x[0].dtype).eps
    atol = p * eps * np.abs(np.stack(x)).sum(axis=0).max(initial=0)
    expected = definition(collective, x, kw["op"], kw.get("root", 0))
    for got, want in zip(call(collective, x, Mesh(p), kw), expected, strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert_allclose(got, want, rtol=p * eps, atol=atol)


@pytest.mark.parametrize("collective, algorithm", [(c, a) for c, a in PAIRS if c in REPLICATED])
@given(data=st.data())
def test_every_rank_of_a_replicated_result_holds_the_same_bits(collective, algorithm, data):
    (x,), kw = data.draw(problems(collective, algorithm, FLOATS, random_floats))
    results = call(collective, x, Mesh(len(x)), kw)
    for got in results[1:]:
        assert_array_equal(bits(got), bits(results[0]))


SENT = {  # bytes each rank sends over links, as a fraction of S, when the buffer splits evenly over p
    (Collective.ALL_REDUCE, "ring"): lambda p: Fraction(2 * (p - 1), p),
    (Collective.ALL_REDUCE, "direct"): lambda p: Fraction(p - 1),  # the whole buffer to each peer
    (Collective.REDUCE_SCATTER, "ring"): lambda p: Fraction(p - 1, p),
    (Collective.REDUCE_SCATTER, "direct"): lambda p: Fraction(p - 1, p),
    (Collective.ALL_GATHER, "ring"): lambda p: Fraction(p - 1, p),
    (Collective.ALL_GATHER, "direct"): lambda p: Fraction(p - 1, p),
    (Collective.ALL_TO_ALL, "pairwise"): lambda p: Fraction(p - 1, p),
    (Collective.ALL_TO_ALL, "direct"): lambda p: Fraction(p - 1, p),
}


@pytest.mark.parametrize("collective, algorithm", list(SENT))
@given(p=st.integers(1, 16), even=st.booleans(), dtype=st.sampled_from(DTYPES), data=st.data())
def test_bytes_sent_per_rank(collective, algorithm, p, even, dtype, data):
    """Each rank sends fraction(p) * S when the length divides by p; all ranks together send
    p * fraction(p) * S for any length, where S is padded as the backends pad (wire_size) by default,
    and the unpadded size with padded=False.  S is one rank's buffer (all_gather: the output).  Chunks
    follow the torch.chunk rule, pieces of ceil(n / p): unpadded, an uneven length shifts bytes between
    ranks, not the total."""
    m = data.draw(st.integers(0, 12))
    if collective == Collective.ALL_GATHER:  # rank j's buffer is chunk j: evenly means equal lengths
        lengths = [m] * p if even else data.draw(st.lists(st.integers(0, 12), min_size=p, max_size=p))
    else:
        lengths = [m * p if even else data.draw(st.integers(0, 40))] * p
    x = [np.zeros(n, dtype) for n in lengths]
    size = sum(a.nbytes for a in x) if collective == Collective.ALL_GATHER else x[0].nbytes
    padded = wire_size(collective, p, lengths, np.dtype(dtype).itemsize)  # what gloo and NCCL send
    fraction = SENT[collective, algorithm](p)
    for kw, wire in (({}, padded), ({"padded": False}, size)):
        mesh = Mesh(p)
        call(collective, x, mesh, {"algorithm": algorithm, **kw})
        sent = [d["sent"] for d in mesh.trace.per_device()]
        assert mesh.trace.collectives[-1].nbytes == size  # the message size stays the user's
        assert sum(sent) == p * fraction * wire
        if even:
            assert wire == size
            assert sent == [fraction * size] * p
            assert sent[0] == pytest.approx(bytes_sent_per_rank(collective, algorithm, p, size))
        elif collective in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER) and not kw:
            assert sent == [fraction * wire] * p  # padding makes every rank's share equal again


@given(p=st.integers(1, 16), n=st.integers(0, 40), dtype=st.sampled_from(FLOATS), data=st.data())
def test_reduce_scatter_then_all_gather_is_all_reduce_bitwise(p, n, dtype, data):
    """The ring all-reduce is a ring reduce-scatter followed by a ring all-gather: the same additions, in the
    same order (1-d buffers, so that both cut the same chunks)."""
    x = [data.draw(random_floats(dtype, (n,))) for _ in range(p)]
    mesh = Mesh(p)
    scattered = tpsim.reduce_scatter(x, mesh, algorithm="ring")
    gathered = tpsim.all_gather(scattered, mesh, algorithm="ring")
    assert_bitwise(gathered, tpsim.all_reduce(x, mesh, algorithm="ring"))


GRID = np.arange(6).reshape(2, 3)  # device ids of Mesh((2, 3), names=("dp", "tp")), row-major
GROUPS = {"tp": GRID, "dp": GRID.T}  # the tp groups are its rows, the dp groups its columns


@pytest.mark.parametrize("mesh_dim", ["dp", "tp"])
@pytest.mark.parametrize("collective, algorithm", PAIRS)
@settings(max_examples=10)
@given(data=st.data())
def test_each_group_of_a_mesh_dim_runs_its_own_collective(collective, algorithm, mesh_dim, data):
    """On Mesh((2, 3), names=("dp", "tp")) every group along `mesh_dim` gets its own group's definition,
    also when the groups hold different shapes (uneven shards)."""
    groups = GROUPS[mesh_dim]
    count, p = groups.shape
    x, kw = data.draw(problems(collective, algorithm, DTYPES, small_ints, p=p, groups=count))
    if data.draw(st.booleans()):  # the last group holds twice the rows
        x[-1] = [np.concatenate([a, a]) for a in x[-1]]
    buffers = [None] * GRID.size
    for devices, group_x in zip(groups, x, strict=True):
        for device, buffer in zip(devices, group_x, strict=True):
            buffers[device] = buffer
    results = call(collective, buffers, Mesh(GRID.shape, names=("dp", "tp")), {**kw, "mesh_dim": mesh_dim})
    op, root = kw.get("op", "sum"), kw.get("root", 0)
    for devices, group_x in zip(groups, x, strict=True):
        assert_bitwise([results[d] for d in devices], definition(collective, group_x, op, root))


def test_groups_of_different_shapes_are_recorded_as_separate_collectives():
    """Every record's index is its position, and every transfer names the record of the group that sent it."""
    mesh = Mesh((2, 2), names=("dp", "tp"))
    tpsim.all_reduce([np.ones(4, np.float32)] * 2 + [np.ones(5, np.float32)] * 2, mesh, mesh_dim="tp")
    records, transfers = mesh.trace.collectives, mesh.trace.transfers()
    assert [c.index for c in records] == list(range(len(records)))
    senders = zip(transfers["collective"], transfers["src"], strict=True)
    assert all(src in records[c].devices for c, src in senders)


@pytest.mark.parametrize("collective, algorithm", [(c, a) for c, a in PAIRS if c in REDUCING])
def test_a_float32_accumulator_is_at_least_as_close_to_the_truth(collective, algorithm):
    """bfloat16 keeps 8 bits: 256 + 1 rounds back to 256, so summing [256, 1, 1, 1] term by term in bfloat16
    loses all three ones, where a float32 accumulator rounds 259 once.  Direct reduces all terms at once."""
    x = [np.full(8, 256 if r == 0 else 1, tpsim.bfloat16) for r in range(4)]
    truth = definition(collective, [a.astype(np.float64) for a in x])
    plain = call(collective, x, Mesh(4), {"algorithm": algorithm})
    wide = call(collective, x, Mesh(4), {"algorithm": algorithm, "accum_dtype": np.float32})
    for want, got_plain, got_wide in zip(truth, plain, wide, strict=True):
        if want is not None:
            error_plain = np.abs(got_plain.astype(np.float64) - want)
            error_wide = np.abs(got_wide.astype(np.float64) - want)
            assert np.all(error_wide <= error_plain)
            if algorithm == "direct":
                assert np.all(error_wide < error_plain)


@pytest.mark.parametrize("collective, algorithm", PAIRS)
@settings(max_examples=10)
@given(data=st.data())
def test_shape_only_runs_cost_what_data_runs_cost(collective, algorithm, data):
    """The same call on tpsim.meta buffers gives results of the same shapes, the same bytes per device, the
    same simulated time and the same memory peaks, without any data."""
    (x,), kw = data.draw(problems(collective, algorithm, DTYPES, small_ints))
    data_mesh, meta_mesh = Mesh(len(x)), Mesh(len(x))
    real = call(collective, x, data_mesh, kw)
    shaped = call(collective, [tpsim.meta(a.shape, a.dtype) for a in x], meta_mesh, kw)
    assert all(isinstance(a, MetaArray) for a in shaped if a is not None)
    assert shapes(shaped) == shapes(real)
    assert meta_mesh.trace.per_device() == data_mesh.trace.per_device()
    assert meta_mesh.trace.collectives[-1].time == data_mesh.trace.collectives[-1].time
    assert meta_mesh.clock == data_mesh.clock
    assert [d.peak for d in meta_mesh.devices] == [d.peak for d in data_mesh.devices]


@pytest.mark.parametrize("name", [c.value for c in Collective])
def test_a_collective_named_by_its_string_runs_and_is_recorded_as_the_enum_member(name):
    mesh, member = Mesh(3), Collective(name)
    root = {"root": 1} if member in ROOTED else {}
    buffers = [
        np.arange(6.0) if member not in (Collective.BROADCAST, Collective.SCATTER) or d == 1 else None
        for d in range(3)
    ]
    tpsim.collectives.run_collective(name, buffers, mesh, **root)
    (record,) = mesh.trace.collectives
    assert record.collective is member and record.collective == name and f"{record.collective}" == name
    assert repr(record.collective) == repr(name)  # records print as they did with plain names
    assert tpsim.Collective is Collective and tuple(Collective) == tpsim.collectives.schedule.COLLECTIVES
