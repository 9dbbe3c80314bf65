"""Vocab-parallel cross-entropy (Megatron): the loss of logits split by vocab, never gathered.

    Z (s, b, V') S(-1): rank i holds the columns [lo_i, hi_i), Z = [Z_1 ... Z_t]

    m      = max_j Z_j               all-reduce MAX of each rank's row max              (s b elements)
    z_tgt  = Z_target - m            all-reduce SUM: only the rank owning the target adds (s b)
    sumexp = sum_j exp(Z_j - m)      all-reduce SUM of each rank's partial sum           (s b)
    loss   = log(sumexp) - z_tgt     (s, b), replicated: every rank computes the same numbers
    dZ_i   = dloss (softmax(Z)_i - onehot_i)   each rank's own columns, S(-1): no communication

forward: three all-reduces (reduce_from); backward: none.  The logits come from a
ColumnParallelLinear(h, V', bias=False) or, with weight tying, from VocabParallelLogits.

Label smoothing eps, as torch.nn.functional.cross_entropy: loss = (1 - eps) nll + eps mean_j(-log p_j),
the mean over the real vocab.  mean_j(-log p_j) = log(sumexp) - sum_j (Z_j - m) / V needs the global
sum of the shifted logits; it rides in the second all-reduce (2 s b elements), so there are still
three.  (Megatron averages over each rank's own columns only and uses NeMo's eps V / (V - 1) form,
so its smoothed loss depends on t: NVIDIA/Megatron-LM#737.)

Padding: columns j >= vocab_size (the vocab padded for the TP degree) are masked: -inf in the max
and the exp, left out of the smoothing mean, zero gradient.  Unmasked, the loss would depend on the
padding, and so on t.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray, distribute
from tpsim.errors import ArgumentError, PlacementError, ShapeError
from tpsim.meta import MetaArray, asarray, is_meta
from tpsim.nn import ops, regions
from tpsim.nn.embedding import token_ids, vocab_local, vocab_ranges
from tpsim.nn.layout import grad_placements, on_tp
from tpsim.nn.module import Module
from tpsim.placement import Partial, Replicate, Shard


class VocabParallelCrossEntropy(Module):
    """`loss, mean = ce(logits, targets)`: per-token loss (s, b) and its mean (0-d), both replicated.

    `dlogits = ce.backprop(dloss)` with dloss (s, b) like the loss, or None for the gradient of the
    mean.  vocab_size (default: all V' columns) is the real vocab; the columns past it are padding.
    """

    def __init__(
        self,
        mesh,
        *,
        label_smoothing: float = 0.0,
        vocab_size: int | None = None,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ArgumentError(f"{self.name}: label_smoothing = {label_smoothing} must lie in [0, 1]")
        self.eps, self.vocab_size = float(label_smoothing), vocab_size

    def forward(self, logits: DArray, targets):
        *lead, padded = logits.shape
        vocab = padded if self.vocab_size is None else self.vocab_size
        if logits.placements[self.tp] != Shard(logits.ndim - 1):
            raise PlacementError(
                f"{self.name}: logits must be split by vocab, S({logits.ndim - 1}) on the TP mesh dim "
                f"{self.mesh.names[self.tp]}; got placements {logits.placements}"
            )
        if not 1 <= vocab <= padded:
            raise ShapeError(
                f"{self.name}: vocab_size = {vocab} but the logits have {padded} columns (shape "
                f"{logits.shape}); the real vocab must be 1..{padded} (the rest is padding)"
            )
        targets = targets if isinstance(targets, DArray) else asarray(targets)  # (s, b)
        if tuple(targets.shape) != tuple(lead):
            raise ShapeError(f"{self.name}: targets have shape {tuple(targets.shape)}, logits {logits.shape}")
        row = on_tp(logits, self.tp, Replicate())  # placements of a per-token (s, b) array
        targets = token_ids(self, targets, vocab, "target", row)
        ranges, eps = vocab_ranges(logits, -1), self.eps
        p_max = vocab_local(
            self,
            "ce_max",
            lambda lo, hi, z: _row_max(z, _real(lo, hi, vocab)),
            ranges,
            logits,
            placements=on_tp(logits, self.tp, Partial("max")),
            shape=tuple(lead),
        )
        m = regions.reduce_from(p_max, self.tp)  # all-reduce MAX, (s, b)

        def target_logit(lo, hi, z, mx, tgt):
            return _target_logit(z, mx, tgt, lo, _real(lo, hi, vocab), eps > 0)

        p_tgt = vocab_local(
            self,
            "ce_target_logit",
            target_logit,
            ranges,
            logits,
            m,
            targets,
            placements=on_tp(logits, self.tp, Partial()),
            shape=(*lead, 2) if eps else tuple(lead),
        )
        z_tgt = regions.reduce_from(p_tgt, self.tp)  # all-reduce SUM (with eps: and the sum of Z - m)
        e = vocab_local(  # (s, b, V'/t)
            self,
            "ce_exp",
            lambda lo, hi, z, mx: _exp(z, mx, _real(lo, hi, vocab)),
            ranges,
            logits,
            m,
            placements=logits.placements,
        )
        p_sum = self.local(
            "ce_sum_exp",
            lambda a: ops.reduce_last(np.sum, a, keepdims=False),
            e,
            placements=on_tp(logits, self.tp, Partial()),
            shape=tuple(lead),
        )
        sumexp = regions.reduce_from(p_sum, self.tp)  # all-reduce SUM
        probs = self.local("ce_softmax", _divide_rows, e, sumexp, placements=logits.placements)
        loss = self.local(
            "ce_loss",
            lambda s, zt: _loss(s, zt, eps, vocab),
            sumexp,
            z_tgt,
            placements=row,
            shape=tuple(lead),
        )
        count = int(np.prod(lead, dtype=np.int64))
        self.save(probs=probs, targets=targets, ctx=(vocab, row, count))
        mean = self.local(  # a sum over the tokens, as a gradient is: P where a mesh dim splits them
            "ce_mean", lambda a: _mean(a, count), loss, placements=grad_placements(loss)
        )
        return loss, mean

    def backward(self, dloss=None) -> DArray:
        probs, targets, (vocab, row, count) = self.saved("probs", "targets", "ctx")
        if dloss is None:
            dloss = np.asarray(1.0 / count, dtype=probs.dtype)  # d(mean) / d(loss), on every rank
        elif not isinstance(dloss, DArray):
            dloss = distribute(dloss, self.mesh, row)
        elif list(dloss.placements) != row:
            raise PlacementError(f"{self.name}: dloss has placements {dloss.placements}, the loss {row}")
        eps = self.eps
        return vocab_local(
            self,
            "ce_backward",
            lambda lo, hi, p, t, g: _grad(p, t, g, lo, _real(lo, hi, vocab), eps, vocab),
            vocab_ranges(probs, -1),
            probs,
            targets,
            dloss,
            placements=probs.placements,
        )


def _real(lo: int, hi: int, vocab: int) -> int:
    """How many of the columns lo..hi-1 are real vocab (the rest is padding)."""
    return max(0, min(hi, vocab) - lo)


def _meta(*xs) -> bool:
    return any(is_meta(x) for x in xs)


def _row_max(z, n: int):
    """Max over the n real columns; -inf on a rank that holds none."""
    out = np.max(z[..., :n], axis=-1, initial=-np.inf)
    return out, z.size, z.nbytes + out.nbytes


def _target_logit(z, m, target, lo: int, n: int, with_sum: bool):
    """Z_target - m where this rank owns the target, else 0; with_sum: stacked with sum_j (Z_j - m)."""
    shape = (*z.shape[:-1], 2) if with_sum else z.shape[:-1]
    out: MetaArray | np.ndarray
    if _meta(z, m, target):  # which rank owns each target is data
        out = MetaArray(shape, z.dtype)
    else:
        mine = (target >= lo) & (target < lo + n)
        zw, mw = ops.widen(z), ops.widen(m)  # half precision: float32 inside, one rounding (ops.py)
        out = np.zeros(z.shape[:-1], zw.dtype)
        out[mine] = zw[mine, target[mine] - lo] - mw[mine]
        if with_sum:
            out = np.stack([out, (zw[..., :n] - mw[..., None]).sum(axis=-1)], axis=-1)
        out = ops.narrow(out, z.dtype)
    return out, (2 if with_sum else 1) * z.size, z.nbytes + m.nbytes + target.nbytes + out.nbytes


def _exp(z, m, n: int):
    """exp(Z - m) on the real columns, 0 on the padded ones (exp(-inf))."""
    shifted = ops.widen(z) - ops.widen(m)[..., None]
    shifted[..., n:] = -np.inf
    out = ops.narrow(np.exp(shifted), z.dtype)
    return out, 2 * z.size, z.nbytes + m.nbytes + out.nbytes


def _divide_rows(e, s):
    """Softmax: each row of exp(Z - m) over its global sum, (s, b, V'/t) / (s, b)."""
    out = e / s[..., None]  # one op: rounds once as it is
    return out, e.size, e.nbytes + s.nbytes + out.nbytes


def _loss(sumexp, z_tgt, eps: float, vocab: int):
    """log(sumexp) - z_tgt, smoothed: (1 - eps) that + eps (log(sumexp) - sum_j (Z_j - m) / V)."""
    if eps:
        log_z, zt = np.log(ops.widen(sumexp)), ops.widen(z_tgt)
        out = ops.narrow((1 - eps) * (log_z - zt[..., 0]) + eps * (log_z - zt[..., 1] / vocab), sumexp.dtype)
    else:
        out = ops.narrow(np.log(ops.widen(sumexp)) - ops.widen(z_tgt), sumexp.dtype)
    return out, 6 * sumexp.size, sumexp.nbytes + z_tgt.nbytes + out.nbytes


def _mean(loss, count: int):
    """This rank's part of the mean: the sum of its tokens' losses over all tokens (0-d)."""
    out = ops.narrow(ops.widen(loss).sum() / count, loss.dtype)
    return out, loss.size, loss.nbytes + out.nbytes


def _grad(p, target, g, lo: int, n: int, eps: float, vocab: int):
    """dZ = dloss (p - (1 - eps) onehot - eps / V) on the real columns, 0 on the padded ones."""
    if _meta(p, target, g):  # the one-hot of each target is data
        out = MetaArray(p.shape, p.dtype)
    else:
        out = ops.widen(p).copy()  # half precision: float32 inside, one rounding (ops.py)
        out[..., :n] -= eps / vocab
        mine = (target >= lo) & (target < lo + n)
        out[mine, target[mine] - lo] -= 1 - eps
        out *= ops.widen(np.asarray(g, dtype=p.dtype))[..., None]
        out = ops.narrow(out, p.dtype)
    return out, 3 * p.size, p.nbytes + target.nbytes + out.nbytes
