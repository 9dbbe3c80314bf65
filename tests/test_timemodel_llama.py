"""The closed-form iteration model (tpsim/plan/iteration.py) prices a Llama as itself: GQA's qkv and
SwiGLU's gate-up GEMMs, the Llama's parameters and activations per device, and its model FLOPs.

Hand figures come from Meta-Llama-3-70B's published config.json: hidden 8192, 80 layers, 64 heads, 8
KV heads of 128 features, ffn 28672, vocabulary 128256, untied, sequence 8192.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cli import main
from tpsim.darray import distribute
from tpsim.efficiency import efficiency_for
from tpsim.hardware import DEVICES, device_spec
from tpsim.mesh import Mesh
from tpsim.meta import meta
from tpsim.nn.llama import LlamaBlock
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig
from tpsim.placement import Replicate
from tpsim.plan import Layout, analyse_layout
from tpsim.plan.cluster import CLUSTERS
from tpsim.plan.iteration import iteration, layer_times
from tpsim.plan.kernels import layer_gemms, layer_passes
from tpsim.plan.llama_memory import layer_activation_bytes
from tpsim.presets import nvlink_node

H, LAYERS, HEADS, KV, D, FFN, VOCAB, S = 8192, 80, 64, 8, 128, 28672, 128256, 8192
UNBOUNDED = 1 << 62


def test_llama3_70b_gemms_at_tp8_split_the_kv_heads():
    # 8 query heads and 1 KV head per rank: qkv (8 + 2) x 128 = 1280 columns; gate-up 2 x 28672 / 8
    assert layer_gemms(S, 1, H, HEADS, 8, FFN, kv_heads=KV, gated=True) == [
        ("qkv", 1, 8192, 1280, 8192),
        ("scores", 8, 8192, 8192, 128),
        ("context", 8, 8192, 128, 8192),
        ("proj", 1, 8192, 8192, 1024),
        ("fc1", 1, 8192, 7168, 8192),
        ("fc2", 1, 8192, 8192, 3584),
    ]


def test_llama3_70b_gemms_at_tp16_replicate_each_kv_head_on_two_ranks():
    # 4 query heads per rank and a copy of 1 KV head: qkv (4 + 2) x 128 = 768 columns, not 80 x 128 / 16
    assert layer_gemms(S, 2, H, HEADS, 16, FFN, kv_heads=KV, gated=True) == [
        ("qkv", 1, 16384, 768, 8192),
        ("scores", 8, 8192, 8192, 128),
        ("context", 8, 8192, 128, 8192),
        ("proj", 1, 16384, 8192, 512),
        ("fc1", 1, 16384, 3584, 8192),
        ("fc2", 1, 16384, 8192, 1792),
    ]


def test_the_gpt_defaults_are_unchanged():
    gpt = layer_gemms(1024, 2, 2048, 16, 4)
    assert gpt == layer_gemms(1024, 2, 2048, 16, 4, kv_heads=None, gated=False)
    assert [g[3] for g in gpt] == [3 * 2048 // 4, 1024, 128, 2048, 4 * 2048 // 4, 2048]
    for kernels in ("unfused", "fused", "flash"):
        assert layer_passes(1024, 2, 2048, 16, 4, True, kernels) == layer_passes(
            1024, 2, 2048, 16, 4, True, kernels, llama=False
        )


def test_llama3_70b_memory_bound_passes_at_tp8():
    T = 2 * S
    p = layer_passes(S, 2, H, HEADS, 8, False, "flash", FFN, llama=True, kv_heads=KV)
    assert p["rope q, k"] == 2 * (8 + 1) * 128 * T  # q's 8 heads and k's 1 head, read and written
    assert p["swiglu"] == 3 * T * 3584  # read gate and up, write their product
    assert p["flash attention io"] == (2 * 1024 + 2 * 128) * T  # Q and O of 8 heads, K and V of 1
    assert p["softmax"] == p["attention dropout"] == p["mask"] == 0.0  # flash, and no dropout
    unfused = layer_passes(S, 2, H, HEADS, 8, False, "unfused", FFN, llama=True, kv_heads=KV)
    assert unfused["softmax"] == 2 * 2 * HEADS * S * S / 8 and unfused["swiglu"] == 5 * T * 3584


@st.composite
def llama_shapes(draw):
    t = draw(st.sampled_from([1, 2, 4]))
    g = draw(st.sampled_from([g for g in (1, 2, 4, 8) if g % t == 0 or t % g == 0]))
    a = max(g, t) * draw(st.integers(1, 3))
    return dict(
        t=t,
        g=g,
        a=a,
        d=draw(st.sampled_from([16, 64])),
        s=draw(st.integers(1, 512)),
        b=draw(st.integers(1, 2)),
        ffn=t * draw(st.integers(1, 64)),
        sp=draw(st.booleans()),
        device=draw(st.sampled_from(["h100", "a100"])),
    )


@settings(max_examples=25, deadline=None)
@given(llama_shapes())
def test_the_simulated_llama_block_runs_the_closed_form_gemms(c):
    """A LlamaBlock's forward on a realistic shape-only mesh (KV heads split or replicated): its GEMMs
    are layer_gemms(kv_heads, gated) and their time is layer_times' forward_gemm for a LlamaConfig."""
    t, g, a, d, s, b, ffn = (c[k] for k in ("t", "g", "a", "d", "s", "b", "ffn"))
    h = a * d
    mesh = Mesh(t, device=c["device"], memory=UNBOUNDED, efficiency="realistic")
    block = LlamaBlock(mesh, h, a, g, ffn, init=None, dtype="bfloat16")
    block(distribute(meta((s, b, h), "bfloat16"), mesh, [Replicate()]))
    sim = sorted(
        (o.gemm.batch, o.gemm.m, o.gemm.n, o.gemm.k)
        for o in mesh.trace.compute
        if o.device == 0 and o.gemm is not None
    )
    closed = layer_gemms(s, b, h, a, t, ffn, kv_heads=g, gated=True)
    assert sim == sorted((bt, m, n, k) for _, bt, m, n, k in closed)
    cfg = LlamaConfig(256, h, 1, a, g, ffn, s)
    spec, eff = device_spec(c["device"]), efficiency_for(c["device"])
    lt = layer_times(cfg, t, False, b, spec, eff, CLUSTERS[c["device"]], "fused", "none")
    seconds = sum(o.end - o.start for o in mesh.trace.compute if o.device == 0 and o.gemm is not None)
    assert lt["forward_gemm"] == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "g", "sp", "b"),
    [(2, 2, False, 1), (4, 2, False, 2), (2, 4, True, 1), (4, 1, True, 2), (1, 2, False, 1)],
)
def test_activations_per_layer_are_the_simulated_llamas(t, g, sp, b):
    """What one more layer adds to the simulated exact Llama's activations is llama_memory's count."""
    held = []
    for layers in (1, 2):
        cfg = LlamaConfig(512, 256, layers, 8, g, 384, 64, micro_batch=b)
        r = analyse_layout(cfg, Layout(t, sp=sp), topology=nvlink_node(t), global_batch=b)
        held.append(r["memory_per_device"]["activations"])
    assert held[1] - held[0] == layer_activation_bytes(cfg, b, t, sp, "none")


