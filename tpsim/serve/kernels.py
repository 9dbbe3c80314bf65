"""The kernels of a Llama decode step or prefill on one TP rank, each priced by efficiency.py.

Mode "realistic" of plan.decode_latency / prefill_time: every kernel pays the device's efficiency
(efficiency.gemm_time for GEMMs, memory_time for memory-bound ops), each with its launch term; mode
"peak" keeps plan.py's one roofline call per layer.  The kernel list follows vLLM's Llama
(vllm/model_executor/models/llama.py: LlamaDecoderLayer, LlamaAttention, LlamaMLP), where

    fused_add_rms_norm   the residual add and the next RMSNorm are one kernel (vLLM's RMSNorm called
                         with a residual), so a layer has two of them and no separate residual add
    qkv, gate_up         QKVParallelLinear and MergedColumnParallelLinear: one GEMM each
    silu_and_mul         SiluAndMul: SiLU of the gate times up, one kernel
    rotary               one kernel rotating this rank's q and k in place
    cache write          the attention backend writes the new K and V into the paged cache
                         (reshape_and_cache), a kernel of its own before the attention kernel

One layer on one TP rank, T tokens (decode: the batch; prefill: the sequence), q = n_local d,
kv = kv_local d (this rank's query and KV heads, replicated KV heads counted once per rank), f = ffn/t:

    input norm       memory   read x, residual, weight (h); write x, residual
    qkv              GEMM     (T, q + 2 kv, h), weights at weight_itemsize
    rotary           memory   read and write q and k; read T rows of the cos/sin cache (d each)
    cache write      memory   read k and v, write them into the cache
    attention        decode:  memory: read q, K and V of `context` tokens per sequence, write out
                     prefill: FlashAttention, one kernel: its work on the (T, T) score grid is that of
                              n_local GEMMs (T, T, 2 d) (each score tile: q k^T over d, then p v into d
                              outputs); the whole square, as tpsim's layers compute it (a causal kernel
                              skips about half); bytes: read q, k, v, write out
    o                GEMM     (T, h, q)
    post norm        memory   as the input norm
    gate_up          GEMM     (T, 2 f, h)
    silu_and_mul     memory   read T x 2 f, write T x f
    down             GEMM     (T, h, f)

Per step: the embedding lookup (one kernel: T rows of h read and written; vLLM's masking of ids outside
this rank's shard counted in it), the final fused_add_rms_norm over T tokens, and the logits GEMM
(rows, V/t, h) (decode: every sequence; prefill: the last token).  The 2 all-reduces per layer and the
embedding's are priced in plan.py, each one kernel (one launch).  Activations, norms, the embedding,
the output layer and the KV cache are at cfg.dtype; fp8 rows narrow only the layer GEMMs' weights
(activation quantization assumed fused into the kernel before each GEMM).  Not priced: the first
layer's input norm having no residual yet (2 T h elements fewer), biases, sampling, the logits'
gather, host and scheduler time, and CUDA graphs (vLLM captures decode steps in them: the launch term
then stands for each kernel's tail and gap, an assumption of efficiency.py, not a measurement).
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsim.efficiency import Efficiency, gemm_time, memory_time
from tpsim.hardware import DEVICES
from tpsim.nn.llama_config import LlamaConfig
from tpsim.serve.kv_cache import itemsize, layout


@dataclass(frozen=True)
class Kernel:
    """One kernel: a GEMM (batch, m, n, k) moving `nbytes`, or a memory-bound op (gemm None)."""

    name: str
    nbytes: float
    gemm: tuple[int, int, int, int] | None = None

    def time(self, spec, eff: Efficiency | None, dtype) -> float:
        if self.gemm is None:
            return memory_time(spec, eff, self.nbytes)
        batch, m, n, k = self.gemm
        return gemm_time(spec, eff, m, n, k, dtype, batch, nbytes=self.nbytes)

    def bytes_moved(self, eff: Efficiency | None) -> float:
        """nbytes, plus split-K's fp32 partials where the realistic model splits the GEMM along k."""
        if self.gemm is None or eff is None:
            return self.nbytes
        batch, m, n, k = self.gemm
        return self.nbytes + eff.split_k_bytes(m, n, k, batch)


def _linear(name: str, m: int, n: int, k: int, size: int, wsize: float) -> Kernel:
    return Kernel(name, (m * k + m * n) * size + k * n * wsize, (1, m, n, k))


def layer_kernels(
    cfg: LlamaConfig, t: int, tokens: int, context: int, weight_itemsize: float | None = None, prefill=False
) -> list[Kernel]:
    """One layer's kernels on one TP rank, in order; `context`: cached tokens per sequence (decode)."""
    lay, size, h, d = layout(cfg, t), itemsize(cfg), cfg.hidden, cfg.head_dim
    w = weight_itemsize or size
    T, q, kv, f = tokens, lay.n_local * d, lay.kv_local * d, cfg.ffn_hidden // t
    norm = Kernel("fused_add_rms_norm", (4 * T * h + h) * size)
    if prefill:  # FlashAttention: (n_local, T, T, 2 d) of work, q k v read and out written
        attention = Kernel("attention", (2 * T * q + 2 * T * kv) * size, (lay.n_local, T, T, 2 * d))
    else:  # T sequences, each reads K and V of `context` tokens at this rank's KV heads
        attention = Kernel("attention", (2 * T * q + 2 * T * context * kv) * size)
    return [
        norm,
        _linear("qkv", T, q + 2 * kv, h, size, w),
        Kernel("rotary", (2 * T * (q + kv) + T * d) * size),
        Kernel("cache_write", 4 * T * kv * size),
        attention,
        _linear("o", T, h, q, size, w),
        norm,
        _linear("gate_up", T, 2 * f, h, size, w),
        Kernel("silu_and_mul", 3 * T * f * size),
        _linear("down", T, h, f, size, w),
    ]


def step_kernels(cfg: LlamaConfig, t: int, tokens: int, logit_rows: int) -> list[Kernel]:
    """The kernels outside the layers: embedding lookup, final norm, logits over this rank's V/t."""
    size, h = itemsize(cfg), cfg.hidden
    return [
        Kernel("embedding", 2 * tokens * h * size),
        Kernel("final_norm", (4 * tokens * h + h) * size),
        _linear("logits", logit_rows, cfg.vocab_size // t, h, size, size),
    ]


def price(kernels: list[Kernel], spec, eff: Efficiency | None, dtype) -> list[tuple[str, float]]:
    """[(name, seconds)] of each kernel."""
    return [(k.name, k.time(spec, eff, dtype)) for k in kernels]


def device_key(spec) -> str:
    """The DEVICES key of a DeviceSpec, for its efficiency parameters (efficiency.efficiency_for)."""
    for key, s in DEVICES.items():
        if s.name == spec.name:
            return key
    return getattr(spec, "efficiency_key", spec.name)
