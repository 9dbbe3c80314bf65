"""A Llama's parameters and activations per device, for the closed-form training model (memory_train.py).

Parameters on one TP rank (tpsim.nn.Llama's layout; n query heads, g KV heads of d, g_t = g / t or 1
when t > g, as gqa_qkv.KVLayout; ffn f; vocabulary padded to V', a multiple of 128 t, as Megatron's
--make-vocab-size-divisible-by 128 and as `tpsim model` simulates it):

    layer      (n/t + 2 g_t) d h [+ (n/t + 2 g_t) d qkv biases] + h h/t + 3 h f/t + 2h (two RMSNorms)
    stage      L/pp layers, plus at pp = 1 the embedding and the untied output layer (2 V' h / t; one
               table if tied) and the final RMSNorm h; at pp > 1 the last stage, the heavier: its
               output layer V' h / t and the final RMSNorm

Activations one layer saves for its backward (16-bit, no dropout, so no masks), per TP rank; "sp"
tensors are split by t only under sequence parallelism:

    RMSNorm 1 input, the QKV input          sp    2 s b h each
    each RMSNorm's fp32 1 / rms per token   sp    4 s b each
    q and k after RoPE, v                   tp    2 s b (n/t + 2 g_t) d
    softmax output P (for dV and dS)        core  2 b n s^2 / t     (dropped by selective or flash)
    the output projection's input           tp    2 s b h / t
    RMSNorm 2 input, the gate-up input      sp    2 s b h each
    SwiGLU's input (gate and up)            tp    4 s b f / t
    the down projection's input             tp    2 s b f / t

Not counted: FlashAttention's log-sum-exp (4 b n s / t).  Full recomputation keeps the layer's input.
"""

from __future__ import annotations

from tpsim.errors import RecomputeError
from tpsim.nn.llama_config import LlamaConfig
from tpsim.plan.activations import RECOMPUTE
from tpsim.plan.kernels import kv_per_rank


def is_llama(cfg) -> bool:
    return isinstance(cfg, LlamaConfig)


def padded_vocab(cfg: LlamaConfig, t: int) -> int:
    """V rounded up to a multiple of 128 t (Megatron's --make-vocab-size-divisible-by 128, times TP)."""
    step = 128 * t
    return -(-cfg.vocab_size // step) * step


def layer_parameters(cfg: LlamaConfig, t: int) -> int:
    """One Llama layer's parameters on one TP rank (replicated KV heads counted once per rank)."""
    h, d, n = cfg.hidden, cfg.head_dim, cfg.num_heads
    qkv = (n // t + 2 * kv_per_rank(n, cfg.num_kv_heads, t, d)) * d
    return qkv * h + cfg.qkv_bias * qkv + h * h // t + 3 * h * cfg.ffn_hidden // t + 2 * h


def stage_parameters(cfg: LlamaConfig, t: int, pp: int) -> int:
    """Parameters on one device of the heaviest stage (see the module docstring)."""
    h, table = cfg.hidden, padded_vocab(cfg, t) // t * cfg.hidden
    tables = table * (1 if cfg.tied_embeddings or pp > 1 else 2)
    return cfg.num_layers // pp * layer_parameters(cfg, t) + tables + h


def layer_activation_bytes(cfg: LlamaConfig, b: int, t: int, sp: bool, recompute: str) -> float:
    """Bytes one Llama layer holds between its forward and its backward, per TP rank."""
    if recompute not in RECOMPUTE:
        raise RecomputeError(f"unknown recompute mode {recompute!r}; valid: {', '.join(RECOMPUTE)}")
    s, h, n, d, f = cfg.seq_len, cfg.hidden, cfg.num_heads, cfg.head_dim, cfg.ffn_hidden
    rep = s * b * h / (t if sp else 1)
    if recompute == "full":
        return 2 * rep
    rstd = 2 * 4 * s * b / (t if sp else 1)
    qkv = 2 * s * b * (n // t + 2 * kv_per_rank(n, cfg.num_kv_heads, t, d)) * d
    core = 0.0 if recompute == "selective" else 2 * b * n * s * s / t
    return 4 * 2 * rep + rstd + qkv + core + 2 * s * b * h / t + 4 * s * b * f / t + 2 * s * b * f / t
