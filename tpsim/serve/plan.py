"""`serve_plan`: which TP degree to serve a Llama-style model with, on N GPUs of one kind.

For every t that divides N and fits the heads (KV heads split or replicated), N / t replicas each run:

    modes                    "peak": each layer one roofline call at the datasheet peak
                             (`DeviceSpec.time`); "realistic": each layer its kernels (kernels.py),
                             priced by the device's efficiency (efficiency.py), every kernel and
                             every all-reduce paying its launch.  Every result names its mode.
    decode step, per layer   read this rank's weights and its KV cache (memory-bound in mode peak),
                             2 b (params per rank) FLOPs;
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

The node's all-reduce alpha (presets.nvlink_node: 2 us end-to-end) is an assumption, not a measurement.
Not modelled: batched prefill, the logits' gather for sampling, attention's FLOPs (a decode step's are b x
context x heads x d per layer, small beside the weights' reads), compute/communication overlap.
"""

from __future__ import annotations

from tpsim import presets
from tpsim.efficiency import Efficiency, efficiency_for
from tpsim.hardware import device_spec
from tpsim.nn.gqa_qkv import valid_tp
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig
from tpsim.serve.allreduce import allreduce_times, by_size, fastest
from tpsim.serve.kernels import device_key, layer_kernels, price, step_kernels
from tpsim.serve.kv_cache import itemsize, kv_cache_bytes_per_token, max_cached_tokens, weight_bytes


def _config(model: str | LlamaConfig) -> LlamaConfig:
    if isinstance(model, LlamaConfig):
        return model
    if model not in LLAMA_PRESETS:
        from tpsim.nn.config import ConfigError

        raise ConfigError(f"unknown model {model!r}; valid: {', '.join(LLAMA_PRESETS)}")
    return LLAMA_PRESETS[model]


def _efficiency(spec, mode: str, efficiency: Efficiency | None) -> Efficiency | None:
    """The efficiency the mode prices kernels with: None in mode peak (the roofline)."""
    if efficiency is not None:
        return efficiency
    return efficiency_for(device_key(spec), mode)


def _mode(mode: str, efficiency: Efficiency | None) -> str:
    return mode if efficiency is None else f"{mode} (given efficiency: {efficiency.device})"


def _realistic(cfg, t, tokens, context, spec, eff, weight_itemsize, prefill, logit_rows) -> dict:
    """Kernel by kernel (kernels.py): per-layer [(name, seconds)], the layers' total and the step's rest."""
    layer = price(layer_kernels(cfg, t, tokens, context, weight_itemsize, prefill), spec, eff, cfg.dtype)
    rest = price(step_kernels(cfg, t, tokens, logit_rows), spec, eff, cfg.dtype)
    compute = cfg.num_layers * sum(s for _, s in layer) + sum(s for _, s in rest)
    return dict(compute=compute, layer_kernels=layer, step_kernels=rest)


def decode_latency(
    cfg: LlamaConfig,
    t: int,
    batch: int,
    context: int,
    spec,
    topology,
    weight_itemsize: int | None = None,
    *,
    mode: str = "peak",
    efficiency: Efficiency | None = None,
) -> dict:
    """Seconds per decode step of `batch` sequences holding `context` tokens each, on one replica.

    `weight_itemsize`: bytes per weight of the decoder layers, where they are stored narrower than
    cfg.dtype (1 for fp8 weights, as FP8 checkpoints quantize the linear layers of the blocks); the
    embedding and output layer, the KV cache, the all-reduces and the FLOP peak stay cfg.dtype's.
    `mode`: "peak", one roofline call per layer at the datasheet peak; "realistic", kernel by kernel
    (kernels.py) with the device's efficiency (or `efficiency`), each all-reduce paying a launch too."""
    eff = _efficiency(spec, mode, efficiency)
    size = itemsize(cfg)
    times = allreduce_times(t, batch * cfg.hidden * size, topology, cfg.dtype)
    algorithm = fastest(times)
    launch = eff.launch if eff is not None else 0.0
    comm = (2 * cfg.num_layers + 1) * (times[algorithm] + launch)  # each all-reduce: one kernel
    out: dict = dict(comm=comm, allreduce=algorithm, allreduce_times=times, mode=_mode(mode, efficiency))
    if eff is not None:
        real = _realistic(cfg, t, batch, context, spec, eff, weight_itemsize, False, batch)
        return dict(out, **real, seconds=real["compute"] + comm, efficiency_source=eff.source)
    scale = (weight_itemsize or size) / size
    head = cfg.vocab_size * cfg.hidden // t * size * (1 if cfg.tied_embeddings else 2)  # rows read, tables
    layer_weights = (weight_bytes(cfg, t) - head - cfg.hidden * size) / cfg.num_layers
    kv = kv_cache_bytes_per_token(cfg, t) / cfg.num_layers * batch * context
    layer = spec.time(2 * batch * layer_weights / size, scale * layer_weights + kv, cfg.dtype)
    logits = spec.time(2 * batch * cfg.vocab_size * cfg.hidden / t, head / 2, cfg.dtype)
    return dict(out, seconds=cfg.num_layers * layer + logits + comm, compute=cfg.num_layers * layer + logits)


