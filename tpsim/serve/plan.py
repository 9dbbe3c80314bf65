"""`serve_plan`: which TP degree to serve a Llama-style model with, on N GPUs of one kind.

For every t that divides N and fits the heads (KV heads split or replicated), N / t replicas each run:

    decode step, per layer   read this rank's weights and its KV cache (memory-bound: the device's
                             roofline, `DeviceSpec.time`), 2 b (params per rank) FLOPs;
                             2 all-reduces of (b, h), timed for one-shot, two-shot and ring on the
                             topology, the fastest taken (allreduce.py)
    per step                 the embedding's all-reduce; the output layer's V/t rows read
    latency(b)               the sum: seconds per generated token for a batch of b sequences

    prefill                  one sequence of `context` tokens: compute-bound linears and attention,
                             2 large all-reduces per layer (prefill_time): the time to first token
    all-reduce by size       one-shot, two-shot and ring at the widest t, for decode batches of 1, 8, 64
                             and 512 sequences (b h elements) and for a prefill of `context` tokens
    by latency               latency(1), the time per token of one sequence alone
    by throughput            replicas x b_max / latency(b_max), b_max the sequences of `context`
                             tokens whose KV cache fits (kv_cache.py)

Not modelled: batched prefill, the logits' gather for sampling, attention's FLOPs (a decode step's are b x
context x heads x d per layer, small beside the weights' reads), compute/communication overlap.
"""

from __future__ import annotations

from tpsim import presets
from tpsim.hardware import device_spec
from tpsim.nn.gqa_qkv import valid_tp
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig
from tpsim.serve.allreduce import allreduce_times, by_size, fastest
from tpsim.serve.kv_cache import itemsize, kv_cache_bytes_per_token, max_cached_tokens, weight_bytes


def _config(model: str | LlamaConfig) -> LlamaConfig:
    if isinstance(model, LlamaConfig):
        return model
    if model not in LLAMA_PRESETS:
        from tpsim.nn.config import ConfigError

        raise ConfigError(f"unknown model {model!r}; valid: {', '.join(LLAMA_PRESETS)}")
    return LLAMA_PRESETS[model]


def decode_latency(
    cfg: LlamaConfig, t: int, batch: int, context: int, spec, topology, weight_itemsize: int | None = None
) -> dict:
    """Seconds per decode step of `batch` sequences holding `context` tokens each, on one replica.

    `weight_itemsize`: bytes per weight of the decoder layers, where they are stored narrower than
    cfg.dtype (1 for fp8 weights, as FP8 checkpoints quantize the linear layers of the blocks); the
    embedding and output layer, the KV cache, the all-reduces and the FLOP peak stay cfg.dtype's."""
    size = itemsize(cfg)
    scale = (weight_itemsize or size) / size
    head = cfg.vocab_size * cfg.hidden // t * size * (1 if cfg.tied_embeddings else 2)  # rows read, tables
    layer_weights = (weight_bytes(cfg, t) - head - cfg.hidden * size) / cfg.num_layers
    kv = kv_cache_bytes_per_token(cfg, t) / cfg.num_layers * batch * context
    layer = spec.time(2 * batch * layer_weights / size, scale * layer_weights + kv, cfg.dtype)
    logits = spec.time(2 * batch * cfg.vocab_size * cfg.hidden / t, head / 2, cfg.dtype)
    times = allreduce_times(t, batch * cfg.hidden * size, topology, cfg.dtype)
    algorithm = fastest(times)
    comm = (2 * cfg.num_layers + 1) * times[algorithm]
    return dict(
        seconds=cfg.num_layers * layer + logits + comm,
        compute=cfg.num_layers * layer + logits,
        comm=comm,
        allreduce=algorithm,
        allreduce_times=times,
    )