def llama3_70b_per_device(t: int) -> int:
    """Embedding and output rows of the vocabulary padded to 128 t, each layer's share, the final norm."""
    padded = -(-VOCAB // (128 * t)) * 128 * t
    layer = (HEADS // t + 2 * max(KV // t, 1)) * D * H + H * H // t + 3 * H * FFN // t + 2 * H
    return 2 * (padded // t) * H + LAYERS * layer + H


@pytest.mark.parametrize(("tp", "extra"), [(8, ()), (16, ("--tp-across-nodes", "--fast"))])
def test_cli_realistic_holds_the_exact_llama_parameters(capsys, tp, extra):
    assert main(["model", "llama3-70b", "--tp", str(tp), "--realistic", "--json", *extra]) == 0
    r = json.loads(capsys.readouterr().out)
    mem = r["realistic"]["memory"]
    assert mem["parameters"] == llama3_70b_per_device(tp) == r["parameters_per_device"]
    assert mem["weights"] == 2 * llama3_70b_per_device(tp)
    assert r["realistic"]["flops_formula"].startswith("6 B s (l W + h V) + 12 B s^2 h l")


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_llama_mfu_counts_its_own_gemms(recompute):
    cfg = LLAMA_PRESETS["llama3-70b"]
    r = iteration(
        cfg,
        Layout(8, 2, 2),
        cluster=CLUSTERS["h100"],
        device="h100",
        global_batch=16,
        micro_batch=1,
        recompute=recompute,
    )
    B = 16
    w = H * (H + 2 * KV * D) + H * H + 3 * H * FFN  # q, k, v, o, gate, up, down
    model = 6 * B * S * (LAYERS * w + H * VOCAB) + 12 * B * S * S * H * LAYERS
    extra = {"none": 0, "selective": 4 * B * S * S * H, "full": 2 * B * S * (w + 2 * S * H)}[recompute]
    assert r["flops"]["model"] == model
    assert r["flops"]["hardware"] == model + LAYERS * extra
    peak = DEVICES["h100"].peak("bfloat16")
    assert r["mfu"] == pytest.approx(model / (r["time"]["iteration"] * 32 * peak), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(LLAMA_PRESETS)),
    layout=st.sampled_from([(8, 1, 1), (4, 2, 2), (2, 1, 4), (16, 1, 1)]),
    recompute=st.sampled_from(["none", "selective", "full"]),
    kernels=st.sampled_from(["unfused", "fused", "flash"]),
    micro=st.sampled_from([1, 2]),
    device=st.sampled_from(["h100", "a100"]),
)
def test_realistic_is_never_faster_than_peak_for_llamas(name, layout, recompute, kernels, micro, device):
    kw = dict(
        cluster=CLUSTERS[device],
        device=device,
        global_batch=32,
        micro_batch=micro,
        recompute=recompute,
        kernels=kernels,
    )
    real = iteration(LLAMA_PRESETS[name], Layout(*layout), mode="realistic", **kw)
    peak = iteration(LLAMA_PRESETS[name], Layout(*layout), mode="peak", **kw)
    assert real["time"]["iteration"] >= peak["time"]["iteration"]
    for k in ("microbatch_forward", "microbatch_backward", "compute"):
        assert real["time"][k] >= peak["time"][k]
    assert real["memory"] == peak["memory"] and real["flops"] == peak["flops"]


@pytest.mark.parametrize("t, g", [(4, 2), (4, 4), (8, 2)])
@pytest.mark.parametrize("sp", [False, True])
def test_the_stream_timeline_is_the_closed_form_for_llamas_too(t, g, sp):
    """With every overlap off, the stream timeline times a Llama's iteration as the closed form does,
    the all-reduce of replicated KV-head grads (t > g) included."""
    cfg = LlamaConfig(1024, 512, 4, 8, g, 1536, 256)
    kw = dict(cluster=CLUSTERS["h100"], device="h100", global_batch=4, micro_batch=1)
    closed = iteration(cfg, Layout(t, 1, 2, sp=sp), **kw)
    streams = iteration(cfg, Layout(t, 1, 2, sp=sp), streams=True, **kw)
    assert (
        layer_times(
            cfg, t, sp, 1, device_spec("h100"), efficiency_for("h100"), CLUSTERS["h100"], "fused", "none"
        )["kv_grad"]
        > 0
    ) == (t > g)
    for part, seconds in closed["time"].items():
        assert streams["time"][part] == pytest.approx(seconds, rel=1e-9, abs=1e-15), part
