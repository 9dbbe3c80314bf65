"""SP LayerNorm on one rank without the all-reduce of its param grads: mirrors tpsim/bugs/norm.py.

The correct layer routes [weight; bias] through `copy_to`, whose backward all-reduces
[dw; db]; this one uses them directly, so each rank keeps the partial sums over its own rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.module import narrow, widen
from reference.norm import LayerNorm


class SPNormGradUnreduced(LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(widen(x), (self.hidden,), widen(self.weight), widen(self.bias), self.eps)
        return narrow(y, x.dtype)
