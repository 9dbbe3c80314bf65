"""SP LayerNorm whose weight and bias gradients are never all-reduced across TP (tpsim/nn/norm.py).

Under sequence parallelism each rank normalizes its own rows, so its dw, db are partial sums over
those rows.  Megatron all-reduces them (finalize_model_grads, for params marked sequence_parallel);
a norm whose params miss that mark keeps each rank's partial sum and calls it the gradient.  The
replicas then step apart and the norm's weights differ across TP ranks (NVIDIA/Megatron-LM#1446).
"""

from __future__ import annotations

from tpsim.bugs.patch import relabel, swap
from tpsim.darray import DArray
from tpsim.nn.norm import LayerNorm


class SPNormGradUnreduced(LayerNorm):
    """backward with its one collective, the all-reduce of [dw; db], replaced by a relabel: each rank
    keeps its partial sums and claims them R.  (LayerNorm's backward moves data only through
    `redistribute`, the one door, and only for that all-reduce, so the swap catches exactly it.)"""

    def backward(self, dy: DArray) -> DArray:
        def keep_partial(x: DArray, placements, **kw) -> DArray:
            return relabel(x, self.tp)

        with swap(DArray, "redistribute", keep_partial):
            return super().backward(dy)
