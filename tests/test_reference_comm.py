"""reference.Comm against tpsim: schedule mode is bitwise tpsim on any floats, with tpsim's bytes;
native mode is bitwise tpsim on exact data; preflight names the ranks that differ.

Cases are drawn by hypothesis in the parent, every case of one world size runs inside ONE spawn
(starting ranks costs seconds), and the parent compares each rank's result with tpsim run in-process.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import tpsim
from reference.comm import Comm
from reference.launch import Backend, RankFailed, spawn
from reference.record import check_against_trace, compare_with_trace
from reference.staging import is_staged
from tpsim import Mesh, Shard
from tpsim.collectives.algorithms import ALGORITHMS
from tpsim.collectives.costs import bytes_sent_per_rank
from tpsim.placement import REDUCE_OPS, chunk_sizes

DTYPES = ("float16", "bfloat16", "float32", "float64")
REDUCING = ("all_reduce", "reduce", "reduce_scatter")
ROOTED = ("reduce", "broadcast", "scatter", "gather")
CASES_PER_SPAWN = 24
ONE_EXAMPLE = settings(max_examples=1, phases=[Phase.explicit, Phase.generate], deadline=None,
                       suppress_health_check=list(HealthCheck))


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def to_torch(a: np.ndarray) -> torch.Tensor:
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def to_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    if t is None:
        return None
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def floats(rng: np.random.Generator, shape, dtype: np.dtype, exact: bool) -> np.ndarray:
    """Exact: small integers (every partial sum exact). Else: any magnitude, with signed zeros."""
    if exact:
        return rng.integers(-4, 5, size=shape).astype(dtype)
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=shape)
    x[rng.random(shape) < 0.1] = 0.0
    x[rng.random(shape) < 0.1] = -0.0
    return x.astype(dtype)


@st.composite
def cases(draw, p: int, exact: bool = False):
    """One collective call: its kwargs, and every rank's input."""
    c = draw(st.sampled_from(list(ALGORITHMS)))
    case = {"collective": c, "algorithm": draw(st.sampled_from(ALGORITHMS[c])),
            "dtype": draw(st.sampled_from(DTYPES)), "kw": {}}
    if c in REDUCING:
        case["kw"]["op"] = draw(st.sampled_from(REDUCE_OPS))
    if c in ROOTED:
        case["kw"]["root"] = draw(st.integers(0, p - 1))
    ndim = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim))
    dim = draw(st.integers(0, ndim - 1))
    shapes = [tuple(shape)] * p
    if c in ("all_gather", "gather", "reduce_scatter", "scatter"):
        case["dim"] = dim
    if c in ("all_gather", "gather"):  # uneven pieces along dim
        shapes = [tuple(draw(st.integers(0, 5)) if i == dim else n for i, n in enumerate(shape)) for _ in range(p)]
    if c == "all_to_all":
        if ndim == 1:
            shape, shapes = [*shape, 3], [(*shape, 3)] * p
            ndim = 2
        old = draw(st.integers(0, ndim - 1))
        new = draw(st.integers(0, ndim - 2))
        new = new + (new >= old)
        total = draw(st.integers(p, 3 * p))  # S(old) of a global length, the torch.chunk rule
        shapes = [tuple(n if i != old else k for i, n in enumerate(shape)) for k in chunk_sizes(total, p)]
        case["split_dim"], case["concat_dim"] = new, old
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    case["x"] = [floats(rng, s, np_dtype(case["dtype"]), exact) for s in shapes]
    return case


def call_comm(comm: Comm, case: dict, rank: int):
    c, kw, x = case["collective"], dict(case["kw"]), to_torch(case["x"][rank])
    if c in ("broadcast", "scatter") and rank != kw["root"]:
        x = None if rank % 2 else torch.zeros_like(x)  # non-roots may pass None or a placeholder
    if c in ("all_gather", "gather", "reduce_scatter", "scatter"):
        kw["dim"] = case["dim"]
    if c == "all_to_all":
        kw = {"split_dim": case["split_dim"], "concat_dim": case["concat_dim"]}
    if "root" in kw:
        kw[{"broadcast": "src", "scatter": "src"}.get(c, "dst")] = kw.pop("root")
    before = None if x is None else x.clone()
    y = getattr(comm, c)(x, **kw)
    assert before is None or torch.equal(before, x), f"{c} modified its input"
    return to_numpy(y)


def run_cases(ctx, cases: list[dict], mode: str):
    out = []
    for case in cases:
        comm = Comm(mode=mode, algorithm={case["collective"]: case["algorithm"]})
        y = call_comm(comm, case, ctx.rank)
        out.append((y, comm.record[0], comm.bytes_sent, comm.bytes_received))
    return out


def tpsim_run(case: dict, mesh: Mesh) -> list:
    """The same call in tpsim: the cut dim moved first, the collective on dim 0, moved back."""
    c, kw, x, p = case["collective"], dict(case["kw"]), case["x"], mesh.size
    kw["algorithm"] = case["algorithm"]
    if c == "all_to_all":
        old, new = case["concat_dim"], case["split_dim"]
        return tpsim.from_local(x, mesh, [Shard(old)]).redistribute([Shard(new)], algorithm=case["algorithm"]).shards
    dim = case.get("dim", 0)
    front = [np.ascontiguousarray(np.moveaxis(a, dim, 0)) for a in x]
    out = getattr(tpsim, c)(front, mesh, **kw)
    return [None if y is None else np.moveaxis(y, 0, dim) for y in out]


def check_world(p: int, drawn: list[dict], mode: str) -> None:
    results = spawn(run_cases, p, drawn, mode, device="cpu", timeout=240)
    mesh = Mesh(p)
    for i, case in enumerate(drawn):
        want = tpsim_run(case, mesh)
        label = {k: v for k, v in case.items() if k != "x"}
        for rank in range(p):
            got = results[rank][i][0]
            if want[rank] is None:
                assert got is None, (rank, label)
                continue
            assert got is not None and got.shape == want[rank].shape, (rank, label, got, want[rank])
            assert_array_equal(bits(got), bits(want[rank]), err_msg=f"rank {rank}: {label}")
    for rank in range(p):
        record = [r[1] for r in results[rank]]
        problems = compare_with_trace(record, mesh.trace, rank)
        assert not problems, "\n".join(problems)
        if mode == "schedule":  # the counters are the sums of the records
            assert [r[2:] for r in results[rank]] == [(r.bytes_sent, r.bytes_received) for r in record]


@pytest.mark.multiprocess
@pytest.mark.parametrize("p", [1, 2, 3, 4])
@ONE_EXAMPLE
@given(data=st.data())
def test_schedule_mode_is_bitwise_tpsim_with_tpsim_bytes(p, data):
    drawn = data.draw(st.lists(cases(p), min_size=CASES_PER_SPAWN, max_size=CASES_PER_SPAWN))
    check_world(p, drawn, "schedule")


@pytest.mark.multiprocess
@pytest.mark.parametrize("p", [3])
@ONE_EXAMPLE
@given(data=st.data())
def test_native_mode_is_bitwise_tpsim_on_exact_data(p, data):
    drawn = data.draw(st.lists(cases(p, exact=True), min_size=CASES_PER_SPAWN, max_size=CASES_PER_SPAWN))
    check_world(p, drawn, "native")