def prefill_time(
    cfg: LlamaConfig,
    t: int,
    tokens: int,
    spec,
    topology,
    *,
    mode: str = "peak",
    efficiency: Efficiency | None = None,
) -> dict:
    """Seconds to prefill one sequence of `tokens` (the time to its first token) on one replica.

    Mode peak, per layer: 2 tokens (params per rank) FLOPs for the linears and 4 tokens^2 h/t for the
    attention scores and context (the whole square, as tpsim's layers compute it), the weights read
    once, one roofline call; mode realistic: kernel by kernel (kernels.py).  Both: 2 all-reduces of
    (tokens, h) per layer: large, so ring or two-shot; in mode realistic each pays a launch too.
    """
    eff = _efficiency(spec, mode, efficiency)
    size = itemsize(cfg)
    times = allreduce_times(t, tokens * cfg.hidden * size, topology, cfg.dtype)
    algorithm = fastest(times)
    launch = eff.launch if eff is not None else 0.0
    comm = (2 * cfg.num_layers + 1) * (times[algorithm] + launch)
    out: dict = dict(comm=comm, allreduce=algorithm, mode=_mode(mode, efficiency))
    if eff is not None:
        real = _realistic(cfg, t, tokens, tokens, spec, eff, None, True, 1)  # logits: the last token
        return dict(out, **real, seconds=real["compute"] + comm, efficiency_source=eff.source)
    head = cfg.vocab_size * cfg.hidden // t * size * (1 if cfg.tied_embeddings else 2)
    layer_weights = (weight_bytes(cfg, t) - head - cfg.hidden * size) / cfg.num_layers
    flops = 2 * tokens * layer_weights / size + 4 * tokens * tokens * cfg.hidden / t
    layer = spec.time(flops, layer_weights + 4 * tokens * cfg.hidden * size, cfg.dtype)
    logits = spec.time(2 * cfg.vocab_size * cfg.hidden / t, head / 2, cfg.dtype)  # the last token's only
    return dict(out, seconds=cfg.num_layers * layer + logits + comm)


def serve_plan(
    model,
    gpus: int,
    *,
    context: int = 4096,
    device="h100",
    topology: str = "nvlink",
    utilization: float = 0.9,
    mode: str = "peak",
) -> dict:
    """Every TP degree that fits on `gpus` devices, with its latency and throughput; the two rankings.
    `mode`: "peak" (datasheet roofline) or "realistic" (kernel by kernel, the device's efficiency)."""
    cfg, spec = _config(model), device_spec(device)
    eff = _efficiency(spec, mode, None)
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
            one = decode_latency(cfg, t, 1, context, spec, topo, efficiency=eff, mode=mode)
            first = prefill_time(cfg, t, context, spec, topo, efficiency=eff, mode=mode)
            row.update(
                prefill=first["seconds"], prefill_comm=first["comm"], prefill_allreduce=first["allreduce"]
            )
            full = decode_latency(cfg, t, b_max, context, spec, topo, efficiency=eff, mode=mode)
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
        mode=mode,
        efficiency_source=eff.source if eff is not None else "datasheet roofline",
        allreduce_launch=eff.launch if eff is not None else 0.0,  # added to each all-reduce below
        rows=rows,
        by_latency=[r["tp"] for r in sorted(fit, key=lambda r: r["latency"])],
        by_throughput=[r["tp"] for r in sorted(fit, key=lambda r: -r["throughput"])],
        allreduce_by_size=dict(tp=widest, rows=by_size(widest, topo, sizes, cfg.dtype)),
    )
