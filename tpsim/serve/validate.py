"""Decode latency of plan.decode_latency set beside published measurements of Llama-3 70B.

Two kinds of published figure, each row with its source (PUBLISHED):

    itl       NVIDIA NIM for LLMs, the Performance page of its benchmarking guide: Llama-3.3-70B-Instruct,
              NIM container 1.8.0, "2 x H100 80G", profile "fp8 TP2", concurrency 1 (one sequence at a
              time), inter-token latency (ms).  Predicted: one decode step of one sequence.
    request   vLLM's performance benchmark (Buildkite, one build per GPU): latency_llama70B_tp4, whose test
              file (vllm .buildkite/nightly-benchmarks/tests/latency-tests.json, as stored at commit
              d5ce92492d51; the build pages name "llama-3 70B" and show no commit or date) runs
              meta-llama/Meta-Llama-3-70B-Instruct at tensor_parallel_size 4 with dummy weights in the
              config's bfloat16; a batch of 8 prompts of 32 tokens, 128 output tokens; mean end-to-end
              latency.  Predicted: prefill_time of the 8 x 32 tokens + 127 decode steps of batch 8.

Only rows whose GPU, precision, TP and lengths the stored source states beside them are taken: the NIM
page's Llama-3.1-70B and NIM 1.5.0 tables reach us without those headings, and vLLM's serving tests
(ShareGPT prompts arriving at 1 QPS, so sometimes batched) measure no fixed batch: both are left out.

Llama-3.3-70B has Llama-3-70B's shapes (hidden 8192, 80 layers, 64 heads, 8 KV heads, ffn 28672,
vocabulary 128256; only RoPE's scaling and the context length differ), so the preset is llama3-70b.

Assumptions, one set for every row, none fitted to them:

    efficiency   both modes, every row: "peak", the datasheet roofline (hardware: H100 3.35, A100 2.039,
                 H200 4.8 TB/s), one call per layer; "realistic", kernel by kernel (serve/kernels.py)
                 with efficiency.efficiency_for(gpu), the same Efficiency the training model uses;
                 the NIM rows get vLLM's kernel list too (their engine's kernels are not published)
    weights      bf16 rows: 2 bytes; fp8 rows: the decoder layers' weights at 1 byte (weight_itemsize=1),
                 the embedding, output layer, KV cache and all-reduces at bf16
    all-reduce   the fastest of one-shot, two-shot and ring on the node (allreduce.py), named per row
    node         presets.nvlink_node(t, gpu): the DGX NVSwitch node of that GPU, 2 us alpha (assumed)
    context      the mean context over the decode: input + output / 2 tokens (a step's time is linear
                 in the context, so the mean step is the step at the mean context)
    prefill      (request rows) prefill_time of batch x input tokens as one sequence: its attention
                 square overcounts the batch's separate ones, a negligible share of the FLOPs here
"""

from __future__ import annotations

import statistics

from tpsim import presets
from tpsim.efficiency import Efficiency, efficiency_for, memory_time
from tpsim.hardware import device_spec
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.serve.kernels import layer_kernels
from tpsim.serve.plan import decode_latency, prefill_time

MODEL = "llama3-70b"
MODES = ("peak", "realistic")
PRECISION_BYTES = {"bf16": None, "fp8": 1}  # bytes per decoder weight (None: the model's dtype)
_NIM = (
    "NVIDIA NIM for LLMs benchmarking guide 1.0.0, Performance, 'Llama-3.3-70b-instruct Results', "
    "Version 1.8.0, '2 x H100 80G', 'fp8 TP2', concurrency 1 "
    "(https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance.md)"
)
_VLLM = (
    "vLLM performance benchmark, Buildkite build {build}, 'Latency tests' (input 32, output 128, batch 8), "
    "latency_llama70B_tp4 on '{label}', mean latency (https://buildkite.com/vllm/performance-benchmark/"
    "builds/{build}); test: vllm-project/vllm .buildkite/nightly-benchmarks/tests/latency-tests.json"
)
_NIM_ROW = dict(engine="NIM 1.8.0", kind="itl", gpu="h100", tp=2, precision="fp8", batch=1, source=_NIM)
_VLLM_ROW = dict(kind="request", tp=4, precision="bf16", batch=8, input=32, output=128)
PUBLISHED: list[dict] = [
    dict(**_NIM_ROW, input=5000, output=500, published_ms=18.58),
    dict(**_NIM_ROW, input=500, output=2000, published_ms=18.91),
    dict(**_VLLM_ROW, engine="vLLM CI #9555", gpu="h100", published_ms=2444.47),
    dict(**_VLLM_ROW, engine="vLLM CI #9523", gpu="a100", published_ms=3990.59),
    dict(**_VLLM_ROW, engine="vLLM CI #9513", gpu="h200", published_ms=2075.08),
]
for _row, _label in zip(PUBLISHED[2:], ("8xH100", "A100-SXM4-80GB", "H200"), strict=True):
    _row["source"] = _VLLM.format(build=_row["engine"].split("#")[1], label=_label)
