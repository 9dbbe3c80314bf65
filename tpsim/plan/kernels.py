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
priced at 2 bytes per element.  `kernels` picks the software: "unfused" is Megatron-LM 2019 (the
code of NVIDIA/Megatron-LM a1d04b7 on NGC 19.05's PyTorch, op by op: mask
as a multiply and a subtract, softmax, dropout and bias adds as separate PyTorch ops, the QKV bias
added after the GEMM, q and k scaled and copied before the batched GEMMs); "fused" is Megatron 2020+
(fused scale-mask-softmax, bias-GeLU and bias-dropout-add, the scale inside the GEMM, strided batched
GEMMs without copies); "flash" is fused plus FlashAttention (Dao et al. 2022): the attention core's
(b a s^2) scores never reach memory, the kernel reads Q, K, V and writes the output, and its backward
recomputes the scores (one more `scores` GEMM).  `layer_passes` counts the forward, op by op;
`backward_passes` the backward of the same ops, op by op (a backward reads what its op saved and the
incoming gradient and writes one gradient, so it is not a fixed multiple of the forward).

Outside the layers each kernel set also fixes, per iteration: OPTIMIZER_BYTES (the optimizer step's
bytes per parameter), LOCAL_DDP_BYTES (the gradient copies of Megatron's own DDP wrapper, which runs
at any dp, one GPU included) and CROSS_ENTROPY_BYTES (the loss over the logits, forward and backward).

