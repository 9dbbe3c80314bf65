"""The simulator's efficiency modes (Mesh(efficiency=...), tpsim/efficiency.py's op_time).

The oracles are independent of the layer code:

    a GPT layer's forward GEMMs are kernels.layer_gemms(s, b, h, a, t), priced by gemm_time, and the
    closed-form iteration model's layer_times adds them up as "forward_gemm";
    a Llama layer's are the same with GQA's fused qkv (a + 2 g) d / t wide and SwiGLU's fused gate-up
    2 f / t wide, written out below;
    realistic can only lose to the roofline (efficiency <= 1, launch >= 0, achieved bandwidth <= peak);
    the op's time depends on its shape alone, so a shape-only run and a real-valued run agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim import Mesh, Replicate, Shard, distribute, meta
from tpsim.efficiency import EFFICIENCIES, efficiency_for, gemm_time
from tpsim.errors import MeshError, TopologyError
from tpsim.hardware import device_spec
from tpsim.nn import TransformerBlock
from tpsim.nn.config import GPTConfig
from tpsim.nn.llama import LlamaBlock
from tpsim.plan.cluster import CLUSTERS
from tpsim.plan.kernels import backward_gemms, layer_gemms
from tpsim.plan.layer_times import layer_times

DEVICES = sorted(EFFICIENCIES)  # the devices with efficiency parameters
UNBOUNDED = 1 << 62


def gpt_block(mesh, s, b, h, a, ffn, dtype, sp=False, init=None):
    block = TransformerBlock(mesh, h, a, ffn, init=init, dtype=dtype, sequence_parallel=sp)
    return block, (s, b, h)


def llama_block(mesh, s, b, h, a, g, ffn, dtype, init=None):
    return LlamaBlock(mesh, h, a, g, ffn, init=init, dtype=dtype), (s, b, h)


def run(mesh, block, shape, dtype, sp=False, data=None, backward=True):
    """Forward (and backward) of `block` on x (s, b, h): shape-only, or `data` = (x, dy) arrays."""
    place = [Shard(0) if sp else Replicate()]
    x = meta(shape, dtype) if data is None else data[0]
    y = block(distribute(x, mesh, place))
    if backward:
        dy = meta(y.shape, dtype) if data is None else data[1]
        block.backprop(distribute(dy, mesh, y.placements))


def gemm_seconds(mesh, device=0) -> float:
    return sum(op.end - op.start for op in mesh.trace.compute if op.device == device and op.gemm is not None)


def gemm_shapes(mesh, device=0) -> list[tuple[int, int, int, int]]:
    return sorted((g.batch, g.m, g.n, g.k) for op in mesh.trace.compute if op.device == 0 and (g := op.gemm))


@st.composite
def gpt_shapes(draw):
    t = draw(st.sampled_from([1, 2, 4, 8]))
    a = t * draw(st.integers(1, 4))
    d = draw(st.sampled_from([16, 64, 80, 128]))
    return dict(
        t=t,
        s=draw(st.integers(1, 4096)),
        b=draw(st.integers(1, 4)),
        h=a * d,
        a=a,
        ffn=t * draw(st.integers(1, 4 * a * d // t)),
        sp=draw(st.booleans()),
        device=draw(st.sampled_from(DEVICES)),
        dtype=draw(st.sampled_from(["bfloat16", "float16"])),
    )


@given(gpt_shapes())
def test_gpt_layer_forward_gemms_are_the_closed_form_layer_times(c):
    """A GPT layer's forward on a realistic shape-only mesh: its GEMMs are layer_gemms' shapes, and their
    summed time is the closed-form model's forward_gemm (iteration.layer_times, the same efficiency)."""
    t, s, b, h, a, ffn = (c[k] for k in ("t", "s", "b", "h", "a", "ffn"))
    if c["sp"] and s % t:
        s = t * max(1, s // t)  # SP splits the sequence evenly
    mesh = Mesh(t, device=c["device"], memory=UNBOUNDED, efficiency="realistic")
    block, shape = gpt_block(mesh, s, b, h, a, ffn, c["dtype"], sp=c["sp"])
    run(mesh, block, shape, c["dtype"], sp=c["sp"], backward=False)
    expected = layer_gemms(s, b, h, a, t, ffn)
    assert gemm_shapes(mesh) == sorted((bt, m, n, k) for _, bt, m, n, k in expected)
    spec, eff = device_spec(c["device"]), efficiency_for(c["device"])
    cfg = GPTConfig(64, h, 1, a, s, ffn_hidden=ffn, dtype=c["dtype"])
    closed = layer_times(cfg, t, c["sp"], b, spec, eff, CLUSTERS[c["device"]], "fused", "none")
    by_hand = sum(gemm_time(spec, eff, m, n, k, c["dtype"], bt) for _, bt, m, n, k in expected)
    for d in range(t):
        assert gemm_seconds(mesh, d) == pytest.approx(closed["forward_gemm"], rel=1e-12)
    assert closed["forward_gemm"] == pytest.approx(by_hand, rel=1e-12)


@given(gpt_shapes())
def test_gpt_layer_backward_gemms_are_the_closed_forms_up_to_dw_orientation(c):
    """Backward runs dX and dW of each forward GEMM (kernels.backward_gemms).  The simulator computes a
    linear's dW as dY^T X, (out, in) as Megatron stores the weight, and attention's dK as dS^T Q; the
    closed form writes them (in, out) and (d, s): the same GEMMs with m and n swapped.  So the shapes
    agree as (batch, k, {m, n}), and the FLOPs exactly."""
    t, s, b, h, a, ffn = (c[k] for k in ("t", "s", "b", "h", "a", "ffn"))
    mesh = Mesh(t, device=c["device"], memory=UNBOUNDED, efficiency="realistic")
    block, shape = gpt_block(mesh, s, b, h, a, ffn, c["dtype"])
    run(mesh, block, shape, c["dtype"], backward=False)
    forward_ops = len(mesh.trace.compute)
    y_shape = (s, b, h)
    block.backprop(distribute(meta(y_shape, c["dtype"]), mesh, [Replicate()]))
    sim = [op.gemm for op in mesh.trace.compute[forward_ops:] if op.device == 0 and op.gemm is not None]
    closed = backward_gemms(layer_gemms(s, b, h, a, t, ffn))
    assert sorted((g.batch, g.k, *sorted((g.m, g.n))) for g in sim) == sorted(
        (bt, k, *sorted((m, n))) for _, bt, m, n, k in closed
    )
    assert sum(g.flops for g in sim) == sum(2 * bt * m * n * k for _, bt, m, n, k in closed)


@given(
    t=st.sampled_from([1, 2, 4]),
    groups=st.integers(1, 2),
    per_group=st.integers(1, 4),
    d=st.sampled_from([16, 64, 128]),
    s=st.integers(1, 2048),
    b=st.integers(1, 3),
    f=st.integers(1, 512),
    device=st.sampled_from(DEVICES),
)
def test_llama_layer_forward_gemms_are_gqa_and_swiglu_gemms(t, groups, per_group, d, s, b, f, device):
    """Llama's forward GEMMs per rank (g KV heads, a = g m query heads, T = b s): qkv T x (a + 2 g) d / t
    over h, scores and context as GPT's, proj T x h over a d / t, gate-up T x 2 f / t over h, down T x h
    over f / t; summed through gemm_time."""
    g = t * groups
    a, ffn = g * per_group, t * f
    h, T = a * d, b * s
    mesh = Mesh(t, device=device, memory=UNBOUNDED, efficiency="realistic")
    block, shape = llama_block(mesh, s, b, h, a, g, ffn, "bfloat16")
    run(mesh, block, shape, "bfloat16", backward=False)
    expected = [
        (1, T, (a + 2 * g) * d // t, h),
        (b * a // t, s, s, d),
        (b * a // t, s, d, s),
        (1, T, h, a * d // t),
        (1, T, 2 * ffn // t, h),
        (1, T, h, ffn // t),
    ]
    assert gemm_shapes(mesh) == sorted(expected)
    spec, eff = device_spec(device), efficiency_for(device)
    by_hand = sum(gemm_time(spec, eff, m, n, k, "bfloat16", bt) for bt, m, n, k in expected)
    assert gemm_seconds(mesh) == pytest.approx(by_hand, rel=1e-12)


@given(gpt_shapes(), st.booleans())
def test_realistic_is_never_faster_than_peak_for_any_op(c, llama):
    """Every op of a layer's forward and backward, GEMM or memory-bound, takes at least its roofline
    time in the realistic mode; the two runs record the same ops with the same FLOPs and bytes."""
    t, s, b, h, a, ffn, dtype = (c[k] for k in ("t", "s", "b", "h", "a", "ffn", "dtype"))
    meshes = {}
    for mode in ("peak", "realistic"):
        mesh = Mesh(t, device=c["device"], memory=UNBOUNDED, efficiency=mode)
        if llama:
            block, shape = llama_block(mesh, s, b, h, a, t, ffn, dtype)
            run(mesh, block, shape, dtype)
        else:
            s_even = t * max(1, s // t) if c["sp"] else s
            block, shape = gpt_block(mesh, s_even, b, h, a, ffn, dtype, sp=c["sp"])
            run(mesh, block, shape, dtype, sp=c["sp"])
        meshes[mode] = mesh.trace.compute
    peak, real = meshes["peak"], meshes["realistic"]
    assert [(o.device, o.name, o.flops, o.nbytes, o.gemm) for o in peak] == [
        (o.device, o.name, o.flops, o.nbytes, o.gemm) for o in real
    ]
    assert {o.mode for o in peak} == {"peak"} and {o.mode for o in real} == {"realistic"}
    for p, r in zip(peak, real, strict=True):
        assert r.end - r.start >= p.end - p.start, (p.name, p.gemm, p.nbytes)


@pytest.mark.parametrize("mode", ["peak", "realistic"])
@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_shape_only_and_real_valued_runs_record_the_same_times(mode, kind):
    """The same layer, on data and on shapes only: every op at the same start and end, same shape."""
    t, s, b, h, a, ffn, dtype = 2, 16, 2, 64, 4, 96, "float32"
    rng = np.random.default_rng(0)
    records = []
    for real in (False, True):
        mesh = Mesh(t, device="h100", memory=UNBOUNDED, efficiency=mode)
        init = "normal" if real else None
        if kind == "gpt":
            block, shape = gpt_block(mesh, s, b, h, a, ffn, dtype, init=init)
        else:
            block, shape = llama_block(mesh, s, b, h, a, 2, ffn, dtype, init=init)
        data = (
            (rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32)) if real else None
        )
        run(mesh, block, shape, dtype, data=data)
        records.append([(o.device, o.name, o.gemm, o.mode, o.start, o.end) for o in mesh.trace.compute])
    assert records[0] == records[1]
    assert any(r[2] is not None for r in records[0]) and all(r[3] == mode for r in records[0])


def test_timeline_and_trace_name_the_mode():
    """device_timeline and the Chrome trace say how each op was priced; tp_efficiency runs in either mode,
    realistic slower than peak at TP = 1 (every op is)."""
    from tpsim.nn.timeline import device_timeline, format_efficiency, tp_efficiency

    mesh = Mesh(2, device="h100", memory=UNBOUNDED, efficiency="realistic")
    block, shape = gpt_block(mesh, 128, 1, 256, 4, 1024, "bfloat16")
    run(mesh, block, shape, "bfloat16")
    events = [e for e in device_timeline(mesh, 0) if e["kind"] == "compute"]
    assert {e["mode"] for e in events} == {"realistic"}
    assert {e["name"] for e in events if e["gemm"] is not None} >= {"linear", "attention_scores"}
    args = [e["args"] for e in mesh.trace.to_chrome_trace()["traceEvents"] if e.get("cat") == "compute"]
    assert {a["kind"] for a in args} == {"gemm", "memory-bound"} and {a["mode"] for a in args} == {
        "realistic"
    }

    def build(m):
        blk, shp = gpt_block(m, 128, 1, 256, 4, 1024, "bfloat16")
        x = distribute(meta(shp, "bfloat16"), m, [Replicate()])
        return blk, x, distribute(meta(shp, "bfloat16"), m, [Replicate()])

    rows = {mode: tp_efficiency(build, [2], efficiency=mode) for mode in ("peak", "realistic")}
    assert [r["mode"] for r in rows["realistic"]] == ["realistic", "realistic"]
    assert rows["realistic"][0]["compute"] > rows["peak"][0]["compute"]
    assert "mode realistic" in format_efficiency(rows["realistic"])


def test_layer_cli_realistic_reaches_the_mesh():
    from tpsim.cli import build_parser

    out = {}
    for flag in ([], ["--realistic"]):
        args = build_parser().parse_args(
            ["layer", "mlp", "--hidden", "1024", "--tp", "2", "--seq", "512", *flag]
        )
        out[bool(flag)], text = args.func(args)
        assert f"mode {out[bool(flag)]['mode']}:" in text
    assert (out[False]["mode"], out[True]["mode"]) == ("peak", "realistic")
    assert out[True]["time_per_device"]["compute"] > out[False]["time_per_device"]["compute"]


def test_bad_modes_are_refused():
    with pytest.raises(MeshError, match="'fast'"):
        Mesh(2, device="h100", efficiency="fast")
    with pytest.raises(MeshError, match="needs a device"):
        Mesh(2, efficiency="realistic")
    with pytest.raises(TopologyError, match="l40s"):
        Mesh(2, device="l40s", efficiency="realistic")  # no efficiency parameters for it
