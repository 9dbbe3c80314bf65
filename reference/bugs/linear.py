"""Mutations of the row-parallel linear layer on one rank: the mirror of tpsim/bugs/linear.py."""

from __future__ import annotations

import torch

from reference import regions
from reference.linear import ColumnParallelLinear, RowParallelLinear


class RowBiasEveryRank(RowParallelLinear):
    """y = all_reduce(x_r W_r^T + b): every rank adds the bias to its partial sum, so y gets t b."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = torch.matmul(x, self.weight.t())  # (..., in/t) @ (in/t, out)
        if self.bias is not None:
            partial = partial + self.bias
        return regions.reduce_from(partial, self.comm)


class ReduceScatterMean(RowParallelLinear):
    """SP: y = reduce_scatter(partials) / t in value; the gradient passes as the correct layer's does
    (only the forward collective got "avg").  Built with bias=False."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = torch.matmul(x, self.weight.t())
        y = regions.sequence_reduce_scatter(partial, self.comm, self.seq_dim)
        return y + (y / self.tp_size - y).detach()


class InputIsParallelFullInput(RowParallelLinear):
    """input_is_parallel=True fed the whole x: this rank keeps x[..., :in/t], not its own piece."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[..., : self.weight.shape[1]])


class SPRowBiasGradUnreduced(RowParallelLinear):
    """SP: y = reduce_scatter(partial) + b with plain autograd: db sums this rank's rows only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = torch.matmul(x, self.weight.t())
        return regions.sequence_reduce_scatter(partial, self.comm, self.seq_dim) + self.bias


class ColumnInputGradUnreduced(ColumnParallelLinear):
    """No copy_to: the input enters the matmul directly, so dx is this rank's partial sum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight.t())  # (..., in) @ (in, out/t)
        return y if self.bias is None else y + self.bias
