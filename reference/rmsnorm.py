"""RMSNorm on one rank: the mirror of tpsim/nn/rmsnorm.py.

    y = x / sqrt(mean(x^2) + eps) * w        w (h,) replicated

Without SP, x is whole on every rank: no communication.  With SP, x is this rank's sequence shard,
so dw is a partial sum over its rows:
    forward: none       backward: one all-reduce of dw (regions.copy_to)

Half precision is normalized in float32 and rounded once, as tpsim does.
"""

from __future__ import annotations

import torch

from reference import regions
from reference.module import Module, narrow, widen
from tpsim.errors import ShapeError


class RMSNorm(Module):
    def __init__(
        self,
        comm,
        hidden: int,
        *,
        eps: float = 1e-5,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        self.hidden, self.eps, self.sequence_parallel = hidden, eps, sequence_parallel
        self.weight = self.seeded((hidden,), seed, "ones" if init == "normal" else init, dtype, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 1 or x.shape[-1] != self.hidden:
            raise ShapeError(
                f"{self.name} (rank {self.tp_rank}): x has shape {tuple(x.shape)}; "
                f"its last dim must be hidden = {self.hidden}"
            )
        w = self.weight
        if self.sequence_parallel:
            w = regions.copy_to(w, self.comm)  # backward: the all-reduce of dw
        v = widen(x)
        rstd = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + self.eps)
        return narrow(v * rstd * widen(w), x.dtype)
