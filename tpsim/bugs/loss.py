"""Mutations of the vocab-parallel cross-entropy (tpsim/nn/loss.py).

VocabPaddingUnmasked     the padded vocab columns (j >= vocab_size) enter the max, the sum of exps
                         and the gradient, as if they were words
UnevenShardPadding       an uneven vocab split (torch.chunk) is padded with zero columns so that
                         every rank holds the same width, and the zeros enter the sum of exps
LabelSmoothingPerRank    the smoothing term mean_j(-log p_j) taken over each rank's own columns,
                         never all-reduced: every rank reports its own loss
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray, from_local
from tpsim.nn import ops, regions
from tpsim.nn.layout import on_tp
from tpsim.nn.loss import VocabParallelCrossEntropy
from tpsim.placement import Partial, Replicate, chunk_sizes


class VocabPaddingUnmasked(VocabParallelCrossEntropy):
    """Every column counts: the layer is told nothing of vocab_size."""

    def __init__(self, mesh, *, vocab_size: int | None = None, **kw):
        super().__init__(mesh, vocab_size=None, **kw)


class UnevenShardPadding(VocabParallelCrossEntropy):
    """Logits split unevenly by vocab (V over t by torch.chunk): each shard is padded with zero
    columns to ceil(V / t), the even layout equal-size collectives want, and the loss runs on the
    padded t ceil(V / t) columns unmasked.  Backward strips the padding's gradient."""

    def forward(self, logits: DArray, targets):
        v, t = logits.shape[-1], self.tp_size
        width = -(-v // t)
        self._sizes = [s.shape[-1] for s in logits.shards]
        padded = [
            np.concatenate([s, np.zeros((*s.shape[:-1], width - s.shape[-1]), s.dtype)], -1)
            for s in logits.shards
        ]  # (s, b, ceil(V/t)) on every rank
        shape = (*logits.shape[:-1], width * t)
        return super().forward(
            from_local(padded, self.mesh, list(logits.placements), shape=shape, run_check=False), targets
        )

    def backward(self, dloss=None) -> DArray:
        g = super().backward(dloss)
        sizes = iter(self._sizes)
        shape = (*g.shape[:-1], sum(self._sizes))
        pieces = [s[..., : next(sizes)] for s in g.shards]
        return from_local(pieces, self.mesh, list(g.placements), shape=shape, run_check=False)


class LabelSmoothingPerRank(VocabParallelCrossEntropy):
    """loss_r = (1 - eps) nll + eps (log sumexp - mean over rank r's columns of (Z_j - m)).

    Built from the correct loss: loss_r = loss + eps (mean_all Z - mean_r Z), mean_all from one
    all-reduce of the column sums (the wrapper's own; Megatron's code has no such all-reduce).  The
    gradient is the correct one: only the reported value is per rank.  No padding (vocab_size None).
    """

    def forward(self, logits: DArray, targets):
        loss, _ = super().forward(logits, targets)
        eps, vocab, tp = self.eps, logits.shape[-1], self.tp
        sums = self.local(
            "ls_col_sum",
            lambda z: ops.reduce_last(np.sum, z, keepdims=False),
            logits,
            placements=on_tp(loss, tp, Partial()),
            shape=loss.shape,
        )
        own = from_local(
            list(sums.shards), self.mesh, on_tp(loss, tp, Replicate()), shape=loss.shape, run_check=False
        )
        total = regions.reduce_from(sums, tp)
        widths = chunk_sizes(vocab, self.tp_size)
        per_rank = [
            ops.narrow(
                ops.widen(loss.shards[d])
                + eps
                * (
                    ops.widen(total.shards[d]) / vocab
                    - ops.widen(own.shards[d]) / max(widths[self.mesh.group_rank(d, tp)], 1)
                ),
                loss.dtype,
            )
            for d in range(self.mesh.size)
        ]
        loss_r = from_local(per_rank, self.mesh, list(loss.placements), shape=loss.shape, run_check=False)
        count = loss.shards[0].size
        mean = self.local(
            "ce_mean",
            lambda a: ops.narrow(ops.widen(a).sum() / count, a.dtype),
            loss_r,
            placements=list(loss.placements),
            shape=(),
        )
        return loss_r, mean