HARDWARE_NOTE = (
    "NIM heads its tables '2 x H100 80G' and vLLM labels its run '8xH100'; neither stored copy says SXM, "
    "so the SXM parts of the presets (and their NVSwitch nodes) are an assumption for those rows"
)
UNPUBLISHED_TP = (2, 4, 8)  # predicted at bf16 too, beside no published figure


def mean_context(inp: int, out: int) -> int:
    return inp + out // 2


def predict(row: dict, mode: str = "peak") -> dict:
    """Milliseconds the row's published figure measures, as plan.decode_latency and prefill_time give
    them in `mode` ("peak" or "realistic": the training model's Efficiency of the row's GPU)."""
    cfg, t, b = LLAMA_PRESETS[MODEL], row["tp"], row["batch"]
    spec, node = device_spec(row["gpu"]), presets.nvlink_node(t, row["gpu"])
    context = mean_context(row["input"], row["output"])
    step = decode_latency(cfg, t, b, context, spec, node, PRECISION_BYTES[row["precision"]], mode=mode)
    out = dict(context=context, step_ms=1e3 * step["seconds"], comm_ms=1e3 * step["comm"])
    out.update(allreduce=step["allreduce"], topology=node.name, device=spec.name, mode=step["mode"])
    if row["kind"] == "itl":
        return dict(out, predicted_ms=out["step_ms"], prefill_ms=0.0)
    first = prefill_time(cfg, t, b * row["input"], spec, node, mode=mode)
    prefill_ms = 1e3 * first["seconds"]
    return dict(out, prefill_ms=prefill_ms, predicted_ms=prefill_ms + (row["output"] - 1) * out["step_ms"])


def kernel_breakdown(row: dict) -> list[dict]:
    """Mode realistic: one layer's kernels of the row's decode step, each with what decides its time
    ("compute" where efficiency.gemm_time's FLOP term exceeds its bytes' term, else "memory")."""
    cfg, spec = LLAMA_PRESETS[MODEL], device_spec(row["gpu"])
    eff = _efficiency(row["gpu"])
    ctx = mean_context(row["input"], row["output"])
    out = []
    for k in layer_kernels(cfg, row["tp"], row["batch"], ctx, PRECISION_BYTES[row["precision"]]):
        seconds, memory = k.time(spec, eff, cfg.dtype), memory_time(spec, eff, k.bytes_moved(eff))
        out.append(
            dict(kernel=k.name, us=1e6 * seconds, memory_us=1e6 * memory, bound=_bound(seconds, memory))
        )
    return out


def _efficiency(gpu: str) -> Efficiency:
    eff = efficiency_for(gpu, "realistic")
    assert eff is not None  # mode realistic always has one (or raises)
    return eff


def _bound(seconds: float, memory: float) -> str:
    return "compute" if seconds > memory * (1 + 1e-12) else "memory"


def report() -> dict:
    rows = []
    for p in PUBLISHED:
        row = dict(p)
        for mode in MODES:
            pred = predict(p, mode)
            row[mode] = {**pred, "error": pred["predicted_ms"] / p["published_ms"] - 1}
        rows.append(row)
    summary = {}
    for mode in MODES:
        errors = [abs(r[mode]["error"]) for r in rows]
        summary[mode] = dict(
            rows=len(rows),
            median_abs_error=statistics.median(errors),
            max_abs_error=max(errors),
            below=sum(r[mode]["error"] < 0 for r in rows),
        )
    cfg, h100 = LLAMA_PRESETS[MODEL], device_spec("h100")
    bf16 = [
        dict(
            tp=t,
            context=4096,
            **{
                f"{mode}_ms": 1e3
                * decode_latency(cfg, t, 1, 4096, h100, presets.nvlink_node(t, "h100"), mode=mode)["seconds"]
                for mode in MODES
            },
        )
        for t in UNPUBLISHED_TP
    ]
    sources = {g: _efficiency(g).source for g in dict.fromkeys(p["gpu"] for p in PUBLISHED)}
    return {
        "model": MODEL,
        "config_source": cfg.source,
        "modes": list(MODES),
        "settings": dict(
            peak="the datasheet roofline, one call per layer",
            realistic="each kernel of the layer (tpsim/serve/kernels.py: vLLM's Llama kernels) through "
            "efficiency.gemm_time / memory_time with the training model's Efficiency of the GPU, a launch "
            "per kernel and per all-reduce",
            allreduce="fastest of one-shot / two-shot / ring",
            node="presets.nvlink_node(t, gpu), 2 us alpha (an assumption)",
            context="input + output / 2",
            fp8="decoder weights at 1 byte; embedding, output layer, KV cache, all-reduces at bf16; "
            "GEMMs at the bf16 FLOP peak",
            request="prefill_time(batch x input) + (output - 1) decode steps",
        ),
        "efficiency_sources": sources,
        "hardware_note": HARDWARE_NOTE,
        "comparisons": rows,
        "summary": summary,
        "kernels": dict(
            row=PUBLISHED[2]["engine"], gpu=PUBLISHED[2]["gpu"], layer=kernel_breakdown(PUBLISHED[2])
        ),
        "bf16_unpublished": bf16,
    }
