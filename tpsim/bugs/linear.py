"""Mutations of the row-parallel linear layer (tpsim/nn/linear.py), each one region or line wrong.

    RowBiasEveryRank          the bias joins each rank's partial sum: the all-reduce adds it t times
    ReduceScatterMean         the SP reduce-scatter averages (ReduceOp.AVG) where it must sum
    InputIsParallelFullInput  input_is_parallel=True handed the whole, replicated input: every rank
                              cuts the same first in/t features instead of its own piece
    SPRowBiasGradUnreduced    SP: the bias gradient sums only this rank's sequence rows, never all-reduced
    ColumnInputGradUnreduced  copy_to's backward all-reduce is missing: dx stays a partial sum per rank
"""

from __future__ import annotations

import numpy as np

from tpsim.bugs.patch import relabel, swap
from tpsim.darray import DArray, from_local
from tpsim.nn import ops, regions
from tpsim.nn.linear import ColumnParallelLinear, RowParallelLinear
from tpsim.placement import Replicate, Shard


def _add(a, b):
    return ops.elementwise(lambda u, v: u + v, a, b)


class RowBiasEveryRank(RowParallelLinear):
    """y = sum_r (x_r W_r^T + b) = x W^T + t b: the bias is added before the all-reduce, on every rank."""

    def forward(self, x: DArray) -> DArray:
        if not self.has_bias:
            return super().forward(x)
        bias, reduce = self.params["bias"], regions.reduce_from

        def reduce_with_bias(partial: DArray, tp: int) -> DArray:
            partial = self.local("bias_add", _add, partial, bias, placements=list(partial.placements))
            return reduce(partial, tp)

        self.has_bias = False  # the correct add after the reduction is skipped ...
        try:
            with swap(regions, "reduce_from", reduce_with_bias):  # ... and done before it instead
                return super().forward(x)
        finally:
            self.has_bias = True


class ReduceScatterMean(RowParallelLinear):
    """SP: y = reduce_scatter_avg(partials) = (x W^T) / t on each sequence shard; backward untouched
    (the forward collective alone got the wrong op, as in a fused GEMM + reduce-scatter called with "avg")."""

    def forward(self, x: DArray) -> DArray:
        rs = regions.sequence_reduce_scatter

        def mean_reduce_scatter(partial: DArray, tp: int, seq_dim: int) -> DArray:
            y = rs(partial, tp, seq_dim)
            t = self.tp_size
            return self.local("rs_avg", lambda a: ops.elementwise(lambda u: u / t, a), y,
                              placements=list(y.placements))

        with swap(regions, "sequence_reduce_scatter", mean_reduce_scatter):
            return super().forward(x)


class InputIsParallelFullInput(RowParallelLinear):
    """Built with input_is_parallel=True, fed the whole replicated x (s, b, in): each rank takes
    x[..., :in/t] (the shapes fit, the rank's offset is forgotten), so y = x_0 (sum_r W_r)^T.
    Backward hands each rank's dx piece back in the first in/t columns of a full-width dx, as
    autograd through that slice does.  in must divide by t."""

    def forward(self, x: DArray) -> DArray:
        self.check_divides("in_features", self.in_features)
        k = self.in_features // self.tp_size
        pieces = [s[..., :k] for s in x.shards]  # the same columns on every rank
        placements = list(x.placements)
        placements[self.tp] = Shard(x.ndim - 1)
        self._full_shape = x.shape
        return super().forward(from_local(pieces, self.mesh, placements, shape=x.shape, run_check=False))

    def backward(self, dy: DArray) -> DArray:
        dx = super().backward(dy)  # S(-1): rank r holds dy W_r, the gradient of the columns it used

        def widen_to_full(piece):
            out = np.zeros((*piece.shape[:-1], self._full_shape[-1]), piece.dtype)
            out[..., : piece.shape[-1]] = piece
            return out

        placements = list(dx.placements)
        placements[self.tp] = Replicate()  # claimed whole; each rank's differs
        return self.local("dx_widen", widen_to_full, dx, placements=placements, shape=self._full_shape)


class SPRowBiasGradUnreduced(RowParallelLinear):
    """SP: db = the sum of dy over this rank's own s/t rows, kept as the gradient (claimed R).  Megatron
    computes db that way and all-reduces it with the other sequence-parallel grads; this one does not."""

    def backward(self, dy: DArray) -> DArray:
        dx = super().backward(dy)
        if self.has_bias and self.sequence_parallel:
            rows = [Replicate() if isinstance(p, Shard) else p for p in dy.placements]
            db = self.local("linear_dbias", lambda g: ops.sum_to(g, g.shape[-1:]), dy,
                            placements=rows, shape=dy.shape[-1:])  # each rank: its own rows only
            self.grads["bias"] = relabel(db, self.tp, category="grads")
        return dx


class ColumnInputGradUnreduced(ColumnParallelLinear):
    """f without its backward: dx = dy_r W_r on each rank, a partial sum, handed on as the whole dx."""

    def backward(self, dy: DArray) -> DArray:
        with swap(regions, "copy_to_backward", lambda dx, tp: relabel(dx, tp)):
            return super().backward(dy)
