"""Prefill and decode with a KV cache on one rank: the mirror of tpsim/serve/decode.py.

This rank's cache holds K (after RoPE) and V of its KV heads (g/t, or its copy of one), (b, kv_local,
max_len, d).  A step of s new tokens: the column-parallel QKV projection, RoPE at the cached offset,
the cache write, attention over every cached key (query i masked past key length + i), the
row-parallel output projection and its one all-reduce.  Forward only (torch.no_grad).
"""

from __future__ import annotations

import numpy as np
import torch

from reference.comm import Comm
from reference.gqa import GroupedQueryAttention
from reference.module import to_numpy, to_torch
from reference.rope import apply_rope


class KVCache:
    def __init__(self, attn: GroupedQueryAttention, batch: int, max_len: int):
        lay, w = attn.layout, attn.query_key_value.weight
        shape = (batch, lay.kv_local, max_len, attn.head_dim)
        self.k, self.v = (torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in "kv")
        self.length = 0


@torch.no_grad()
def attend(attn: GroupedQueryAttention, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """y (s, b, h) for new tokens x (s, b, h); appends their K and V to `cache`."""
    qkv_layer, lay, d = attn.query_key_value, attn.layout, attn.head_dim
    y = torch.matmul(x, qkv_layer.weight.t())  # (s, b, rows/t)
    if qkv_layer.bias is not None:
        y = y + qkv_layer.bias
    kvl = lay.kv_local
    m = lay.n_local // kvl
    per_kv = y.reshape(*y.shape[:2], kvl, m + 2, d)
    q = per_kv[..., :m, :].reshape(*y.shape[:2], kvl * m, d).permute(1, 2, 0, 3)  # (b, n/t, s, d)
    k, v = (per_kv[..., i, :].permute(1, 2, 0, 3) for i in (m, m + 1))  # (b, kv/t, s, d)
    s, start = x.shape[0], cache.length
    pos = list(range(start, start + s))
    q, k = apply_rope(q, pos, attn.rope_theta, 2), apply_rope(k, pos, attn.rope_theta, 2)
    cache.k[:, :, start : start + s], cache.v[:, :, start : start + s] = k, v
    cache.length = start + s
    keys, values = (c[:, :, : cache.length].repeat_interleave(m, dim=1) for c in (cache.k, cache.v))
    scores = torch.matmul(q, keys.transpose(-1, -2)) * torch.tensor(attn.scale, dtype=q.dtype)
    future = torch.ones(s, cache.length, dtype=torch.bool, device=x.device).triu(1 + start)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    merged = torch.matmul(probs, values).permute(2, 0, 1, 3)  # (s, b, n/t, d)
    partial = torch.matmul(merged.reshape(s, x.shape[1], -1), attn.dense.weight.t())
    return attn.comm.all_reduce(partial)


def run_decode(ctx, spec: dict, x: np.ndarray, prompt: int) -> np.ndarray:
    """One rank: build the GQA layer of `spec`, prefill x[:prompt], decode the rest one token at a time."""
    comm = Comm()
    attn = GroupedQueryAttention(comm, **spec, device=ctx.device)
    cache = KVCache(attn, x.shape[1], x.shape[0])
    steps = [x[:prompt]] + [x[i : i + 1] for i in range(prompt, x.shape[0])]
    return np.concatenate([to_numpy(attend(attn, to_torch(a, ctx.device), cache)) for a in steps])
