"""Training memory per device: parameters, gradients, optimizer state and activations.

Mixed-precision Adam (Rajbhandari et al. 2020, ZeRO, Sec. 3.1): 16-bit weights (2 B) and grads (2 B),
and fp32 master weights, Adam's m and v (4 + 4 + 4 = 12 B): 16 B per parameter.  The distributed
optimizer (ZeRO-1, Megatron's --use-distributed-optimizer) shards the 12 B over the dp replicas.

Parameters of one layer (Megatron's GPT, ffn f): QKV 3h^2 + 3h, proj h^2 + h, fc1 hf + f, fc2 fh + h,
two LayerNorms 4h.  TP splits all but the row-parallel biases and the LayerNorms (6h, replicated).
The heaviest stage holds L / pp layers plus the embedding (V h / t words + s h positions); with
pp > 1 the last stage's output layer is a copy of the same size, so one stage is counted for both.

Activations (activations.py) of L / pp layers, times the microbatches a stage holds at once (1F1B:
min(p, m) on the first stage, Korthikanti et al. 2022, Sec. 4.2.3), plus the fp32 logits of the loss
(4 s b V / t bytes) when the same stage also holds the output layer (pp = 1).  FlashAttention keeps
no (b a s^2) tensor: its layers save what selective recomputation saves.  Not counted: the
CUDA context, allocator fragmentation and temporary buffers (assume a few GB).

A LlamaConfig's parameters and activations are its own (llama_memory.py: GQA, SwiGLU, RMSNorm, no
biases or position table, untied output layer, the padded vocabulary), and so are its fp32 logits.
"""

from __future__ import annotations

from tpsim.plan import llama_memory
from tpsim.plan.activations import layer_activation_bytes

WEIGHT_BYTES = 2
GRAD_BYTES = 2
OPTIMIZER_BYTES = 12  # fp32 master weights + Adam's m and v


def layer_parameters(h: int, t: int, ffn: int | None = None) -> float:
    """Parameters of one layer on one TP rank."""
    f = ffn or 4 * h
    split = 3 * h * h + 3 * h + h * h + h * f + f + f * h
    return split / t + 6 * h


def stage_parameters(cfg, t: int, pp: int) -> float:
    """Parameters on one device of the heaviest stage."""
    h = cfg.hidden
    return cfg.num_layers // pp * layer_parameters(h, t, cfg.ffn) + cfg.vocab_size * h / t + cfg.seq_len * h


def in_flight(schedule: str, pp: int, m: int, chunks: int = 1) -> float:
    """Microbatches' worth of a stage's activations the first stage holds at once.  Interleaved 1F1B
    holds 2(p - 1) + (v - 1) p + 1 chunks of 1 / v stage each (interleaved.py's warm-up, plus one)."""
    if pp == 1:
        return 1
    if schedule == "interleaved":
        return min(2 * (pp - 1) + (chunks - 1) * pp + 1, m * chunks) / chunks
    return m if schedule == "gpipe" else min(pp, m)


def training_memory(
    cfg,
    layout,
    micro_batch: int,
    microbatches: int,
    capacity: int,
    *,
    recompute: str = "none",
    zero1: bool = False,
    schedule: str = "1f1b",
    kernels: str = "fused",
    chunks: int = 1,
) -> dict:
    """Bytes per device of the heaviest stage, by kind, and whether they fit `capacity`."""
    t, pp = layout.tp, layout.pp
    params = stage_parameters(cfg, t, pp)
    s, b, h, a = cfg.seq_len, micro_batch, cfg.hidden, cfg.num_heads
    saved = "selective" if kernels == "flash" and recompute == "none" else recompute  # flash keeps no s^2
    per_layer = layer_activation_bytes(s, b, h, a, t, layout.sp, saved, cfg.ffn)
    vocab = cfg.vocab_size
    if llama_memory.is_llama(cfg):
        params = llama_memory.stage_parameters(cfg, t, pp)
        per_layer = llama_memory.layer_activation_bytes(cfg, b, t, layout.sp, saved)
        vocab = llama_memory.padded_vocab(cfg, t)
    held = in_flight(schedule, pp, microbatches, chunks)
    activations = cfg.num_layers // pp * per_layer * held
    logits = 4 * s * b * vocab / t if pp == 1 else 0.0
    out = {
        "parameters": params,
        "weights": WEIGHT_BYTES * params,
        "grads": GRAD_BYTES * params,
        "optimizer": OPTIMIZER_BYTES * params / (layout.dp if zero1 else 1),
        "activations": activations + logits,
        "activations_per_layer": per_layer,
        "microbatches_held": held,
        "recompute": recompute,
        "zero1": zero1,
    }
    out["total"] = out["weights"] + out["grads"] + out["optimizer"] + out["activations"]
    out["capacity"] = capacity
    out["fits"] = out["total"] <= capacity
    return out
