"""Prefill and decode through GroupedQueryAttention with a KV cache sharded by KV heads.

The cache holds K (after RoPE) and V of every token seen, per rank the KV heads that rank reads:

    k, v   (b, t x kv_local, max_len, d)  S(1): rank i's g/t KV heads, or its copy of one KV head

A step of s new tokens (s = prompt length for prefill, 1 for decode), forward only:

    [q, k, v] = x W_qkv,i^T          the column-parallel projection, no communication
    q, k = RoPE at positions length .. length + s - 1     (global: the tokens already cached)
    cache[:, :, length : length + s] = k, v               local: each rank writes its own KV heads
    P = softmax(q K^T / sqrt(d)) over the length + s cached keys, query i masked past length + i
    y = (P V) W_o,i^T, all-reduced   one all-reduce of (s, b, h): the whole communication of the step

No backward and nothing saved: this is inference.  The cache's bytes are counted on each device
(category "kv_cache"), so a device over its memory refuses the step as it would refuse a weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpsim.darray import DArray, distribute
from tpsim.errors import ShapeError
from tpsim.meta import MetaArray, is_meta
from tpsim.nn import attention as mha
from tpsim.nn import ops, regions
from tpsim.nn.gqa import GroupedQueryAttention, _repeat_kv, _split
from tpsim.nn.init import global_weight
from tpsim.nn.rope import apply_rope, positions
from tpsim.placement import Partial, Shard


@dataclass
class KVCache:
    """One layer's cache: k and v (b, t kv_local, max_len, d) S(1) on TP, and how many tokens it holds."""

    k: DArray
    v: DArray
    length: int = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


def new_cache(attn: GroupedQueryAttention, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache for `attn` (zeros, or shape-only when the layer is)."""
    lay = attn.layout
    shape = (batch, lay.tp * lay.kv_local, max_len, attn.head_dim)
    w = attn.query_key_value.params["weight"]
    dtype = dtype or w.dtype
    init = None if is_meta(w.shards[0]) else "zeros"
    k, v = (
        distribute(global_weight(shape, 0, init, dtype), attn.mesh, attn.placements(Shard(1))) for _ in "kv"
    )
    for a in (k, v):
        a.recategorize("kv_cache")
    return KVCache(k, v)


def attend(attn: GroupedQueryAttention, x: DArray, cache: KVCache) -> DArray:
    """y (s, b, h) for the new tokens x (s, b, h), R on TP (sequence first); appends their K, V to `cache`."""
    if attn.seq_dim != 0 or attn.query_key_value.sequence_parallel:
        raise ShapeError(f"{attn.name}: decoding takes x as (s, b, h) without sequence parallelism")
    s, start = x.shape[0], cache.length
    if start + s > cache.max_len:
        raise ShapeError(f"{attn.name}: {start} cached + {s} new tokens exceed the cache's {cache.max_len}")
    qkv_layer, lay = attn.query_key_value, attn.layout
    w, b = qkv_layer.params["weight"], qkv_layer.params.get("bias")
    full = regions.copy_to(x, attn.tp)
    cols = list(full.placements)
    cols[attn.tp] = Shard(2)  # (s, b, rows) split by this rank's heads
    qkv = attn.local("linear", lambda a, wl: ops.matmul(a, ops.transpose(wl)[0]), full, w, placements=cols)
    if b is not None:
        qkv = attn.local(
            "bias_add", lambda a, c: ops.elementwise(lambda u, v: u + v, a, c), qkv, b, placements=cols
        )
    heads = mha._heads_placements(qkv.placements, 0)
    q, k, v = (attn.local(f"split_{n}", _split, qkv, lay, 0, n, placements=heads) for n in "qkv")
    pos = positions(q, 2, start)
    q, k = (
        attn.local("rope", apply_rope, a, pos, attn.rope.theta, 2, False, placements=heads) for a in (q, k)
    )
    for new, store in ((k, cache.k), (v, cache.v)):
        attn.local("kv_cache_write", _write, store, new, start, placements=heads)
    cache.length = start + s
    m = lay.n_local // lay.kv_local
    keys, values = (
        attn.local("kv_cache_read", _read, a, cache.length, m, placements=heads) for a in (cache.k, cache.v)
    )  # (b, n/t, length + s, d), repeated per query head
    scores = attn.local("attention_scores", mha._scores, q, keys, attn.scale, placements=heads)
    probs = attn.local("softmax", _softmax_from, scores, start, placements=heads)
    ctx = attn.local("attention_context", mha._context, probs, values, placements=heads)
    merged = attn.local("merge_heads", mha._merge_heads, ctx, 0, placements=mha._seq_placements(heads, 0))
    dense = attn.dense
    partial_pl = list(merged.placements)
    partial_pl[attn.tp] = Partial()
    partial = attn.local(
        "linear",
        lambda a, wl: ops.matmul(a, ops.transpose(wl)[0]),
        merged,
        dense.params["weight"],
        placements=partial_pl,
    )
    return regions.reduce_from(partial, attn.tp)


def _write(store, new, start: int):
    """store[:, :, start : start + s] = new, in place: the cache is this rank's own memory."""
    if not is_meta(store):
        store[:, :, start : start + new.shape[2]] = new
    return store, 0, 2 * new.nbytes


def _read(store, length: int, m: int):
    """The first `length` cached tokens, each KV head repeated for its m query heads."""
    view = (
        MetaArray((*store.shape[:2], length, store.shape[3]), store.dtype)
        if is_meta(store)
        else store[:, :, :length]
    )
    out, _, nbytes = _repeat_kv(view, m)
    return out, 0, nbytes


def _softmax_from(scores, start: int):
    """Softmax over keys, query i (at position start + i) masked past key start + i."""
    if is_meta(scores):
        return MetaArray(scores.shape, scores.dtype), 5 * scores.size, 2 * scores.nbytes
    dtype, z = scores.dtype, ops.widen(scores)
    sq, sk = z.shape[-2:]
    z = np.where(np.triu(np.ones((sq, sk), bool), 1 + start), -np.inf, z).astype(z.dtype)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return ops.narrow(e / e.sum(axis=-1, keepdims=True), dtype), 5 * scores.size, 2 * scores.nbytes
