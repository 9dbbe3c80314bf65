"""RMSNorm (Zhang & Sennrich 2019; Llama, Mistral, Qwen) under tensor and sequence parallelism.

    y = x / sqrt(mean(x^2) + eps) * w        mean over the last dim h; no centring, no bias

The weight w (h,) is replicated (R) on every TP rank, as LayerNorm's (norm.py).
Without SP, x is R on TP: every rank normalizes the whole activation and computes the same dw.
    forward:  none       backward: none
With SP, x is S(seq_dim) on TP: each rank normalizes its own rows and its dw is a partial sum.
    forward:  none       backward: one all-reduce of dw (Megatron's SP param grads)

Half-precision x is normalized in float32 and rounded once (ops.py's rule).  Hugging Face's
LlamaRMSNorm rounds x-hat to x's dtype before the weight multiply: a second rounding we do not take.
Saved for backward: x and the per-row rstd = 1/sqrt(mean(x^2) + eps).
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray, distribute
from tpsim.errors import PlacementError, ShapeError
from tpsim.meta import MetaArray, is_meta
from tpsim.nn.init import global_weight
from tpsim.nn.module import Module
from tpsim.placement import Partial, Placement, Replicate, Shard


class RMSNorm(Module):
    """RMSNorm over the last dim of x (s, b, h), weight replicated; see the module docstring."""

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
        w = global_weight((hidden,), seed, "ones" if init == "normal" else init, dtype)  # "normal": w = 1
        self.param("weight", distribute(w, mesh, [Replicate()] * mesh.ndim))

    def forward(self, x: DArray) -> DArray:
        self._check(x, "x")
        rstd = self.local(
            "rmsnorm_stats",
            lambda a: _rstd(a, self.eps),
            x,
            placements=list(x.placements),
            shape=(*x.shape[:-1], 1),
        )
        self.save(x=x, rstd=rstd)
        return self.local(
            "rmsnorm", _normalize, x, rstd, self.params["weight"], placements=list(x.placements)
        )

    def backward(self, dy: DArray) -> DArray:
        x, rstd = self.saved("x", "rstd")
        self._check(dy, "dy")
        if list(dy.placements) != list(x.placements) or dy.shape != x.shape:
            raise PlacementError(
                f"{self.name} backward: dy {dy.shape} {list(dy.placements)} must match "
                f"x {x.shape} {list(x.placements)}"
            )
        grad_pl: list[Placement] = [Partial() if isinstance(p, Shard) else Replicate() for p in x.placements]
        dw = self.local("rmsnorm_dweight", _dweight, x, rstd, dy, placements=grad_pl, shape=(self.hidden,))
        if self.sequence_parallel:
            on_tp = list(dw.placements)
            on_tp[self.tp] = Replicate()
            dw = dw.redistribute(on_tp)  # the all-reduce of the SP param's grad
        self.accumulate("weight", dw)
        w = self.params["weight"]
        return self.local("rmsnorm_dinput", _dinput, x, rstd, dy, w, placements=list(x.placements))

    def _check(self, x: DArray, what: str) -> None:
        if x.ndim < 1 or x.shape[-1] != self.hidden:
            raise ShapeError(
                f"{self.name}: {what} has shape {x.shape}; its last dim must be hidden = {self.hidden}"
            )
        want = Shard(self.seq_dim % x.ndim) if self.sequence_parallel else Replicate()
        got = x.placements[self.tp]
        got = Shard(got.dim % x.ndim) if isinstance(got, Shard) else got
        if got != want:
            mode = f"sequence_parallel (seq_dim={self.seq_dim})" if self.sequence_parallel else "no SP"
            raise PlacementError(
                f"{self.name}: {what} is {got} on the TP mesh dim {self.mesh.names[self.tp]}; "
                f"with {mode} it must be {want}"
            )


def _acc(dtype) -> np.dtype:
    return np.promote_types(dtype, np.float32)


def _rstd(x, eps: float):
    shape = (*x.shape[:-1], 1)
    if is_meta(x):
        out = MetaArray(shape, _acc(x.dtype))
    else:
        v = x.astype(_acc(x.dtype))
        out = 1.0 / np.sqrt(np.square(v).mean(axis=-1, keepdims=True) + eps)
    return out, 2 * x.size, x.nbytes + out.nbytes


def _normalize(x, rstd, w):
    out = MetaArray(x.shape, x.dtype) if is_meta(x) else (x.astype(rstd.dtype) * rstd * w).astype(x.dtype)
    return out, 2 * x.size, x.nbytes + rstd.nbytes + w.nbytes + out.nbytes


def _dweight(x, rstd, dy):
    """dw = sum of dy * x-hat over every row this shard holds."""
    h = x.shape[-1]
    if is_meta(x):
        out = MetaArray((h,), dy.dtype)
    else:
        xhat = (x.astype(rstd.dtype) * rstd).reshape(-1, h)
        out = (dy.astype(rstd.dtype).reshape(-1, h) * xhat).sum(axis=0).astype(dy.dtype)
    return out, 3 * x.size, x.nbytes + rstd.nbytes + dy.nbytes + out.nbytes


def _dinput(x, rstd, dy, w):
    """dx = rstd * (g - x-hat * mean(g * x-hat)) with g = dy * w, per row."""
    if is_meta(x):
        out = MetaArray(x.shape, x.dtype)
    else:
        g = dy.astype(rstd.dtype) * w
        xhat = x.astype(rstd.dtype) * rstd
        out = (rstd * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))).astype(x.dtype)
    return out, 7 * x.size, x.nbytes + rstd.nbytes + dy.nbytes + w.nbytes + out.nbytes
