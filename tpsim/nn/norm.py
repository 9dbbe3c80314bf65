"""LayerNorm under tensor and sequence parallelism (Megatron), in the global view.

    y = (x - mean) / sqrt(var + eps) * w + b        mean, var over the last dim h

LayerNorm has no split: weight and bias (h,) are replicated (R) on every TP rank.

Without SP, x is R on TP: every rank normalizes the whole activation, the same
work t times over, and computes the same dw, db (R on TP).
    forward:  none       backward: none

With SP, x is S(seq_dim) on TP: each rank normalizes its own sequence shard
(LayerNorm works row by row, so no rank needs another's rows), and its dw, db
are partial sums over its rows only (P on TP).
    forward:  none       backward: one all-reduce of [dw; db], fused into one (2, h) buffer

Megatron flattens the grads of every sequence-parallel param of the whole model into
one buffer and all-reduces it once per step (finalize_model_grads); here each
LayerNorm all-reduces its own two grads, fused, once per backward.  Mesh dims other than
TP that shard x (e.g. data parallel over the batch) leave dw, db partial there: that
reduction belongs to the data-parallel step.

Saved for backward, as apex's fused LayerNorm (which Megatron uses) saves them: the
input x and the per-row mean and rstd = 1/sqrt(var + eps), computed in float32 for
half-precision inputs.  x-hat is recomputed in backward.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray, distribute
from tpsim.errors import PlacementError, ShapeError
from tpsim.nn import regions
from tpsim.nn.init import global_weight
from tpsim.nn.layout import grad_placements
from tpsim.nn.module import Module
from tpsim.placement import Partial, Replicate, Shard


class LayerNorm(Module):
    """LayerNorm over the last dim of x (s, b, h), replicated weights; see the module docstring."""

    def __init__(
        self,
        mesh,
        hidden: int,
        *,
        eps: float = 1e-5,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        self.hidden, self.eps = hidden, eps
        self.sequence_parallel, self.seq_dim = sequence_parallel, seq_dim
        # "normal" means the usual start, w = 1 and b = 0; "exact" draws small integers for both
        w_init, b_init = ("ones", "zeros") if init == "normal" else (init, init)
        replicated = [Replicate()] * mesh.ndim
        self.param("weight", distribute(global_weight((hidden,), seed, w_init, dtype), mesh, replicated))
        self.param("bias", distribute(global_weight((hidden,), seed + 1, b_init, dtype), mesh, replicated))

    def forward(self, x: DArray) -> DArray:
        self._check(x, "x")
        w, b = self.params["weight"], self.params["bias"]
        stats = self.local(
            "layernorm_stats",
            lambda a: _stats(a, self.eps),
            x,
            placements=x.placements,
            shape=(*x.shape[:-1], 2),
        )  # (..., 2): mean and rstd of each row
        self.save(x=x, stats=stats)
        return self.local("layernorm", _normalize, x, stats, w, b, placements=x.placements)

    def backward(self, dy: DArray) -> DArray:
        x, stats = self.saved("x", "stats")
        self._check(dy, "dy")
        if _norm(dy.placements, dy.ndim) != _norm(x.placements, x.ndim) or dy.shape != x.shape:
            raise PlacementError(
                f"{self.name} backward: dy {dy.shape} {list(dy.placements)} must match "
                f"x {x.shape} {list(x.placements)}"
            )
        grad = grad_placements(x)  # P wherever x's rows are split: over TP under SP, over DP always
        dparams = self.local(
            "layernorm_dparams", _dparams, x, stats, dy, placements=grad, shape=(2, self.hidden)
        )
        if self.sequence_parallel:  # the all-reduce of Megatron's SP param grads
            dparams = regions.copy_to_backward(dparams, self.tp)
        for i, key in enumerate(("weight", "bias")):
            g = self.local(
                f"layernorm_d{key}", lambda d, i=i: _row(d, i), dparams, placements=dparams.placements
            )
            self.accumulate(key, g)
        w = self.params["weight"]
        return self.local("layernorm_dinput", _dinput, x, stats, dy, w, placements=x.placements)

    def _check(self, x: DArray, what: str) -> None:
        if x.ndim < 1 or x.shape[-1] != self.hidden:
            raise ShapeError(
                f"{self.name}: {what} has shape {x.shape}; its last dim must be hidden = {self.hidden}"
            )
        placements = _norm(x.placements, x.ndim)
        for i, p in enumerate(placements):
            if isinstance(p, Partial) or p == Shard(x.ndim - 1):
                raise PlacementError(
                    f"{self.name}: {what} is {p} on mesh dim {self.mesh.names[i]}; LayerNorm needs whole "
                    f"rows of the last dim: R or S(d) with d < {x.ndim - 1}"
                )
        want = Shard(self.seq_dim % x.ndim) if self.sequence_parallel else Replicate()
        if placements[self.tp] != want:
            mode = f"sequence_parallel (seq_dim={self.seq_dim})" if self.sequence_parallel else "no SP"
            raise PlacementError(
                f"{self.name}: {what} is {placements[self.tp]} on the TP mesh dim "
                f"{self.mesh.names[self.tp]}; with {mode} it must be {want}"
            )


def _norm(placements, ndim: int) -> list:
    return [Shard(p.dim % ndim) if isinstance(p, Shard) else p for p in placements]


def _acc(dtype) -> np.dtype:
    """Half-precision inputs are normalized in float32, as apex and torch do."""
    return np.promote_types(dtype, np.float32)


def _stats(x, eps: float):
    v = x.astype(_acc(x.dtype))
    mean = v.mean(axis=-1, keepdims=True)
    var = np.square(v - mean).mean(axis=-1, keepdims=True)
    out = np.concatenate([mean, 1.0 / np.sqrt(var + eps)], axis=-1)  # (..., 2)
    return out, 4 * x.size, x.nbytes + out.nbytes


def _xhat(x, stats):
    return (x.astype(stats.dtype) - stats[..., :1]) * stats[..., 1:]


def _normalize(x, stats, w, b):
    out = (_xhat(x, stats) * w + b).astype(x.dtype)
    return out, 4 * x.size, x.nbytes + stats.nbytes + w.nbytes + b.nbytes + out.nbytes


def _dparams(x, stats, dy):
    """[dw; db] (2, h): dw = sum of dy * x-hat, db = sum of dy, over every row this shard holds."""
    h = x.shape[-1]
    g = dy.astype(stats.dtype).reshape(-1, h)
    xhat = _xhat(x, stats).reshape(-1, h)
    out = np.stack([(g * xhat).sum(axis=0), g.sum(axis=0)]).astype(dy.dtype)
    return out, 5 * x.size, x.nbytes + stats.nbytes + dy.nbytes + out.nbytes


def _row(d, i: int):
    """A view of row i of the fused (2, h) grads: no FLOPs, no bytes."""
    return d[i], 0, 0


def _dinput(x, stats, dy, w):
    """dx = rstd * (g - mean(g) - x-hat * mean(g * x-hat)) with g = dy * w, per row."""
    g = dy.astype(stats.dtype) * w
    xhat = _xhat(x, stats)
    inner = g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)
    out = (stats[..., 1:] * inner).astype(x.dtype)
    return out, 9 * x.size, x.nbytes + stats.nbytes + dy.nbytes + w.nbytes + out.nbytes
