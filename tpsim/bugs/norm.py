"""SP LayerNorm whose weight and bias gradients are never all-reduced across TP (tpsim/nn/norm.py).

Under sequence parallelism each rank normalizes its own rows, so its dw, db are partial sums over
those rows.  Megatron all-reduces them (finalize_model_grads, for params marked sequence_parallel);
a norm whose params miss that mark keeps each rank's partial sum and calls it the gradient.  The
replicas then step apart and the norm's weights differ across TP ranks (NVIDIA/Megatron-LM#1446).
"""

from __future__ import annotations

from tpsim.bugs.patch import relabel
from tpsim.darray import DArray
from tpsim.nn.norm import LayerNorm


class SPNormGradUnreduced(LayerNorm):
    """backward without the all-reduce of [dw; db]: each rank keeps its partial sums, claimed R."""

    _skip_check = False

    def _check(self, x: DArray, what: str) -> None:
        if not self._skip_check:
            super()._check(x, what)

    def backward(self, dy: DArray) -> DArray:
        sp, self.sequence_parallel, self._skip_check = self.sequence_parallel, False, True
        try:
            dx = super().backward(dy)  # with SP off, dw and db stay partial sums (P on TP)
        finally:
            self.sequence_parallel, self._skip_check = sp, False
        for key in ("weight", "bias"):
            self.grads[key] = relabel(self.grads[key], self.tp, category="grads")
        return dx
