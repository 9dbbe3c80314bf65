"""Weights and KV cache per device when a Llama-style model is served with TP degree t.

Each rank holds n/t query heads and the KV heads they read: g/t of them when t divides g, one (shared
with t/g - 1 other ranks) when t exceeds g (tpsim.nn.gqa_qkv).  So the KV cache per device is

    2 (K and V) x layers x max(g/t, 1) x head_dim x bytes    per cached token

and stops shrinking once t passes g: Llama-3 70B (g = 8) holds 40 KiB per token per device in
bfloat16 at t = 8 and still 40 KiB at t = 16.  Weights per device: the embedding and output layer
split by vocab, each layer's fused QKV rows of this rank (replicated KV rows included), W_o and the
SwiGLU matrices split by t, the RMSNorm weights whole.

The tokens that fit are what is left of `utilization` x memory (vLLM's gpu_memory_utilization,
default 0.9) after the weights, divided by the bytes per token; the activations of a decode step
are small beside them and are the part of memory left unused.
"""

from __future__ import annotations

import numpy as np

from tpsim.dtypes import resolve_dtype
from tpsim.nn.embedding import padded_vocab_size
from tpsim.nn.gqa_qkv import KVLayout
from tpsim.nn.llama_config import LlamaConfig


def layout(cfg: LlamaConfig, t: int) -> KVLayout:
    return KVLayout(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, t)


def itemsize(cfg: LlamaConfig, dtype=None) -> int:
    return int(np.dtype(resolve_dtype(dtype or cfg.dtype)).itemsize)


def kv_cache_bytes_per_token(cfg: LlamaConfig, t: int, dtype=None) -> int:
    """K and V of one token of one sequence, all layers, on one device."""
    return 2 * cfg.num_layers * layout(cfg, t).kv_local * cfg.head_dim * itemsize(cfg, dtype)


def weight_bytes(cfg: LlamaConfig, t: int, pad_to_multiple_of: int | None = None) -> int:
    """The weights one device holds (the largest share where the vocab splits unevenly)."""
    h, lay = cfg.hidden, layout(cfg, t)
    v = padded_vocab_size(cfg.vocab_size, t, pad_to_multiple_of)
    vocab_rows = -(-v // t)  # torch.chunk: the first ranks hold the larger pieces
    qkv = lay.rows_per_rank * (h + cfg.qkv_bias)
    per_layer = qkv + h * h // t + 3 * h * cfg.ffn_hidden // t + 2 * h
    tables = (1 if cfg.tied_embeddings else 2) * vocab_rows * h
    return (tables + cfg.num_layers * per_layer + h) * itemsize(cfg)


def max_cached_tokens(cfg: LlamaConfig, t: int, memory: int, utilization: float = 0.9) -> int:
    """Tokens (batch x context, summed over sequences) whose KV cache fits beside the weights; 0 if none."""
    free = int(utilization * memory) - weight_bytes(cfg, t)
    return max(free, 0) // kv_cache_bytes_per_token(cfg, t)
