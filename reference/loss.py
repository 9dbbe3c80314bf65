"""Vocab-parallel cross-entropy on one rank (Megatron's _VocabParallelCrossEntropy): mirrors tpsim/nn/loss.py.

    Z_i (s, b, V'_i): this rank's vocab columns [lo, hi)

    m      = max_j Z_j               all-reduce MAX of each rank's row max
    z_tgt  = Z_target - m            all-reduce SUM: only the rank owning the target adds it
                                     (with label smoothing, stacked with sum_j (Z_j - m): one all-reduce)
    sumexp = sum_j exp(Z_j - m)      all-reduce SUM
    loss   = log(sumexp) - z_tgt     (s, b), the same on every rank
    dZ_i   = dloss (softmax(Z)_i - (1 - eps) onehot_i - eps / V)   this rank's columns: no communication

Columns j >= vocab_size (padding) are masked: -inf in the max and exp, zero gradient.  A rank sees
only its own columns, so it is told the padded width V' (default: its own width times t, an even split).
"""

from __future__ import annotations

import torch

from reference import scope
from reference.embedding import check_ids
from reference.module import Module, narrow, widen
from tpsim.errors import ArgumentError, PlacementError, ShapeError
from tpsim.placement import chunk_offsets, chunk_sizes


class _CrossEntropy(torch.autograd.Function):
    """tpsim's kernels one for one (ce_max, ce_target_logit, ce_exp, ce_sum_exp, ce_softmax, ce_loss,
    ce_backward): half precision computes each in float32 and rounds once at its end, so the values
    the all-reduces carry are rounded where tpsim rounds them."""

    @staticmethod
    def forward(ctx, z, targets, comm, lo, n, eps, vocab):
        lead, dtype = z.shape[:-1], z.dtype
        neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=z.device)
        local_max = z[..., :n].amax(dim=-1) if n else neg_inf.expand(lead).clone()
        m = comm.all_reduce(local_max, op="max")  # (s, b)
        zw, mw = widen(z), widen(m)
        mine = (targets >= lo) & (targets < lo + n)
        zt = torch.zeros(lead, dtype=zw.dtype, device=z.device)
        cols = (targets - lo).clamp(0, max(z.shape[-1] - 1, 0))
        if z.shape[-1]:
            picked = zw.gather(-1, cols[..., None])[..., 0]
            zt = torch.where(mine, picked - mw, zt)
        if eps:
            zt = torch.stack([zt, (zw[..., :n] - mw[..., None]).sum(dim=-1)], dim=-1)
        z_tgt = widen(comm.all_reduce(narrow(zt, dtype)))
        shifted = zw - mw[..., None]
        shifted[..., n:] = float("-inf")
        e = narrow(torch.exp(shifted), dtype)
        sumexp = comm.all_reduce(narrow(widen(e).sum(dim=-1), dtype))
        probs = e / sumexp[..., None]  # one op: rounds once as it is
        log_z = torch.log(widen(sumexp))
        if eps:
            loss = (1 - eps) * (log_z - z_tgt[..., 0]) + eps * (log_z - z_tgt[..., 1] / vocab)
        else:
            loss = log_z - z_tgt
        ctx.save_for_backward(probs, mine, cols)
        ctx.n, ctx.eps, ctx.vocab = n, eps, vocab
        return narrow(loss, dtype)

    @staticmethod
    def backward(ctx, dloss):
        probs, mine, cols = ctx.saved_tensors
        g = widen(probs).clone()
        g[..., : ctx.n] -= ctx.eps / ctx.vocab
        if g.shape[-1]:
            onehot = torch.zeros_like(g).scatter_(-1, cols[..., None], 1.0) * mine[..., None]
            g = torch.where(onehot.bool(), g - (1 - ctx.eps), g)
        return narrow(g * widen(dloss)[..., None], probs.dtype), None, None, None, None, None, None


class VocabParallelCrossEntropy(Module):
    """`loss, mean = ce(logits_i, targets)`: the per-token loss (s, b) and its mean (0-d), on every rank."""

    def __init__(self, comm, *, label_smoothing: float = 0.0, vocab_size: int | None = None,
                 padded_vocab_size: int | None = None, name: str | None = None, device=None):
        super().__init__(comm, name, device)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ArgumentError(f"{self.name}: label_smoothing = {label_smoothing} must lie in [0, 1]")
        self.eps, self.vocab_size = float(label_smoothing), vocab_size
        self.padded_vocab_size = padded_vocab_size

    def forward(self, logits: torch.Tensor, targets: torch.Tensor):
        t, r = self.tp_size, self.tp_rank
        padded = self.padded_vocab_size or logits.shape[-1] * t
        if chunk_sizes(padded, t)[r] != logits.shape[-1]:
            raise PlacementError(
                f"{self.name} (rank {r}): logits hold {logits.shape[-1]} vocab columns (shape "
                f"{tuple(logits.shape)}), but {padded} columns over {t} ranks give rank {r} "
                f"{chunk_sizes(padded, t)[r]}; pass padded_vocab_size for an uneven split"
            )
        vocab = padded if self.vocab_size is None else self.vocab_size
        if not 1 <= vocab <= padded:
            raise ShapeError(f"{self.name}: vocab_size = {vocab}; the real vocab must be 1..{padded}")
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ShapeError(f"{self.name} (rank {r}): targets have shape {tuple(targets.shape)}, "
                             f"logits {tuple(logits.shape)}")
        check_ids(self, targets, vocab, "target")
        lo = chunk_offsets(padded, t)[r]
        n = max(0, min(lo + logits.shape[-1], vocab) - lo)  # how many of my columns are real vocab
        loss = scope.mark(_CrossEntropy.apply(logits, targets, self.comm, lo, n, self.eps, vocab))
        return loss, narrow(widen(loss).sum() / loss.numel(), loss.dtype)  # as tpsim's ce_mean
