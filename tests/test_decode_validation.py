"""The committed decode validation table (benchmarks/results/decode_validation.*) is what the model
computes now in both modes (peak, realistic), its published figures are the source's, and the fp8 rows
read 1-byte weights."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from tpsim import presets
from tpsim.efficiency import efficiency_for
from tpsim.hardware import device_spec
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.serve import validate
from tpsim.serve.plan import decode_latency, prefill_time

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def doc():
    return validate.report()


def test_committed_figures_are_regenerated(doc):
    committed = json.loads((RESULTS / "decode_validation.json").read_text())
    for key in ("published_ms", "tp", "batch"):
        np.testing.assert_allclose(
            [r[key] for r in doc["comparisons"]], [r[key] for r in committed["comparisons"]], rtol=1e-9
        )
    for mode in ("peak", "realistic"):
        for key in ("predicted_ms", "error", "context", "step_ms"):
            np.testing.assert_allclose(
                [r[mode][key] for r in doc["comparisons"]],
                [r[mode][key] for r in committed["comparisons"]],
                rtol=1e-9,
            )
        assert [r[mode]["mode"] for r in doc["comparisons"]] == [mode] * len(doc["comparisons"])
    assert (
        committed["summary"] == doc["summary"]
        and committed["efficiency_sources"] == doc["efficiency_sources"]
    )
    assert [r["source"] for r in doc["comparisons"]] == [r["source"] for r in committed["comparisons"]]


def test_committed_markdown_is_regenerated(doc):
    script = importlib.import_module("benchmarks.validate_decode")
    assert script.markdown(doc) == (RESULTS / "decode_validation.md").read_text() == script.DOCS.read_text()


def test_published_figures_are_the_sources(doc):
    nim = {(r["input"], r["output"]): r for r in doc["comparisons"] if r["kind"] == "itl"}
    assert {k: r["published_ms"] for k, r in nim.items()} == {(5000, 500): 18.58, (500, 2000): 18.91}
    for r in nim.values():
        assert (r["tp"], r["precision"], r["batch"]) == (2, "fp8", 1)
        assert "docs.nvidia.com/nim/benchmarking" in r["source"] and "fp8 TP2" in r["source"]
    vllm = {r["gpu"]: r for r in doc["comparisons"] if r["kind"] == "request"}
    assert {g: r["published_ms"] for g, r in vllm.items()} == {
        "h100": 2444.47,
        "a100": 3990.59,
        "h200": 2075.08,
    }
    for gpu, build in (("h100", 9555), ("a100", 9523), ("h200", 9513)):
        r = vllm[gpu]
        assert (r["tp"], r["precision"], r["batch"], r["input"], r["output"]) == (4, "bf16", 8, 32, 128)
        assert f"buildkite.com/vllm/performance-benchmark/builds/{build}" in r["source"]
    for r in doc["comparisons"]:
        for mode in ("peak", "realistic"):
            assert r[mode]["error"] == pytest.approx(r[mode]["predicted_ms"] / r["published_ms"] - 1)


@pytest.mark.parametrize("mode", ["peak", "realistic"])
def test_a_request_is_its_prefill_and_its_decode_steps(doc, mode):
    cfg = LLAMA_PRESETS["llama3-70b"]
    for r in (r for r in doc["comparisons"] if r["kind"] == "request"):
        spec, node = device_spec(r["gpu"]), presets.nvlink_node(r["tp"], r["gpu"])
        step = decode_latency(cfg, r["tp"], r["batch"], r["input"] + r["output"] // 2, spec, node, mode=mode)
        first = prefill_time(cfg, r["tp"], r["batch"] * r["input"], spec, node, mode=mode)
        expected = first["seconds"] + (r["output"] - 1) * step["seconds"]
        np.testing.assert_allclose(r[mode]["predicted_ms"], 1e3 * expected, rtol=1e-12)


def test_realistic_uses_the_training_models_efficiency(doc):
    """The same Efficiency per GPU as tpsim/plan/iteration.py (efficiency_for), nothing per row."""
    assert doc["efficiency_sources"] == {g: efficiency_for(g).source for g in ("h100", "a100", "h200")}
    s = doc["summary"]
    for mode in ("peak", "realistic"):
        errors = [abs(r[mode]["error"]) for r in doc["comparisons"]]
        assert s[mode]["max_abs_error"] == max(errors) and s[mode]["rows"] == len(errors)
    layer = doc["kernels"]["layer"]
    assert [k["kernel"] for k in layer][:2] == ["fused_add_rms_norm", "qkv"] and len(layer) == 10
    assert all(k["us"] >= k["memory_us"] for k in layer)


def test_fp8_reads_one_byte_per_decoder_weight():
    # the step at batch 1 is memory-bound: halving the decoder weights' bytes saves exactly their
    # bf16 read time, layers x (params per layer per rank) x 1 byte / bandwidth
    cfg, spec, t = LLAMA_PRESETS["llama3-70b"], device_spec("h100"), 2
    node = presets.nvlink_node(t, "h100")
    bf16 = decode_latency(cfg, t, 1, 1000, spec, node)
    fp8 = decode_latency(cfg, t, 1, 1000, spec, node, weight_itemsize=1)
    h, kv, f = cfg.hidden, cfg.num_kv_heads * cfg.head_dim, cfg.ffn_hidden
    per_layer = (h * (h + 2 * kv) + h * h + 3 * h * f) // t + 2 * h  # this rank's linears, both norms
    saved = cfg.num_layers * per_layer / spec.memory_bandwidth
    np.testing.assert_allclose(bf16["seconds"] - fp8["seconds"], saved, rtol=1e-9)
    assert fp8["comm"] == bf16["comm"]
