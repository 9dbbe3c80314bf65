"""The kernels of one Megatron GPT layer on one TP rank: its GEMMs and its memory-bound ops.

GEMMs, forward, per TP rank (T = b s tokens, d = h / a, t = TP degree); `batch` GEMMs (m, k) @ (k, n):

    qkv      T x h   @ h x 3h/t
    scores   (b a/t) x [s x d @ d x s]           the attention core
    context  (b a/t) x [s x s @ s x d]           the attention core
    proj     T x h/t @ h/t x h
    fc1      T x h   @ h x f/t
    fc2      T x f/t @ f/t x h

Backward runs two GEMMs per forward GEMM: dX = dY W^T (m, k, n) and dW = X^T dY (k, n, m).

Memory-bound ops are counted in element passes (each element read or written once is one pass) and
priced at 2 bytes per element.  `kernels` picks the software: "unfused" is Megatron-LM 2019 (mask
as a multiply and a subtract, softmax, dropout and bias adds as separate PyTorch ops); "fused" is
Megatron 2020+ (fused scale-mask-softmax, bias-GeLU and bias-dropout-add); "flash" is fused plus
FlashAttention (Dao et al. 2022): the attention core's (b a s^2) scores never reach memory, the kernel
reads Q, K, V and writes the output, and its backward recomputes the scores (one more `scores` GEMM).
Backward moves twice the forward's passes (it reads the saved input and the incoming gradient, and
writes a gradient).

A Llama layer (kv_heads = g KV heads of d features, gated = SwiGLU; tpsim/nn/gqa_qkv.py's layout: KV
heads split when t divides g, else one KV head per rank, replicated t / g times):

    qkv      T x h   @ h x (a/t + 2 g_t) d        g_t = g / t, or 1 when t > g
    fc1      T x h   @ h x 2f/t                   gate and up, fused (Megatron's gated linear_fc1)
    scores, context, proj and fc2 as GPT's        GQA shares K and V, but QK^T and PV run per query head

Its memory-bound ops (llama_passes): RMSNorm, priced as the fused LayerNorm (read x, write y); RoPE
on q and k (Megatron-core's apply_rotary_pos_emb, fused: read and write each once; unfused
rotate_half, two multiplies and an add: 9 passes); SwiGLU (fused: read gate and up, write f/t; unfused
silu then the multiply: 5 passes of f/t); residual adds without bias or dropout (read two, write one);
no attention dropout; FlashAttention reads Q, K, V (g_t heads each for K, V) and writes O.
"""

from __future__ import annotations

from tpsim.errors import KernelsError
from tpsim.nn.gqa_qkv import KVLayout

KERNELS = ("unfused", "fused", "flash")
CORE = ("scores", "context")


def layer_gemms(
    s: int,
    b: int,
    h: int,
    a: int,
    t: int,
    ffn: int | None = None,
    *,
    kv_heads: int | None = None,
    gated: bool = False,
) -> list[tuple[str, int, int, int, int]]:
    """[(name, batch, m, n, k)] of one layer's forward on one TP rank.  kv_heads: GQA's KV heads (None:
    MHA, GPT's 3h/t); gated: SwiGLU's fused gate-up fc1 (2f/t columns)."""
    f, T, d = ffn or 4 * h, b * s, h // a
    qkv = 3 * h // t if kv_heads is None else (a // t + 2 * kv_per_rank(a, kv_heads, t, d)) * d
    return [
        ("qkv", 1, T, qkv, h),
        ("scores", b * a // t, s, s, d),
        ("context", b * a // t, s, d, s),
        ("proj", 1, T, h, h // t),
        ("fc1", 1, T, (2 if gated else 1) * f // t, h),
        ("fc2", 1, T, h, f // t),
    ]


def kv_per_rank(a: int, kv_heads: int, t: int, d: int) -> int:
    """KV heads on one TP rank: g / t split, or 1 replicated (gqa_qkv.KVLayout, which refuses other t)."""
    return KVLayout(a, kv_heads, d, t).kv_local


def backward_gemms(gemms):
    """dX (m, k, n) and dW (k, n, m) of each forward GEMM (name, batch, m, n, k)."""
    out = []
    for name, batch, m, n, k in gemms:
        out += [(f"{name}.dx", batch, m, k, n), (f"{name}.dw", batch, k, n, m)]
    return out


def layer_passes(
    s: int,
    b: int,
    h: int,
    a: int,
    t: int,
    sp: bool,
    kernels: str,
    ffn=None,
    *,
    llama: bool = False,
    kv_heads: int | None = None,
) -> dict[str, float]:
    """Element passes of one layer's forward memory-bound ops on one TP rank, by op.  llama: a Llama
    layer's, with kv_heads KV heads (None: MHA) (llama_passes)."""
    if kernels not in KERNELS:
        raise KernelsError(f"unknown kernel set {kernels!r}; valid: {', '.join(KERNELS)}")
    if llama:
        return llama_passes(s, b, h, a, t, sp, kernels, ffn or 4 * h, kv_heads or a)
    f, T = ffn or 4 * h, b * s
    rep = T * h / (t if sp else 1)  # the replicated regions' tensors (split by t under SP)
    core = 0.0 if kernels == "flash" else b * a * s * s / t  # flash: the scores stay on chip
    unfused = kernels == "unfused"
    return {
        "layernorm x2": 2 * 2 * rep,  # read x, write y
        "bias-dropout-add x2": 2 * (7.5 if unfused else 3.5) * rep,  # fused: read x and residual, write, mask
        "mask": 4 * core if unfused else 0.0,  # x * mask, then - 10000 (1 - mask): two read-write passes
        "softmax": 2 * core,
        "attention dropout": 2.5 * core,  # read, write, a 1-byte mask (half a 2-byte pass)
        "context transpose": 2 * T * h / t,  # (b a, s, d) back to (s, b, h) before proj
        "flash attention io": 4 * T * h / t if kernels == "flash" else 0.0,  # read Q, K, V, write O
        "bias-gelu": (4 if unfused else 2) * T * f / t,
    }


def llama_passes(
    s: int, b: int, h: int, a: int, t: int, sp: bool, kernels: str, f: int, kv_heads: int
) -> dict[str, float]:
    """A Llama layer's forward element passes on one TP rank (see the module docstring); GPT's keys
    for the attention core, so selective recomputation finds them."""
    T, d = b * s, h // a
    rep = T * h / (t if sp else 1)
    q, kv = T * a // t * d, T * kv_per_rank(a, kv_heads, t, d) * d  # q's and k's (or v's) elements
    core = 0.0 if kernels == "flash" else b * a * s * s / t
    unfused = kernels == "unfused"
    return {
        "rmsnorm x2": 2 * 2 * rep,  # read x, write y
        "residual add x2": 2 * 3 * rep,  # read x and the residual, write
        "rope q, k": (9 if unfused else 2) * (q + kv),
        "mask": 4 * core if unfused else 0.0,
        "softmax": 2 * core,
        "attention dropout": 0.0,  # Llamas train without it
        "context transpose": 2 * T * h / t,
        "flash attention io": 2 * q + 2 * kv if kernels == "flash" else 0.0,  # read Q, K, V, write O
        "swiglu": (5 if unfused else 3) * T * f / t,  # fused: read gate and up, write their product
    }
