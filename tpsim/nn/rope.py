"""Rotary position embeddings (RoPE; Su et al. 2021), the Hugging Face Llama layout (rotate_half).

For a head vector x of d features at global position p, pair feature i with feature i + d/2 and
rotate each pair by the angle p * theta^(-2i/d):

    y = x cos(p f) + rotate_half(x) sin(p f)      rotate_half([x1, x2]) = [-x2, x1],  f_i = theta^(-2i/d)
    dx = dy cos(p f) - rotate_half(dy sin(p f))   (the rotation's transpose: the angle negated)

RoPE has no weight and no communication.  It is local to a position, so any split works: heads
split by TP, the batch split by DP, and the sequence split by SP or across ranks.  What a shard must
get right is its positions: they are global, the shard's offset in the whole sequence (the torch.chunk
rule, uneven shards too) plus `offset` (the tokens already in a KV cache when decoding), never a
count restarting at zero on every rank.  `positions` computes them from the placements, so tpsim and
the reference (which calls `rope_tables`) rotate every token by the same angle.

The cos and sin tables are computed in float64 and rounded once to the activation dtype.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray, distribute
from tpsim.errors import ShapeError
from tpsim.meta import MetaArray, is_meta
from tpsim.nn import ops
from tpsim.placement import Replicate, Shard


def rope_tables(positions, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (len(positions), head_dim) for global `positions`, each angle twice ([f, f])."""
    if head_dim % 2:
        raise ShapeError(f"RoPE pairs features i and i + d/2: head_dim = {head_dim} must be even")
    inv_freq = float(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (d/2,)
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)  # (s, d)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def positions(x: DArray, seq_dim: int, offset: int = 0) -> DArray:
    """Each device's global positions along x's `seq_dim`: offset + its shard's rows of the sequence."""
    seq_dim %= x.ndim
    placements = [
        Shard(0) if p == Shard(seq_dim) or p == Shard(seq_dim - x.ndim) else Replicate() for p in x.placements
    ]
    return distribute(np.arange(offset, offset + x.shape[seq_dim]), x.mesh, placements)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, pos, theta: float, seq_axis: int, inverse: bool = False):
    """x (..., s, ..., d) rotated at positions `pos` (s,) along `seq_axis`; `inverse` for the backward.

    6 FLOPs per element (two products, a sum, the table lookups); reads x, writes y.
    """
    if is_meta(x):
        return MetaArray(x.shape, x.dtype), 6 * x.size, 2 * x.nbytes
    cdt = ops.compute_dtype(x.dtype)
    cos, sin = rope_tables(pos, x.shape[-1], theta, cdt)  # (s, d)
    shape = [1] * x.ndim
    shape[seq_axis % x.ndim], shape[-1] = len(pos), x.shape[-1]
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    v = ops.widen(x)
    y = v * cos - rotate_half(v * sin) if inverse else v * cos + rotate_half(v) * sin
    return ops.narrow(y, x.dtype), 6 * x.size, 2 * x.nbytes


class RotaryEmbedding:
    """Applies RoPE to DArrays through a module's `local`, so its FLOPs land in that module's trace."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        if head_dim % 2:
            raise ShapeError(f"RoPE pairs features i and i + d/2: head_dim = {head_dim} must be even")
        self.head_dim, self.theta = head_dim, theta

    def __call__(self, module, x: DArray, seq_axis: int, offset: int = 0, inverse: bool = False) -> DArray:
        pos = positions(x, seq_axis, offset)
        name = "rope_backward" if inverse else "rope"
        return module.local(name, apply_rope, x, pos, self.theta, seq_axis, inverse, placements=x.placements)
