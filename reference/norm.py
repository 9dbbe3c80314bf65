"""LayerNorm under tensor and sequence parallelism, on one rank: the mirror of tpsim/nn/norm.py.

weight and bias (h,) are replicated.  Without SP, x is whole on every rank: no communication.
With SP, x is this rank's sequence shard, so dw and db are partial sums over its rows:
    forward: none       backward: one all-reduce of [dw; db] (fused, as tpsim's (2, h) buffer)

The math is torch.nn.functional.layer_norm.  Half-precision inputs are normalized in float32 (statistics,
x-hat, dx, dw and db) and each result is rounded once, as apex's fused LayerNorm (Megatron's) and tpsim do.
torch's own CPU kernel does not: it keeps mean and rstd in bfloat16 and its dw, db differ from a single
rounding (measured), so the mirror widens x, w and b itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference import regions
from reference.module import Module, narrow, widen
from tpsim.errors import ShapeError


class LayerNorm(Module):
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
        self.hidden, self.eps = hidden, eps
        self.sequence_parallel, self.seq_dim = sequence_parallel, seq_dim
        w_init, b_init = ("ones", "zeros") if init == "normal" else (init, init)
        self.weight = self.seeded((hidden,), seed, w_init, dtype, None)
        self.bias = self.seeded((hidden,), seed + 1, b_init, dtype, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 1 or x.shape[-1] != self.hidden:
            raise ShapeError(f"{self.name} (rank {self.tp_rank}): x has shape {tuple(x.shape)}; "
                             f"its last dim must be hidden = {self.hidden}")
        w, b = self.weight, self.bias
        if self.sequence_parallel:
            w, b = regions.copy_to(torch.stack((w, b)), self.comm).unbind(0)  # (2, h): one all-reduce
        y = F.layer_norm(widen(x), (self.hidden,), widen(w), widen(b), self.eps)  # float32 for half precision
        return narrow(y, x.dtype)