def prefill_time(cfg: LlamaConfig, t: int, tokens: int, spec, topology) -> dict:
    """Seconds to prefill one sequence of `tokens` (the time to its first token) on one replica.

    Per layer: 2 tokens (params per rank) FLOPs for the linears and 4 tokens^2 h/t for the attention
    scores and context (the whole square, as tpsim's layers compute it), the weights read once; and
    2 all-reduces of (tokens, h): large, so ring or two-shot.
    """
    size = itemsize(cfg)
    head = cfg.vocab_size * cfg.hidden // t * size * (1 if cfg.tied_embeddings else 2)
    layer_weights = (weight_bytes(cfg, t) - head - cfg.hidden * size) / cfg.num_layers
    flops = 2 * tokens * layer_weights / size + 4 * tokens * tokens * cfg.hidden / t
    layer = spec.time(flops, layer_weights + 4 * tokens * cfg.hidden * size, cfg.dtype)
    logits = spec.time(2 * cfg.vocab_size * cfg.hidden / t, head / 2, cfg.dtype)  # the last token's only
    times = allreduce_times(t, tokens * cfg.hidden * size, topology, cfg.dtype)
    algorithm = fastest(times)
    comm = (2 * cfg.num_layers + 1) * times[algorithm]
    return dict(seconds=cfg.num_layers * layer + logits + comm, comm=comm, allreduce=algorithm)


def serve_plan(
    model,
    gpus: int,
    *,
    context: int = 4096,
    device="h100",
    topology: str = "nvlink",
    utilization: float = 0.9,
) -> dict:
    """Every TP degree that fits on `gpus` devices, with its latency and throughput; the two rankings."""
    cfg, spec = _config(model), device_spec(device)
    gpu = str(device).lower() if str(device).lower() in presets.NVLINK else "h100"
    rows = []
    for t in (t for t in valid_tp(cfg.num_heads, cfg.num_kv_heads, gpus) if gpus % t == 0):
        topo = presets.nvlink_node(t, gpu) if topology == "nvlink" else presets.preset(topology, t)
        tokens = max_cached_tokens(cfg, t, spec.memory, utilization)
        b_max = tokens // context
        row = dict(
            tp=t,
            replicas=gpus // t,
            weights_per_device=weight_bytes(cfg, t),
            kv_bytes_per_token=kv_cache_bytes_per_token(cfg, t),
            kv_replicas=max(t // cfg.num_kv_heads, 1),
            max_tokens=tokens,
            max_batch=b_max,
            fits=b_max >= 1,
        )
        if row["fits"]:
            one = decode_latency(cfg, t, 1, context, spec, topo)
            first = prefill_time(cfg, t, context, spec, topo)
            row.update(
                prefill=first["seconds"], prefill_comm=first["comm"], prefill_allreduce=first["allreduce"]
            )
            full = decode_latency(cfg, t, b_max, context, spec, topo)
            row.update(
                latency=one["seconds"],
                latency_comm=one["comm"],
                allreduce=one["allreduce"],
                allreduce_times=one["allreduce_times"],
                throughput=row["replicas"] * b_max / full["seconds"],
                allreduce_at_max_batch=full["allreduce"],
            )
        rows.append(row)
    fit = [r for r in rows if r["fits"]]
    widest = max((r["tp"] for r in fit), default=1)
    topo = presets.nvlink_node(widest, gpu) if topology == "nvlink" else presets.preset(topology, widest)
    sizes = [cfg.hidden * itemsize(cfg) * b for b in (1, 8, 64, 512)] + [context * cfg.hidden * itemsize(cfg)]
    return dict(
        model=cfg.name,
        source=cfg.source,
        gpus=gpus,
        context=context,
        device=spec.name,
        utilization=utilization,
        rows=rows,
        by_latency=[r["tp"] for r in sorted(fit, key=lambda r: r["latency"])],
        by_throughput=[r["tp"] for r in sorted(fit, key=lambda r: -r["throughput"])],
        allreduce_by_size=dict(tp=widest, rows=by_size(widest, topo, sizes, cfg.dtype)),
    )