A Llama layer (kv_heads = g KV heads of d features, gated = SwiGLU; tpsim/nn/gqa_qkv.py's layout: KV
heads split when t divides g, else one KV head per rank, replicated t / g times):

    qkv      T x h   @ h x (a/t + 2 g_t) d        g_t = g / t, or 1 when t > g
    fc1      T x h   @ h x 2f/t                   gate and up, fused (Megatron's gated linear_fc1)
    scores, context, proj and fc2 as GPT's        GQA shares K and V, but QK^T and PV run per query head

Its memory-bound ops (llama_passes): RMSNorm, priced as the fused LayerNorm (read x, write y); RoPE
on q and k (Megatron-core's apply_rotary_pos_emb, fused: read and write each once; unfused
rotate_half, two multiplies and an add: 9 passes); SwiGLU (fused: read gate and up, write f/t; unfused
silu then the multiply: 5 passes of f/t); residual adds without bias or dropout (read two, write one);
no attention dropout; FlashAttention reads Q, K, V (g_t heads each for K, V) and writes O.  Their
backward is priced at twice these passes (iteration.py): not derived op by op as GPT's is.
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
    """Element passes of one layer's forward memory-bound ops on one TP rank, by op.

    Sources: Megatron-LM 2019 is NVIDIA/Megatron-LM a1d04b7 mpu/transformer.py and mpu/layers.py on the
    PyTorch of NGC 19.05 (its docker/Dockerfile); Megatron 2020 is megatron/model/transformer.py after
    51a2e6b ("Various speed optimizations", 2020-09).

    llama: a Llama layer's, with kv_heads KV heads (None: MHA) (llama_passes).
    """
    if kernels not in KERNELS:
        raise KernelsError(f"unknown kernel set {kernels!r}; valid: {', '.join(KERNELS)}")
    if llama:
        return llama_passes(s, b, h, a, t, sp, kernels, ffn or 4 * h, kv_heads or a)
    f, T = ffn or 4 * h, b * s
    rep = T * h / (t if sp else 1)  # the replicated regions' tensors (split by t under SP)
    H = T * h / t  # q, k, v or the context on this rank
    core = 0.0 if kernels == "flash" else b * a * s * s / t  # flash: the scores stay on chip
    unfused = kernels == "unfused"
    return {
        "layernorm x2": 2 * 2 * rep,  # read x, write y
        # ColumnParallelLinear calls F.linear on a 3-D input: matmul, then `output += bias` (read, write);
        # flash stands for today's stack, whose linear adds the bias in the GEMM's epilogue
        "qkv bias add": 2 * 3 * H if kernels != "flash" else 0.0,
        # 2019: query_layer / norm_factor and key_layer.transpose(-1, -2) / norm_factor (read, write
        # each); 2020+: baddbmm(alpha=1 / norm_factor) scales inside the GEMM
        "q, k scaling": 2 * 2 * H if unfused else 0.0,
        # 2019: torch.matmul on 4-D operands runs expand().contiguous() (ATen LinearAlgebra.cpp) on q, k^T
        # and v, each a permuted [b, s, np, hn] layout (a division's output keeps its input's strides:
        # TensorIterator::allocate_outputs); 2020+: bmm / baddbmm on strided [s, b, np, hn] views
        "q, k, v copies": 3 * 2 * H if unfused else 0.0,
        "bias-dropout-add x2": 2 * (7.5 if unfused else 3.5) * rep,  # fused: read x and residual, write, mask
        "mask": 4 * core if unfused else 0.0,  # x * mask, then - 10000 (1 - mask): two read-write passes
        # 2019: NGC 19.05 predates PyTorch's persistent softmax (pytorch/pytorch#20827, opened 2019-05-22,
        # "2-10x faster" for rows <= 1024); its cunn_SoftMaxForward reads a row for the max, again for
        # the sum of exponentials, and again to write.  2020+: one read, one write
        "softmax": (4 if unfused else 2) * core,
        "attention dropout": 2.5 * core,  # read, write, a 1-byte mask (half a 2-byte pass)
        "context transpose": 2 * H,  # (b a, s, d) back to (s, b, h) before proj
        "flash attention io": 4 * H if kernels == "flash" else 0.0,  # read Q, K, V, write O
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


def backward_passes(
    s: int, b: int, h: int, a: int, t: int, sp: bool, kernels: str, ffn=None
) -> dict[str, float]:
    """Element passes of the backward of each op of `layer_passes` (the same keys) on one TP rank."""
    fwd = layer_passes(s, b, h, a, t, sp, kernels, ffn)  # validates `kernels`
    f, T = ffn or 4 * h, b * s
    rep, H = T * h / (t if sp else 1), T * h / t
    core = 0.0 if kernels == "flash" else b * a * s * s / t
    unfused = kernels == "unfused"
    return {
        # apex layer_norm_cuda_kernel.cu: gamma / beta grads read dy and x; the input grad reads dy and x
        # and writes dx; the residual branch's gradient is then added to it (read 2, write 1)
        "layernorm x2": 2 * (5 + 3) * rep,
        # the bias grad sums dy (read); torch.split's backward cats the q, k, v grads (read, write)
        "qkv bias add": (3 + 2 * 3) * H if fwd["qkv bias add"] else 0.0,
        "q, k scaling": fwd["q, k scaling"],  # dq / norm_factor, dk / norm_factor: read, write each
        # 2019: autograd's view backward copies each permuted q, k, v gradient back to [b, s, np, hn]
        # (grad.contiguous().view); matmul's contiguous() passes its gradient through
        "q, k, v copies": fwd["q, k, v copies"],
        # dropout: read dy and the mask, write; bias grad: read dy; the residual add passes dy through.
        # 2019 ran the three as separate ops, 2020's jit-fused bias_dropout_add the same reads
        "bias-dropout-add x2": 2 * (2.5 + 1) * rep,
        "mask": 2 * core if unfused else 0.0,  # d(x * mask) = dy * mask; the subtract passes dy through
        # read y and dy, write dx; 2019's cunn_SoftMaxBackward reads both twice (sum(dy y), then dx)
        "softmax": (5 if unfused else 3) * core,
        "attention dropout": 2.5 * core,  # read dy and the mask, write dx
        "context transpose": 2 * H,  # the gradient permuted back before the context GEMM's backward
        "flash attention io": 8 * H if kernels == "flash" else 0.0,  # read Q, K, V, O, dO; write dQ, dK, dV
        # bias grad (read dy) and GeLU's backward (read dy and x, write dx); 2019's jit-scripted gelu and
        # 2020's bias_gelu_back both make one pass for the GeLU part
        "bias-gelu": (1 + 3) * T * f / t,
    }


# Bytes per parameter of one optimizer step (memory-bound; fp16 weights and grads, fp32 master copy).
# unfused: Megatron-LM 2019 (a1d04b7) runs fp16/fp16.py's FP16_Optimizer around apex FusedAdam,
# one PyTorch op per parameter tensor:
#    6  zero_grad: the fp32 master grads (write 4) and the fp16 model grads (write 2), backward_step
#   10  dynamic loss scale's overflow check, fp16/loss_scaler.py: float(x.float().sum()) on each fp16
#       grad: .float() reads 2 and writes 4, .sum() reads 4
#    6  model_grads_to_master_grads (fp16/fp16util.py): master.grad.copy_(model.grad): read 2, write 4
#    8  _downscale_master: master grad .mul_(1 / loss_scale): read 4, write 4
#    4  clip_master_grads -> mpu/grads.py clip_grad_norm: p.grad.data.norm(2) per parameter: read 4
#       (its .mul_(clip_coef) runs only when the norm exceeds --clip-grad: not counted)
#   28  FusedAdam: read the fp32 weight, grad, m and v (16), write the weight, m and v (12)
#    6  _master_params_to_model_params: model.data.copy_(master.data): read 4, write 2
# fused / flash: Megatron 2020+'s fused multi-tensor Adam: 32, this model's count before 2019's code was
# read (fp32 master, m and v read and written, the 16-bit grad read and weight written; not re-derived)
OPTIMIZER_BYTES = {"unfused": 6 + 10 + 6 + 8 + 4 + 28 + 6, "fused": 32, "flash": 32}

# Bytes per parameter of the local DDP wrapper's gradient copies (model/distributed.py, the 2019
# default --DDP-impl local; allreduce_params runs at any world size, one GPU included):
# _flatten_dense_tensors (read 2, write 2), coalesced /= world_size (read 2, write 2), buf.copy_(synced)
# back into each grad (read 2, write 2).  torch's DDP (dp_overlap) and the fused / flash stacks: 0.
LOCAL_DDP_BYTES = {"unfused": 12, "fused": 0, "flash": 0}

# Bytes per logit element (T x V / t) of the cross-entropy, (forward, backward).
# unfused: pretrain_gpt2.py passes output.contiguous().float() to mpu/cross_entropy.py: .float() (read
# 2, write 4), clone() (read 4, write 4), max (read 4), sub_ (read 4, write 4), exp (read 4, write 4),
# sum (read 4), div_ (read 4, write 4): 46; backward: grad_input.mul_ (read 4, write 4) and .float()'s
# backward to fp16 (read 4, write 2): 14.  fused: Megatron 2020 (51a2e6b megatron/model/gpt2_model.py,
# fp16_lm_cross_entropy off by default) passes output.float() and mpu/cross_entropy.py works on it in
# place: the same ops without the clone, 38; the same backward, 14.  flash is fused plus FlashAttention.
CROSS_ENTROPY_BYTES = {"unfused": (46, 14), "fused": (38, 14), "flash": (38, 14)}
