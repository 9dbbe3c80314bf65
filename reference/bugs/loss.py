"""Mutations of the vocab-parallel cross-entropy on one rank: the mirror of tpsim/bugs/loss.py."""

from __future__ import annotations

import torch

from reference.loss import VocabParallelCrossEntropy
from reference.module import narrow, widen


class VocabPaddingUnmasked(VocabParallelCrossEntropy):
    """Every column counts: vocab_size is dropped, the padded width stays."""

    def __init__(self, comm, *, vocab_size: int | None = None, **kw):
        super().__init__(comm, vocab_size=None, **kw)


class UnevenShardPadding(VocabParallelCrossEntropy):
    """This rank's uneven piece of V columns, zero-padded to ceil(V / t), through the loss unmasked;
    autograd through the concatenation drops the padding's gradient."""

    def __init__(self, comm, *, vocab: int, **kw):
        super().__init__(comm, **kw)
        self.width = -(-vocab // comm.size)
        self.padded_vocab_size = self.width * comm.size

    def forward(self, logits: torch.Tensor, targets: torch.Tensor):
        pad = logits.new_zeros((*logits.shape[:-1], self.width - logits.shape[-1]))
        return super().forward(torch.cat([logits, pad], dim=-1), targets)


class LabelSmoothingPerRank(VocabParallelCrossEntropy):
    """loss_r = loss + eps (mean_all Z - mean_r Z): the smoothing mean over this rank's columns only.
    Value only; the gradient is the correct one (see tpsim/bugs/loss.py)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor):
        loss, _ = super().forward(logits, targets)
        own = widen(logits.detach()).sum(dim=-1)  # (s, b): this rank's column sums
        total = self.comm.all_reduce(own.clone())
        vocab = self.padded_vocab_size or logits.shape[-1] * self.tp_size
        delta = self.eps * (total / vocab - own / max(logits.shape[-1], 1))
        loss_r = narrow(widen(loss) + delta, loss.dtype)
        return loss_r, narrow(widen(loss_r).sum() / loss_r.numel(), loss.dtype)
