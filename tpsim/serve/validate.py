"""Decode latency of plan.decode_latency set beside published inter-token latencies (Llama-3 70B).

Published: NVIDIA NIM for LLMs, the Performance page of its benchmarking guide (PUBLISHED[i]["source"]):
Llama-3.3-70B-Instruct, NIM container 1.8.0, 2 x H100 80G, profile "fp8 TP2", concurrency 1 (one
sequence at a time), ITL (inter-token latency, ms) for two input/output lengths.  Only rows whose GPU
count, precision, TP and lengths the stored page states beside them are taken; its Llama-3.1-70B and
NIM 1.5.0 tables reach us without those headings, so they are left out rather than guessed.

Llama-3.3-70B has Llama-3-70B's shapes (hidden 8192, 80 layers, 64 heads, 8 KV heads, ffn 28672,
vocabulary 128256; only RoPE's scaling and the context length differ), so the preset is llama3-70b.

Assumptions, one set for every row, none fitted to them:

    efficiency   peak: the datasheet roofline (hardware.H100, 3.35 TB/s), serve's only mode
    weights      fp8: the decoder layers' weights read at 1 byte each (weight_itemsize=1); the
                 embedding, the output layer, the KV cache (bf16) and the all-reduces (bf16) at 2
    all-reduce   the fastest of one-shot, two-shot and ring on the node (allreduce.py), named per row
    node         presets.nvlink_node(t, "h100"): DGX H100 NVSwitch, 450 GB/s per GPU, 2 us alpha
    context      the mean context over the decode: input + output / 2 tokens (a step's time is
                 linear in the context, so the mean step is the step at the mean context)
"""

from __future__ import annotations

import statistics

from tpsim import presets
from tpsim.hardware import device_spec
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.serve.plan import decode_latency

MODEL, DEVICE, NODE = "llama3-70b", "h100", "h100"
PRECISION_BYTES = {"bf16": None, "fp8": 1}  # bytes per decoder weight (None: the model's dtype)
_NIM = (
    "NVIDIA NIM for LLMs benchmarking guide 1.0.0, Performance, 'Llama-3.3-70b-instruct Results', "
    "Version 1.8.0, '2 x H100 80G', 'fp8 TP2', concurrency 1 "
    "(https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance.md)"
)
PUBLISHED: list[dict] = [
    dict(engine="NIM 1.8.0", tp=2, precision="fp8", input=5000, output=500, itl_ms=18.58, source=_NIM),
    dict(engine="NIM 1.8.0", tp=2, precision="fp8", input=500, output=2000, itl_ms=18.91, source=_NIM),
]
HARDWARE_NOTE = (
    "the page heads its tables '2 x H100 80G'; its Hardware Specifications section is not in the stored "
    "copy read here, so SXM (which the H100-SXM5 preset and the NVSwitch node assume) is an assumption"
)
UNPUBLISHED_TP = (2, 4, 8)  # predicted at bf16 too, where no attributable figure was found


def mean_context(inp: int, out: int) -> int:
    return inp + out // 2


def predict(tp: int, precision: str, context: int) -> dict:
    cfg = LLAMA_PRESETS[MODEL]
    node = presets.nvlink_node(tp, NODE)
    d = decode_latency(cfg, tp, 1, context, device_spec(DEVICE), node, PRECISION_BYTES[precision])
    return dict(seconds=d["seconds"], comm=d["comm"], allreduce=d["allreduce"], topology=node.name)


def report() -> dict:
    rows = []
    for p in PUBLISHED:
        context = mean_context(p["input"], p["output"])
        pred = predict(p["tp"], p["precision"], context)
        ms = 1e3 * pred["seconds"]
        rows.append(
            {
                **p,
                "context": context,
                "predicted_ms": ms,
                "comm_ms": 1e3 * pred["comm"],
                "allreduce": pred["allreduce"],
                "topology": pred["topology"],
                "error": ms / p["itl_ms"] - 1,
            }
        )
    errors = [abs(r["error"]) for r in rows]
    bf16 = [
        dict(tp=t, context=4096, predicted_ms=1e3 * predict(t, "bf16", 4096)["seconds"])
        for t in UNPUBLISHED_TP
    ]
    return {
        "model": MODEL,
        "config_source": LLAMA_PRESETS[MODEL].source,
        "device": device_spec(DEVICE).name,
        "settings": dict(
            efficiency="peak (datasheet roofline)",
            batch=1,
            allreduce="fastest of one-shot / two-shot / ring",
            node=presets.nvlink_node(2, NODE).source,
            context="input + output / 2",
            fp8="decoder weights at 1 byte; embedding, output layer, KV cache, all-reduces at bf16",
        ),
        "hardware_note": HARDWARE_NOTE,
        "comparisons": rows,
        "summary": dict(
            rows=len(rows), median_abs_error=statistics.median(errors), max_abs_error=max(errors)
        ),
        "bf16_unpublished": bf16,
    }
