"""Seconds of one layer's pieces (GEMMs, memory-bound passes, TP collectives, recomputation) and of the
logit layer, for one microbatch on one TP rank: what iteration.py and the stream timeline (timeline.py,
layer_ops.py) put together.  The kernels and their sources: kernels.py; the pricing: efficiency.py and
the cluster's collectives (cluster.py).
"""

from __future__ import annotations

from tpsim.efficiency import gemm_time, memory_time
from tpsim.plan.kernels import (
    CORE,
    CROSS_ENTROPY_BYTES,
    backward_gemms,
    backward_passes,
    kv_per_rank,
    layer_gemms,
    layer_passes,
)
from tpsim.plan.llama_memory import is_llama, padded_vocab


def _gemms(spec, eff, gemms, dtype) -> float:
    return sum(gemm_time(spec, eff, m, n, k, dtype, batch) for _, batch, m, n, k in gemms)


def _passes(spec, eff, passes: dict, scale: float) -> float:
    return sum(memory_time(spec, eff, 2 * scale * v) for v in passes.values() if v)


def layer_times(cfg, t: int, sp: bool, b: int, spec, eff, cluster, kernels: str, recompute: str) -> dict:
    """Seconds of one layer's pieces for one microbatch on one TP rank."""
    s, h, a, dt = cfg.seq_len, cfg.hidden, cfg.num_heads, cfg.dtype
    fwd = layer_gemms(s, b, h, a, t, cfg.ffn)
    passes = layer_passes(s, b, h, a, t, sp, kernels, cfg.ffn)
    back = backward_passes(s, b, h, a, t, sp, kernels, cfg.ffn)
    kv_grad = kv_grad_bytes = 0.0
    if is_llama(cfg):
        kv = cfg.num_kv_heads
        fwd = layer_gemms(s, b, h, a, t, cfg.ffn, kv_heads=kv, gated=True)
        passes = layer_passes(s, b, h, a, t, sp, kernels, cfg.ffn, llama=True, kv_heads=kv)
        back = {k: 2 * v for k, v in passes.items()}  # not derived op by op for the Llama's kernels: 2x
        if t > kv:  # each replicated KV head's k and v rows (2 d, h [+ 1]), all-reduced over its t / g ranks
            rows = 2 * kv_per_rank(a, kv, t, cfg.head_dim) * cfg.head_dim
            kv_grad_bytes = 2 * rows * (h + cfg.qkv_bias)
            kv_grad = cluster.all_reduce(t // kv, 1, kv_grad_bytes)
    core_passes = {k: passes[k] for k in ("mask", "softmax", "attention dropout")}
    nbytes = 2 * b * s * h
    if t == 1:
        tp = 0.0
    elif sp:
        tp = 4 * cluster.reduce_scatter(t, 1, nbytes)  # 2 all-gathers + 2 reduce-scatters
    else:
        tp = 2 * cluster.all_reduce(t, 1, nbytes)
    out: dict = {
        "forward_gemm": _gemms(spec, eff, fwd, dt),
        "forward_memory": _passes(spec, eff, passes, 1),
        "backward_gemm": _gemms(spec, eff, backward_gemms(fwd) + _flash_rerun(fwd, kernels), dt),
        "backward_memory": _passes(spec, eff, back, 1),
        "tp_forward": tp,
        "tp_backward": tp + kv_grad,
    }
    core = _gemms(spec, eff, [g for g in fwd if g[0] in CORE], dt) + _passes(spec, eff, core_passes, 1)
    out["recompute_compute"] = {
        "none": 0.0,
        "selective": core,
        "full": out["forward_gemm"] + out["forward_memory"],
    }[recompute]
    out["recompute_tp"] = tp if recompute == "full" else 0.0
    # for the stream timeline (timeline.py): each GEMM's time, and one TP collective's time and size S
    out["gemms"] = {g[0]: _gemms(spec, eff, [g], dt) for g in fwd + backward_gemms(fwd)}
    out["tp_each"] = 0.0 if t == 1 else tp / (4 if sp else 2)
    out["tp_bytes"] = 0.0 if t == 1 else nbytes
    out["kv_grad"], out["kv_grad_bytes"] = kv_grad, kv_grad_bytes  # replicated KV heads' grads (t > g)
    return out


def _flash_rerun(fwd, kernels: str) -> list:
    """FlashAttention's backward recomputes the scores: one more `scores` GEMM."""
    return [g for g in fwd if g[0] == "scores"] if kernels == "flash" else []


def logit_times(cfg, t: int, b: int, spec, eff, kernels: str = "fused") -> tuple[float, float]:
    """(forward, backward) seconds of the logit GEMM and the fp32 cross-entropy over V / t columns."""
    T, v, h = b * cfg.seq_len, cfg.vocab_size // t, cfg.hidden
    if is_llama(cfg):  # Megatron pads the vocabulary to a multiple of 128 t
        v = padded_vocab(cfg, t) // t
    g = [("logits", 1, T, v, h)]
    ce_f, ce_b = CROSS_ENTROPY_BYTES[kernels]  # bytes per logit element (kernels.py)
    f = _gemms(spec, eff, g, cfg.dtype) + memory_time(spec, eff, ce_f * T * v)
    return f, _gemms(spec, eff, backward_gemms(g), cfg.dtype) + memory_time(spec, eff, ce_b * T * v)
