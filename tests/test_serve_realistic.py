"""Mode realistic of tpsim.serve: a Llama layer priced kernel by kernel with the training model's
efficiency parameters; never faster than mode peak; every output names its mode."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tpsim import presets
from tpsim.cli import main
from tpsim.efficiency import efficiency_for, gemm_time, memory_time
from tpsim.hardware import device_spec
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.serve.plan import decode_latency, prefill_time, serve_plan

L70 = LLAMA_PRESETS["llama3-70b"]
GPUS = ("h100", "a100", "h200")


@given(
    model=st.sampled_from(["llama3-70b", "llama3-8b"]),
    gpu=st.sampled_from(GPUS),
    t=st.sampled_from([1, 2, 4, 8, 16]),
    batch=st.integers(1, 512),
    context=st.integers(1, 32768),
    fp8=st.booleans(),
)
def test_realistic_decode_is_never_faster_than_peak(model, gpu, t, batch, context, fp8):
    cfg, spec, node = LLAMA_PRESETS[model], device_spec(gpu), presets.nvlink_node(t, gpu)
    w = 1 if fp8 else None
    peak = decode_latency(cfg, t, batch, context, spec, node, w)
    real = decode_latency(cfg, t, batch, context, spec, node, w, mode="realistic")
    assert (peak["mode"], real["mode"]) == ("peak", "realistic")
    assert real["seconds"] >= peak["seconds"] and real["compute"] >= peak["compute"]
    assert real["comm"] >= peak["comm"] and real["allreduce"] == peak["allreduce"]


@given(gpu=st.sampled_from(GPUS), t=st.sampled_from([1, 2, 4, 8]), tokens=st.integers(1, 16384))
def test_realistic_prefill_is_never_faster_than_peak(gpu, t, tokens):
    spec, node = device_spec(gpu), presets.nvlink_node(t, gpu)
    peak = prefill_time(L70, t, tokens, spec, node)
    real = prefill_time(L70, t, tokens, spec, node, mode="realistic")
    assert real["seconds"] >= peak["seconds"] and real["mode"] == "realistic"


def test_a_decode_layer_is_the_sum_of_its_kernels():
    """Llama-3 70B at t = 4 (16 query heads, 2 KV heads of 128 per rank), 8 sequences of 1000 cached
    tokens, fp8 weights: each kernel's shape and bytes written out here from the config."""
    spec, eff, t, b, ctx = device_spec("h100"), efficiency_for("h100"), 4, 8, 1000
    h, f, d, V, L = 8192, 28672 // 4, 128, 128256, 80
    q, kv = 16 * d, 2 * d
    assert (L70.hidden, L70.ffn_hidden, L70.head_dim, L70.vocab_size, L70.num_layers) == (h, 4 * f, d, V, L)

    def gemm(m, n, k, wsize=1):  # activations in and out at 2 bytes, weights at wsize
        return gemm_time(spec, eff, m, n, k, "bfloat16", nbytes=2 * (m * k + m * n) + wsize * k * n)

    norm = memory_time(spec, eff, 2 * (4 * b * h + h))
    layer = [
        norm,
        gemm(b, q + 2 * kv, h),
        memory_time(spec, eff, 2 * (2 * b * (q + kv) + b * d)),  # rotary: q, k in place; cos/sin rows
        memory_time(spec, eff, 2 * 4 * b * kv),  # cache write: read k, v, write them
        memory_time(spec, eff, 2 * (2 * b * q + 2 * b * ctx * kv)),  # attention over the cache
        gemm(b, h, q),
        norm,
        gemm(b, 2 * f, h),
        memory_time(spec, eff, 2 * 3 * b * f),  # silu_and_mul
        gemm(b, h, f),
    ]
    rest = memory_time(spec, eff, 2 * 2 * b * h) + norm + gemm(b, V // t, h, 2)  # embedding, norm, logits
    node = presets.nvlink_node(t, "h100")
    r = decode_latency(L70, t, b, ctx, spec, node, 1, mode="realistic")
    np.testing.assert_allclose([s for _, s in r["layer_kernels"]], layer, rtol=1e-12)
    np.testing.assert_allclose(r["compute"], L * sum(layer) + rest, rtol=1e-12)
    ar = r["allreduce_times"][r["allreduce"]]
    np.testing.assert_allclose(r["comm"], (2 * L + 1) * (ar + eff.launch), rtol=1e-12)  # each a kernel
    np.testing.assert_allclose(r["seconds"], r["compute"] + r["comm"], rtol=1e-12)
    assert len(r["layer_kernels"]) == 10 and r["efficiency_source"] == eff.source


def test_peak_is_one_roofline_call_per_layer():
    """Mode peak is unchanged: a layer reads its weights and the KV cache at the datasheet bandwidth."""
    spec, t, b, ctx = device_spec("h100"), 8, 1, 4096
    r = decode_latency(L70, t, b, ctx, spec, presets.nvlink_node(t, "h100"))
    h, kvd, f = L70.hidden, L70.num_kv_heads * L70.head_dim, L70.ffn_hidden
    layer_bytes = 2 * ((h * (h + 2 * kvd) + h * h + 3 * h * f) // t + 2 * h) + 2 * 2 * ctx * 128 * b
    logits = 2 * L70.vocab_size * h // t
    expected = (L70.num_layers * layer_bytes + logits) / spec.memory_bandwidth
    np.testing.assert_allclose(r["compute"], expected, rtol=1e-12)
    assert "layer_kernels" not in r


def test_serve_plan_and_cli_name_the_mode(capsys):
    peak, real = serve_plan("llama3-70b", 8), serve_plan("llama3-70b", 8, mode="realistic")
    assert (peak["mode"], real["mode"]) == ("peak", "realistic")
    assert real["efficiency_source"] == efficiency_for("h100").source
    for p, r in zip(peak["rows"], real["rows"], strict=True):
        if p["fits"]:
            assert r["latency"] > p["latency"] and r["prefill"] > p["prefill"]
    assert main(["serve-plan", "llama3-70b", "--gpus", "8", "--realistic", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "realistic"
    assert main(["serve-plan", "llama3-8b", "--gpus", "2", "--device", "a100", "--realistic"]) == 0
    out = capsys.readouterr().out
    assert "mode realistic" in out and efficiency_for("a100").source in out
    assert main(["serve-plan", "llama3-8b", "--gpus", "2"]) == 0
    assert "mode peak" in capsys.readouterr().out
