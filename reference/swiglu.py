"""The gated MLP (SwiGLU) on one rank: the mirror of tpsim/nn/swiglu.py.

    [g_i, u_i] = x [W_gate; W_up]_i^T    linear_fc1, column-parallel: this rank's ffn/t gate and up rows
    a_i = silu(g_i) * u_i                local
    y = sum_i a_i W_down,i^T             linear_fc2, row-parallel: one all-reduce

    forward:  copy_to, then one all-reduce     [SP: all-gather x, reduce-scatter y]
    backward: one all-reduce of dx             [SP: all-gather dy, x again, reduce-scatter dx]

The fused weight is tpsim's (fused.fuse_rows of the gate and up matrices drawn from their seeds).
"""

from __future__ import annotations

import torch

from reference.linear import ColumnParallelLinear, RowParallelLinear
from reference.module import Module, narrow, rank_piece, to_torch, widen
from tpsim.nn.fused import fuse_rows
from tpsim.nn.init import global_weight


class SwiGLUMLP(Module):
    def __init__(
        self,
        comm,
        hidden: int,
        ffn_hidden: int,
        *,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        self.check_divides("ffn_hidden (gate and up are fused per rank)", ffn_hidden)
        kw = dict(
            bias=False,
            init=init,
            dtype=dtype,
            sequence_parallel=sequence_parallel,
            seq_dim=seq_dim,
            device=device,
        )
        self.linear_fc1 = ColumnParallelLinear(
            comm, hidden, 2 * ffn_hidden, seed=seed, name=f"{self.name}.linear_fc1", **kw
        )
        gate, up = (global_weight((ffn_hidden, hidden), seed + i, init, dtype) for i in (0, 1))
        fused = rank_piece(fuse_rows([gate, up], comm.size), 0, comm.rank, comm.size)
        self.linear_fc1.weight = torch.nn.Parameter(to_torch(fused, self.device))
        self.linear_fc2 = RowParallelLinear(
            comm, ffn_hidden, hidden, seed=seed + 2, name=f"{self.name}.linear_fc2", **kw
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = widen(self.linear_fc1(x)).chunk(2, dim=-1)  # (s, b, ffn/t) each
        return self.linear_fc2(narrow(g / (1 + torch.exp(-g)) * u, x.dtype))
