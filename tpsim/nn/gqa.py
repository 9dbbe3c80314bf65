"""Grouped-query attention (Ainslie et al. 2023) with rotary embeddings, sharded by heads.

x is (s, b, h), sequence first (seq_dim=1 takes (b, s, h)); n query heads and g KV heads of d
features (h = n d); t TP ranks.  Each rank holds n/t query heads and the KV heads they read, split
when t divides g and replicated on r = t/g ranks when g divides t (gqa_qkv.py has the layout):

    [q, k, v] = x W_qkv^T (+ b)     GroupedQKVLinear: column-parallel, fused per rank
    q, k = RoPE(q), RoPE(k)         rope.py, at global positions
    per query head j: S = q_j k_{j // (n/g)}^T / sqrt(d), causal mask, P = softmax(S), c_j = P v_{j // (n/g)}
    y = c W_o^T                     W_o (h, n d) split by columns: row-parallel

The KV heads are repeated to their n/g query heads on each rank (as Hugging Face's repeat_kv), and
their gradients summed back over those heads.

    forward:  copy_to (identity), then one all-reduce of y     [SP: all-gather x, reduce-scatter y]
    backward: identity for dy; replicated KV: an all-reduce of the KV weight grads in groups of r;
              then one all-reduce of dx                        [SP: all-gather dy, x again, reduce-scatter dx]

No attention dropout (none of these models trains with it).  Saved for backward: x, q and k after
RoPE, v (g/t or one KV head per rank, not the repeated copies), and P.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tpsim.darray import DArray
from tpsim.errors import PlacementError, ShapeError
from tpsim.meta import MetaArray, is_meta
from tpsim.nn import attention as mha
from tpsim.nn import ops
from tpsim.nn.gqa_qkv import GroupedQKVLinear, KVLayout
from tpsim.nn.linear import RowParallelLinear
from tpsim.nn.module import Module
from tpsim.nn.rope import RotaryEmbedding
from tpsim.placement import Shard


class GroupedQueryAttention(Module):
    """x (s, b, h) -> y (s, b, h): n query heads, g KV heads, RoPE; see the module docstring."""

    def __init__(
        self,
        mesh,
        hidden: int,
        num_heads: int,
        num_kv_heads: int,
        *,
        qkv_bias: bool = False,
        rope_theta: float = 10000.0,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        causal: bool = True,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        if num_heads < 1 or hidden % num_heads:
            raise ShapeError(
                f"{self.name}: hidden = {hidden} does not split into num_heads = {num_heads} "
                "heads of whole features"
            )
        if seq_dim not in (0, 1, -3, -2):
            raise ShapeError(f"{self.name}: seq_dim = {seq_dim}; x is (s, b, h) or (b, s, h): use 0 or 1")
        d = hidden // num_heads
        try:
            self.layout = KVLayout(num_heads, num_kv_heads, d, self.tp_size)
        except ShapeError as e:
            raise ShapeError(f"{self.name}: {e}") from None
        self.hidden, self.num_heads, self.num_kv_heads, self.head_dim = hidden, num_heads, num_kv_heads, d
        self.seq_dim, self.causal, self.scale = seq_dim % 3, causal, 1.0 / math.sqrt(d)
        self.rope = RotaryEmbedding(d, rope_theta)
        kw = dict(dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=self.seq_dim, tp_dim=tp_dim)
        qkv = GroupedQKVLinear(mesh, hidden, self.layout, bias=qkv_bias, seed=seed, init=init, **kw)
        self.child("query_key_value", qkv)
        self.query_key_value = qkv
        dense = RowParallelLinear(
            mesh, hidden, hidden, bias=False, input_is_parallel=True, seed=seed + 6, init=init, **kw
        )
        self.dense = self.child("dense", dense)

    def forward(self, x: DArray) -> DArray:
        if x.ndim != 3 or x.shape[-1] != self.hidden:
            raise ShapeError(
                f"{self.name}: x has shape {x.shape}; expected (s, b, h) or (b, s, h) with h = {self.hidden}"
            )
        for i, p in enumerate(x.placements):
            if i != self.tp and p == Shard(self.seq_dim):
                raise PlacementError(
                    f"{self.name}: x's sequence dim is sharded on mesh dim {self.mesh.names[i]} "
                    f"({x.placements}); every query needs every key: shard only the batch off the TP dim"
                )
        qkv = self.query_key_value(x)  # (s, b, t rows) S(-1): rank i's heads, fused
        heads = mha._heads_placements(qkv.placements, self.seq_dim)
        q, k, v = (
            self.local(f"split_{w}", _split, qkv, self.layout, self.seq_dim, w, placements=heads)
            for w in "qkv"
        )  # (b, n/t, s, d), (b, g/t or 1, s, d) twice
        del qkv
        q, k = self.rope(self, q, 2), self.rope(self, k, 2)
        probs = self._probs(q, k, heads)
        self.save(q=q, k=k, v=v, probs=probs)
        vr = self._repeat(v, heads)
        ctx = self.local("attention_context", mha._context, probs, vr, placements=heads)  # (b, n/t, s, d)
        del vr
        seq = mha._seq_placements(heads, self.seq_dim)
        merged = self.local("merge_heads", mha._merge_heads, ctx, self.seq_dim, placements=seq)  # (s, b, h/t)
        return self.dense(merged)

    def backward(self, dy: DArray) -> DArray:
        dmerged = self.dense.backprop(dy)
        q, k, v, probs = self.saved("q", "k", "v", "probs")
        heads = probs.placements
        dctx = self.local(
            "split_heads_backward",
            mha._split_heads,
            dmerged,
            self.head_dim,
            self.seq_dim,
            None,
            placements=heads,
        )
        del dmerged
        m = self.layout.n_local // self.layout.kv_local
        dv = self.local("attention_dv", lambda p, c: _summed(m, mha._dv(p, c)), probs, dctx, placements=heads)
        vr = self._repeat(v, heads)
        dprobs = self.local("attention_dprobs", mha._dprobs, dctx, vr, placements=heads)
        del dctx, vr
        dscores = self.local(
            "softmax_backward", mha._softmax_grad, probs, dprobs, self.scale, placements=heads
        )
        del dprobs, probs
        kr = self._repeat(k, heads)
        dq = self.local("attention_dq", mha._dq, dscores, kr, placements=heads)
        dk = self.local("attention_dk", lambda s, a: _summed(m, mha._dk(s, a)), dscores, q, placements=heads)
        del dscores, kr
        dq, dk = self.rope(self, dq, 2, inverse=True), self.rope(self, dk, 2, inverse=True)
        seq = mha._seq_placements(heads, self.seq_dim)
        dqkv = self.local("merge_qkv_backward", _merge, dq, dk, dv, self.layout, self.seq_dim, placements=seq)
        del dq, dk, dv
        return self.query_key_value.backprop(dqkv)

    def _probs(self, q: DArray, k: DArray, heads) -> DArray:
        kr = self._repeat(k, heads)
        scores = self.local("attention_scores", mha._scores, q, kr, self.scale, placements=heads)
        return self.local("softmax", mha._softmax, scores, self.causal, placements=heads)

    def _repeat(self, kv: DArray, heads) -> DArray:
        m = self.layout.n_local // self.layout.kv_local
        return self.local("repeat_kv", _repeat_kv, kv, m, placements=heads)


def _split(a, layout: KVLayout, seq_dim: int, which: str):
    """(s, b, rows) fused per KV head as [q..., k, v] -> q (b, n/t, s, d), or k or v (b, kv/t, s, d)."""
    d, kvl = layout.head_dim, layout.kv_local
    m = layout.n_local // kvl
    axes = mha._to_heads_axes(seq_dim)
    heads = kvl * m if which == "q" else kvl
    shape = tuple((*a.shape[:2], heads, d)[i] for i in axes)
    out: Any
    if is_meta(a):
        out = MetaArray(shape, a.dtype)
    else:
        per_kv = a.reshape(*a.shape[:2], kvl, m + 2, d)
        block = {"q": per_kv[..., :m, :], "k": per_kv[..., m : m + 1, :], "v": per_kv[..., m + 1 :, :]}[which]
        out = np.ascontiguousarray(block.reshape(*a.shape[:2], heads, d).transpose(axes))
    return out, 0, 2 * out.nbytes


def _merge(dq, dk, dv, layout: KVLayout, seq_dim: int):
    """The inverse of _split: three gradients -> (s, b, rows) in the fused per-rank layout."""
    b, _, s, d = dq.shape
    kvl = layout.kv_local
    m = layout.n_local // kvl
    shape = (s, b, kvl * (m + 2) * d) if seq_dim == 0 else (b, s, kvl * (m + 2) * d)
    nbytes = 2 * (dq.nbytes + dk.nbytes + dv.nbytes)
    if is_meta(dq):
        return MetaArray(shape, dq.dtype), 0, nbytes
    parts = [dq.reshape(b, kvl, m, s, d), dk.reshape(b, kvl, 1, s, d), dv.reshape(b, kvl, 1, s, d)]
    stacked = np.concatenate(parts, axis=2)  # (b, kv, m + 2, s, d)
    axes = (3, 0, 1, 2, 4) if seq_dim == 0 else (0, 3, 1, 2, 4)
    return np.ascontiguousarray(stacked.transpose(axes)).reshape(shape), 0, nbytes


def _repeat_kv(kv, m: int):
    """(b, g, s, d) -> (b, g m, s, d): each KV head once per query head that reads it (a copy)."""
    b, g, s, d = kv.shape
    out = MetaArray((b, g * m, s, d), kv.dtype) if is_meta(kv) else np.repeat(kv, m, axis=1)
    return out, 0, kv.nbytes + out.nbytes


def _summed(m: int, result):
    """A per-query-head gradient (b, g m, s, d), the matmul `result`, summed over the m query heads of
    each KV head; priced as its GEMM (the sum is counted in its FLOPs and bytes)."""
    grad, flops, nbytes = result
    gemm = ops.gemm_of(result)
    b, gm, s, d = grad.shape
    if m == 1:
        return result
    if is_meta(grad):  # the same FLOPs and bytes as the real sum below: a shape-only run times it alike
        out = MetaArray((b, gm // m, s, d), grad.dtype)
    else:
        out = ops.narrow(ops.widen(grad).reshape(b, gm // m, m, s, d).sum(axis=2), grad.dtype)
    return ops.Cost(out, flops + grad.size, nbytes + out.nbytes, gemm)
