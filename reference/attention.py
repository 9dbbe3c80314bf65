"""Megatron's self-attention on one rank: the mirror of tpsim/nn/attention.py.

x is (s, b, h), sequence first (seq_dim=0; seq_dim=1 takes (b, s, h)); n heads of d = h / n features;
this rank holds n / t whole heads.

    qkv = x W_qkv^T + b_qkv   W_qkv (3h, h) split by rows, interleaved per head:
                              [q_0; k_0; v_0; q_1; k_1; v_1; ...]: rank i holds heads i n/t .. (i+1) n/t - 1
    per head: S = q k^T / sqrt(d), causal mask, P = softmax(S), P' = dropout(P), c = P' v   (local)
    y = c W_o^T + b_o         W_o (h, h) split by columns (row-parallel)

    forward:  copy_to, then one all-reduce of y     [SP: all-gather x, reduce-scatter y]
    backward: identity, then one all-reduce of dx   [SP: all-gather dy, all-gather x again, reduce-scatter dx]

Attention dropout draws from the "model-parallel" stream (seed + 2718 + tp_rank), as tpsim's does.
"""

from __future__ import annotations

import math

import torch

from reference.dropout import Dropout, RNGTracker
from reference.linear import ColumnParallelLinear, RowParallelLinear
from reference.module import Module
from tpsim import validate
from tpsim.errors import ShapeError
from tpsim.nn.dropout import MODEL_PARALLEL


class ParallelAttention(Module):
    """Self-attention, x (s, b, h) -> y (s, b, h), with n/t whole heads on this rank."""

    def __init__(
        self,
        comm,
        hidden: int,
        num_heads: int,
        *,
        bias: bool = True,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        causal: bool = True,
        attention_dropout: float = 0.0,
        tracker: RNGTracker | None = None,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        validate.positive_int(self.name, "hidden", hidden)
        validate.heads(self.name, hidden, num_heads)
        self.check_divides("num_heads", num_heads)
        self.hidden, self.num_heads, self.head_dim = hidden, num_heads, hidden // num_heads
        self.seq_dim, self.causal = validate.seq_dim(self.name, seq_dim), causal
        self.scale = 1.0 / math.sqrt(self.head_dim)
        kw = dict(bias=bias, init=init, dtype=dtype, sequence_parallel=sequence_parallel,
                  seq_dim=self.seq_dim, device=device)
        self.query_key_value = ColumnParallelLinear(
            comm, hidden, 3 * hidden, seed=seed, name=f"{self.name}.query_key_value", **kw
        )
        self.dense = RowParallelLinear(
            comm, hidden, hidden, input_is_parallel=True, seed=seed + 2, name=f"{self.name}.dense", **kw
        )
        self.attention_dropout = None
        if attention_dropout:
            tracker = tracker if tracker is not None else RNGTracker(seed, comm.rank)
            self.attention_dropout = Dropout(
                comm, attention_dropout, tracker=tracker, stream=MODEL_PARALLEL,
                name=f"{self.name}.attention_dropout", device=device,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.hidden:
            layout = "(s, b, h)" if self.seq_dim == 0 else "(b, s, h)"
            raise ShapeError(f"{self.name} (rank {self.tp_rank}): x has shape {tuple(x.shape)}; "
                             f"expected {layout} with h = {self.hidden}")
        qkv = self.query_key_value(x)  # (s, b, 3h/t): n/t heads, [q k v] per head
        d = self.head_dim
        per_head = qkv.reshape(*qkv.shape[:2], -1, 3 * d)  # (s, b, n/t, 3d)
        axes = (1, 2, 0, 3) if self.seq_dim == 0 else (0, 2, 1, 3)  # -> (b, n/t, s, d)
        q, k, v = (per_head[..., i * d : (i + 1) * d].permute(axes) for i in range(3))
        scale = torch.tensor(self.scale, dtype=q.dtype)  # rounded to the dtype first, as tpsim
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (b, n/t, s, s)
        if self.causal:
            s = scores.shape[-1]
            future = torch.ones(s, s, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.attention_dropout is not None:
            probs = self.attention_dropout(probs)
        ctx = torch.matmul(probs, v)  # (b, n/t, s, d)
        back = (2, 0, 1, 3) if self.seq_dim == 0 else (0, 2, 1, 3)
        merged = ctx.permute(back).reshape(*ctx.permute(back).shape[:2], -1)  # (s, b, h/t)
        return self.dense(merged)
