"""Grouped-query attention with RoPE on one rank: the mirror of tpsim/nn/gqa.py.

This rank holds n/t query heads and the KV heads they read (g/t of them, or one shared by r = t/g
ranks), fused per KV head as [q...; k; v] (gqa_qkv.py).

    [q, k, v] = x W_qkv,i^T (+ b)    column-parallel
    q, k = RoPE(q), RoPE(k)          positions 0..s-1 of the whole sequence (SP gathered it)
    c = softmax(q k_rep^T / sqrt(d), causal) v_rep     KV heads repeated to their n/g query heads
    y = c W_o,i^T                    row-parallel: one all-reduce

    forward:  copy_to, then one all-reduce of y     [SP: all-gather x, reduce-scatter y]
    backward: replicated KV: an all-reduce of its grads over its r ranks; one all-reduce of dx
"""

from __future__ import annotations

import math

import torch

from reference.gqa_qkv import GroupedQKVLinear
from reference.linear import RowParallelLinear
from reference.module import Module
from reference.rope import apply_rope
from tpsim.errors import ShapeError
from tpsim.nn.gqa_qkv import KVLayout


class GroupedQueryAttention(Module):
    def __init__(
        self,
        comm,
        hidden: int,
        num_heads: int,
        num_kv_heads: int,
        *,
        qkv_bias: bool = False,
        rope_theta: float = 10000.0,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        causal: bool = True,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        if num_heads < 1 or hidden % num_heads:
            raise ShapeError(
                f"{self.name}: hidden = {hidden} does not split into num_heads = {num_heads} "
                "heads of whole features"
            )
        d = hidden // num_heads
        try:
            self.layout = KVLayout(num_heads, num_kv_heads, d, comm.size)
        except ShapeError as e:
            raise ShapeError(f"{self.name} (rank {comm.rank}): {e}") from None
        self.hidden, self.head_dim, self.seq_dim, self.causal = hidden, d, seq_dim % 3, causal
        self.scale, self.rope_theta = 1.0 / math.sqrt(d), rope_theta
        kw = dict(
            init=init, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=self.seq_dim, device=device
        )
        self.query_key_value = GroupedQKVLinear(
            comm, hidden, self.layout, bias=qkv_bias, seed=seed, name=f"{self.name}.query_key_value", **kw
        )
        self.dense = RowParallelLinear(
            comm,
            hidden,
            hidden,
            bias=False,
            input_is_parallel=True,
            seed=seed + 6,
            name=f"{self.name}.dense",
            **kw,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.query_key_value(x)  # (s, b, rows/t): [q..., k, v] per KV head
        lay, d = self.layout, self.head_dim
        kvl = lay.kv_local
        m = lay.n_local // kvl
        per_kv = qkv.reshape(*qkv.shape[:2], kvl, m + 2, d)
        axes = (1, 2, 0, 3) if self.seq_dim == 0 else (0, 2, 1, 3)  # -> (b, heads, s, d)
        q = per_kv[..., :m, :].reshape(*qkv.shape[:2], kvl * m, d).permute(axes)
        k, v = (per_kv[..., i, :].permute(axes) for i in (m, m + 1))  # (b, kv/t, s, d)
        pos = list(range(q.shape[2]))
        q, k = apply_rope(q, pos, self.rope_theta, 2), apply_rope(k, pos, self.rope_theta, 2)
        k, v = k.repeat_interleave(m, dim=1), v.repeat_interleave(m, dim=1)
        scale = torch.tensor(self.scale, dtype=q.dtype)  # rounded to the dtype first, as tpsim
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (b, n/t, s, s)
        if self.causal:
            s = scores.shape[-1]
            future = torch.ones(s, s, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, n/t, s, d)
        back = (2, 0, 1, 3) if self.seq_dim == 0 else (0, 2, 1, 3)
        merged = ctx.permute(back)
        return self.dense(merged.reshape(*merged.shape[:2], -1))
