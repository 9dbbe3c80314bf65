"""The compute side of the time model: roofline time per op, FLOP counts of a layer, and the timeline.

The oracle is the datasheet and the definition:

    time of an op = max(FLOPs / peak FLOP/s of its dtype, bytes moved / memory bandwidth)
    a GEMM (m, k) @ (k, n) = 2 m k n FLOPs, reading m k + k n and writing m n elements

and for a device, compute and collectives run one after the other (no overlap), so its events
never overlap and TP efficiency T_1 / (t T_t) falls as communication grows.  Everything here runs
shape-only (`tpsim.meta`, init=None): no data is allocated.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim import Mesh, Replicate, Shard, distribute, meta, presets
from tpsim.errors import TopologyError, WorldSizeError
from tpsim.hardware import DEVICES
from tpsim.nn import ParallelAttention, ParallelMLP, ops
from tpsim.nn.module import local
from tpsim.nn.timeline import device_timeline, tp_efficiency, utilisation

R = Replicate()
DTYPES = ["float16", "bfloat16", "float32", "float64"]
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
GEMMS = ("linear", "linear_dweight", "linear_dinput")


def mlp_step(mesh, tokens, h, ffn, dtype="float32"):
    """Shape-only ParallelMLP forward + backward on a 1-d `mesh`, x and dy (tokens, h) replicated."""
    mlp = ParallelMLP(mesh, h, ffn, init=None, dtype=dtype)
    mlp(distribute(meta((tokens, h), dtype), mesh, [R]))
    mlp.backprop(distribute(meta((tokens, h), dtype), mesh, [R]))


def flops_by_name(mesh) -> dict[str, float]:
    out: dict[str, float] = {}
    for op in mesh.trace.compute:
        out[op.name] = out.get(op.name, 0) + op.flops
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(DEVICES))
@given(m=st.integers(1, 1 << 14), k=st.integers(1, 1 << 14), n=st.integers(1, 1 << 14))
def test_matmul_time_is_the_roofline(name, dtype, m, k, n):
    """One GEMM on one device takes max(2 m k n / peak, (m k + k n + m n) itemsize / bandwidth)."""
    spec = DEVICES[name]
    mesh = Mesh(1, device=name)
    local(mesh, "matmul", ops.matmul, meta((m, k), dtype), meta((k, n), dtype), placements=[R])
    (op,) = mesh.trace.compute
    flops = 2 * m * k * n
    nbytes = (m * k + k * n + m * n) * ITEMSIZE[dtype]
    expected = max(flops / spec.flops[dtype], nbytes / spec.memory_bandwidth)
    assert (op.flops, op.nbytes) == (flops, nbytes)
    assert op.end - op.start == pytest.approx(expected, rel=1e-12)
    assert mesh.clock == [op.end]


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_the_roofline_has_both_regimes(name):
    """A square 8192 GEMM is bound by FLOPs, a matrix-vector product by memory bandwidth."""
    spec = DEVICES[name]
    for (m, k, n), bound in (((8192, 8192, 8192), "flops"), ((1, 8192, 8192), "bytes")):
        mesh = Mesh(1, device=spec)
        local(mesh, "matmul", ops.matmul, meta((m, k), "bfloat16"), meta((k, n), "bfloat16"), placements=[R])
        (op,) = mesh.trace.compute
        by_flops = 2 * m * k * n / spec.flops["bfloat16"]
        by_bytes = (m * k + k * n + m * n) * 2 / spec.memory_bandwidth
        assert op.end - op.start == pytest.approx(by_flops if bound == "flops" else by_bytes, rel=1e-12)
        assert (by_flops > by_bytes) == (bound == "flops")


def test_a_mesh_without_a_device_counts_flops_in_no_time():
    mesh = Mesh(4)
    mlp_step(mesh, 64, 32, 128)
    assert mesh.trace.compute
    assert all(op.flops > 0 and op.end == op.start for op in mesh.trace.compute)
    assert max(mesh.clock) == mesh.trace.collectives[-1].end  # the links still take time
    assert sum(op.flops for op in mesh.trace.compute if op.name in GEMMS) == 3 * 2 * 64 * 32 * 128 * 2


@given(
    t=st.integers(1, 8),
    tokens=st.integers(1, 64),
    h=st.integers(1, 64),
    ffn=st.integers(1, 96),
)
def test_mlp_flops_are_the_closed_form(t, tokens, h, ffn):
    """Summed over devices, forward + backward of the MLP (uneven splits too):

    GEMMs: 3 * 2 tokens h ffn * 2, i.e. fc1 and fc2 once forward and twice backward (dW and dx).
    Elementwise, on the ffn features each rank holds: fc1 bias add 1, GeLU 8, GeLU backward 14 and
    fc1's bias gradient 1 per element, 24 tokens ffn in all.  On the h outputs, which every rank
    holds whole: fc2's bias add and bias gradient, 1 per element each, so 2 t tokens h.
    """
    mesh = Mesh(t, device="h100")
    mlp_step(mesh, tokens, h, ffn)
    by_name = flops_by_name(mesh)
    assert sum(by_name[n] for n in GEMMS) == 3 * 2 * tokens * h * ffn * 2
    assert sum(v for n, v in by_name.items() if n not in GEMMS) == 24 * tokens * ffn + 2 * t * tokens * h
    assert by_name.keys() == {*GEMMS, "bias_add", "gelu", "gelu_backward", "linear_dbias"}


def test_compute_time_per_device_shrinks_as_one_over_t():
    """GPT-3's MLP (h 12288, ffn 4h, 2048 tokens, bf16): each device's compute time is T_1 / t within 5%.

    What does not shrink is fc2's bias add and bias gradient: every rank holds (tokens, h) whole after
    the all-reduce.  Without those two the sharded ops take exactly T_1 / t."""
    replicated = {("ParallelMLP.fc2", "bias_add"), ("ParallelMLP.fc2", "linear_dbias")}
    total, sharded = {}, {}
    for t in (1, 2, 4, 8):
        mesh = Mesh(t, device="h100", topology=presets.nvlink_node(t))
        mlp_step(mesh, 2048, 12288, 4 * 12288, dtype="bfloat16")
        per_device = [sum(op.end - op.start for op in mesh.trace.compute if op.device == d) for d in range(t)]
        assert per_device == pytest.approx([per_device[0]] * t, rel=1e-12)
        total[t] = per_device[0]
        ops_0 = [op for op in mesh.trace.compute if op.device == 0]
        sharded[t] = sum(op.end - op.start for op in ops_0 if (op.label, op.name) not in replicated)
    for t in (2, 4, 8):
        assert total[t] * t == pytest.approx(total[1], rel=0.05)
        assert total[t] * t > total[1]
        assert sharded[t] * t == pytest.approx(sharded[1], rel=1e-9)


def mlp_builder(tokens=4096, h=4096, ffn=16384, dtype="bfloat16"):
    def build(mesh):
        mlp = ParallelMLP(mesh, h, ffn, init=None, dtype=dtype)
        x = distribute(meta((tokens, h), dtype), mesh, [R])
        return mlp, x, distribute(meta((tokens, h), dtype), mesh, [R])

    return build


def test_tp_efficiency_falls_with_t_and_nvlink_beats_pcie():
    degrees = [2, 4, 8]
    nvlink = tp_efficiency(mlp_builder(), degrees, device="h100", topology="nvlink")
    pcie = tp_efficiency(mlp_builder(), degrees, device="h100", topology="pcie4")
    for rows in (nvlink, pcie):
        assert [r["tp"] for r in rows] == [1, *degrees]
        assert rows[0]["efficiency"] == 1.0 and rows[0]["comm"] == 0.0
        eff = [r["efficiency"] for r in rows]
        assert all(a > b for a, b in itertools.pairwise(eff)), eff
        for r in rows:
            assert r["time"] == pytest.approx(r["compute"] + r["comm"] + r["idle"], rel=1e-12)
            assert r["efficiency"] == pytest.approx(rows[0]["time"] / (r["tp"] * r["time"]), rel=1e-12)
    assert nvlink[0]["time"] == pcie[0]["time"]  # one device: no link is used
    for a, b in zip(nvlink[1:], pcie[1:], strict=False):
        assert a["efficiency"] > b["efficiency"]


def test_tp_efficiency_checks_its_input():
    with pytest.raises(WorldSizeError, match="TP degree 0"):
        tp_efficiency(mlp_builder(), [0])
    with pytest.raises(TopologyError, match="unknown topology preset 'nvlnk'"):
        tp_efficiency(mlp_builder(), [2], topology="nvlnk")
    with pytest.raises(TopologyError, match="unknown device"):
        tp_efficiency(mlp_builder(), [2], device=None)


def transformer_step(mesh, sequence_parallel: bool):
    """Attention then MLP, (s, b, h) = (256, 2, 512), 8 heads, forward and backward, shape-only."""
    s, b, h = 256, 2, 512
    kw = dict(init=None, dtype="bfloat16", sequence_parallel=sequence_parallel, tp_dim="tp")
    attn, mlp = ParallelAttention(mesh, h, 8, **kw), ParallelMLP(mesh, h, 4 * h, **kw)
    on_tp = Shard(0) if sequence_parallel else R
    placements = [Shard(1), on_tp]  # the batch split over dp, the sequence over tp under SP
    mlp(attn(distribute(meta((s, b, h), "bfloat16"), mesh, placements)))
    attn.backprop(mlp.backprop(distribute(meta((s, b, h), "bfloat16"), mesh, placements)))


@pytest.mark.parametrize("sequence_parallel", [False, True])
@pytest.mark.parametrize("topology", [presets.nvlink_node, presets.pcie])
def test_timeline_events_are_ordered_and_never_overlap(topology, sequence_parallel):
    """On a (dp 2, tp 4) mesh each device's events follow one another; compute + comm + idle fills the run."""
    mesh = Mesh((2, 4), names=("dp", "tp"), device="h100", topology=topology(8))
    transformer_step(mesh, sequence_parallel)
    use = utilisation(mesh)
    makespan = max(mesh.clock)
    for d in range(mesh.size):
        events = device_timeline(mesh, d)
        starts, ends = np.array([e["start"] for e in events]), np.array([e["end"] for e in events])
        assert (ends >= starts).all()
        assert (starts[1:] >= ends[:-1] - 1e-15).all()  # ordered, and each begins after the last ends
        assert {e["kind"] for e in events} == {"compute", "collective"}
        compute = sum(e["end"] - e["start"] for e in events if e["kind"] == "compute")
        comm = sum(e["end"] - e["start"] for e in events if e["kind"] == "collective")
        assert use[d]["compute"] == pytest.approx(compute, rel=1e-12)
        assert use[d]["comm"] == pytest.approx(comm, rel=1e-12)
        assert use[d]["end"] == mesh.clock[d] == ends.max()
        assert use[d]["compute"] + use[d]["comm"] + use[d]["idle"] == pytest.approx(makespan, rel=1e-12)
        assert math.isclose(use[d]["idle"], 0.0, abs_tol=1e-12 * makespan) or use[d]["idle"] > 0


def test_device_timeline_checks_the_device():
    mesh = Mesh(2)
    with pytest.raises(WorldSizeError, match=r"device 2 is not on the mesh; valid: 0\.\.1"):
        device_timeline(mesh, 2)
