"""Lesson 12 exercises: TP for inference (tpsim.serve), on Llama-3 70B and one 8 x H100 node.

    12.1 kv_per_token_t16           KV cache bytes per token per device at t = 16 (KV heads replicated)
    12.2 fastest_decode_allreduce   one-shot, two-shot or ring for a decode step of 32 sequences at t = 8
    12.3 max_batch_t4               sequences of 8192 tokens whose KV cache fits at t = 4
"""

from __future__ import annotations

from tpsim import presets
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.hardware import device_spec
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.report import fmt_bytes, fmt_time, table
from tpsim.serve import allreduce_times, kv_cache_bytes_per_token, max_cached_tokens, weight_bytes
from tpsim.serve.allreduce import ALGORITHMS, fastest
from tpsim.serve.kv_cache import layout

MODEL = LLAMA_PRESETS["llama3-70b"]


def _kv_per_token_t16() -> Measured:
    cfg = MODEL
    per = {t: kv_cache_bytes_per_token(cfg, t) for t in (1, 8, 16)}
    lay = layout(cfg, 16)
    trace = table(
        [[t, layout(cfg, t).kv_local, f"x{layout(cfg, t).replicas}", fmt_bytes(v)] for t, v in per.items()],
        ["t", "KV heads/rank", "KV copies", "KV/token/device"],
        f"{cfg.name}, {cfg.dtype}: kv_cache_bytes_per_token",
    )
    return Measured(
        per[16],
        f"At t = 16 each rank holds {lay.kv_local} KV head (each of the {cfg.num_kv_heads} on "
        f"{lay.replicas} ranks): 2 x {cfg.num_layers} layers x {lay.kv_local} x {cfg.head_dim} x 2 B = "
        f"{fmt_bytes(per[16])}, "
        "the same as at t = 8; past t = g the cache per device stops shrinking.",
        traps=(
            (per[1] // 16, "the whole cache split 16 ways, as if 8 KV heads could be halved; none can"),
            (per[1], "the whole model's cache per token, all 8 KV heads on one device"),
        ),
        trace=trace,
    )


def _fastest_decode_allreduce() -> Measured:
    t, batch = 8, 32
    nbytes = batch * MODEL.hidden * 2
    times = allreduce_times(t, nbytes, presets.preset("dgx-h100", t))
    best = fastest(times)
    listing = ", ".join(f"{a} {fmt_time(times[a])}" for a in ALGORITHMS)
    return Measured(
        best,
        f"A decode step of {batch} sequences all-reduces {batch} x {MODEL.hidden} x 2 B = "
        f"{fmt_bytes(nbytes)}. "
        f"The simulator ran the three on 8 x H100 (dgx-h100, α-β at datasheet NVLink bandwidth, α 2 us "
        f"assumed): {listing}. One-shot sends (t - 1) S = {fmt_bytes((t - 1) * nbytes)} out of each GPU, "
        "which no longer hides behind one α; ring pays 2 (t - 1) = 14 α's.",
    )


def _max_batch_t4() -> Measured:
    cfg, t, context = MODEL, 4, 8192
    memory = device_spec("h100").memory
    tokens = max_cached_tokens(cfg, t, memory)
    per = kv_cache_bytes_per_token(cfg, t)
    full = (memory - weight_bytes(cfg, t)) // per // context
    return Measured(
        tokens // context,
        f"0.9 x {fmt_bytes(memory)} minus {fmt_bytes(weight_bytes(cfg, t))} of weights leaves room for "
        f"{tokens:,} tokens of {fmt_bytes(per)} each: {tokens:,} // {context} = {tokens // context} "
        "sequences.",
        traps=(
            (tokens // 4096, "the sequences of 4096 tokens, not 8192"),
            (full, "what all 80 GiB would hold, without vLLM's 10 % headroom"),
            (max_cached_tokens(cfg, 8, memory) // context, "the count at t = 8"),
        ),
    )


kv_per_token_t16 = Prediction(
    "12.1",
    "Predict, then run: Llama-3 70B (8 KV heads, 80 layers, head_dim 128, bfloat16) served at t = 16. "
    "How many bytes of KV cache does one cached token take on each device?",
    _kv_per_token_t16,
    unit="bytes",
    hint="count the KV heads each rank must hold when there are more ranks than KV heads; "
    "K and V, every layer",
)
fastest_decode_allreduce = Exercise(
    "12.2",
    "Llama-3 70B at t = 8 on one DGX H100 decodes a batch of 32 sequences. Which all-reduce is fastest for "
    "one decode step's (1, 32, 8192) bfloat16 activations: one-shot, two-shot or ring?",
    _fastest_decode_allreduce,
    kind="choice",
    choices=ALGORITHMS,
    hint="work out the message size; then weigh each algorithm's α's (steps) against the bytes one GPU sends",
)
max_batch_t4 = Exercise(
    "12.3",
    "Llama-3 70B at t = 4 on H100 80 GB, 90 % of memory usable (vLLM's default): how many sequences of "
    "8192 tokens can decode together, their whole KV cache resident?",
    _max_batch_t4,
    hint="free memory is 0.9 x capacity minus this rank's weights; divide by the KV bytes per token "
    "at t = 4, then by the tokens per sequence",
)

EXERCISES = [kv_per_token_t16, fastest_decode_allreduce, max_batch_t4]
