"""Rotary position embeddings on one rank: the mirror of tpsim/nn/rope.py.

    y = x cos(p f) + rotate_half(x) sin(p f)       at global positions p

The tables are tpsim's (`rope_tables`, float64 rounded once to the compute dtype), so both engines
rotate every token by the same angle; autograd gives the backward (the rotation's transpose).
"""

from __future__ import annotations

import torch

from reference.module import narrow, to_torch, widen
from tpsim.nn.rope import rope_tables


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, positions, theta: float, seq_axis: int) -> torch.Tensor:
    """x (..., s, ..., d) rotated at `positions` (s,) along `seq_axis`."""
    v = widen(x)
    cos, sin = (to_torch(a, x.device) for a in rope_tables(positions, x.shape[-1], theta, _np(v.dtype)))
    shape = [1] * x.ndim
    shape[seq_axis % x.ndim], shape[-1] = len(positions), x.shape[-1]
    return narrow(v * cos.reshape(shape) + rotate_half(v) * sin.reshape(shape), x.dtype)


def _np(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.float64: "float64"}[dtype]
