"""RoPE on this rank's sequence shard, and positions restarting at zero: mirrors tpsim/bugs/rope.py.

x (s/t, b, h) is this rank's piece (the torch.chunk rule) of a sequence of `seq_len`, viewed as h/d
heads of d features; autograd gives the backward.
"""

from __future__ import annotations

import torch

from reference.module import Module
from reference.rope import apply_rope
from tpsim.placement import chunk_offsets


class SequenceRoPE(Module):
    def __init__(self, comm, hidden: int, head_dim: int, seq_len: int, theta: float = 10000.0, **kw):
        super().__init__(comm, **kw)
        self.hidden, self.head_dim, self.seq_len, self.theta = hidden, head_dim, seq_len, theta

    def positions(self, rows: int) -> list[int]:
        """This shard's global positions: its offset in the sequence plus the row."""
        start = chunk_offsets(self.seq_len, self.tp_size)[self.tp_rank]
        return list(range(start, start + rows))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = x.reshape(*x.shape[:-1], self.hidden // self.head_dim, self.head_dim)  # (s/t, b, h/d, d)
        return apply_rope(heads, self.positions(x.shape[0]), self.theta, 0).reshape(x.shape)


class RoPEPositionsRestart(SequenceRoPE):
    def positions(self, rows: int) -> list[int]:
        return list(range(rows))  # the bug: no offset
