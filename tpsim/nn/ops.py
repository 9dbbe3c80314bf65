"""Local ops on one device's shard, each returning (result, FLOPs, bytes moved to and from memory).

They take NumPy arrays or shape-only `MetaArray`s alike, so a layer written with
them runs on real numbers or on shapes only.  FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

import math

import numpy as np

from tpsim.meta import MetaArray

GELU_C = math.sqrt(2.0 / math.pi)


def _meta(*xs) -> bool:
    return any(isinstance(x, MetaArray) for x in xs)


def matmul(a, b):
    """(..., m, k) @ (..., k, n) -> (..., m, n): 2mkn FLOPs per batch entry."""
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    # bfloat16 (ml_dtypes) matmul returns float32: round back, as torch does after an fp32 accumulate
    out = MetaArray(shape, a.dtype) if _meta(a, b) else np.matmul(a, b).astype(a.dtype, copy=False)
    flops = 2 * math.prod(shape) * a.shape[-1]
    return out, flops, a.nbytes + b.nbytes + out.nbytes


def transpose(a, axes=None):
    """A view: no FLOPs, no bytes."""
    if _meta(a):
        axes = axes or tuple(reversed(range(a.ndim)))
        return MetaArray(tuple(a.shape[i] for i in axes), a.dtype), 0, 0
    return np.transpose(a, axes), 0, 0


def elementwise(fn, *xs, flops_per_element: float = 1.0):
    """fn applied elementwise (with broadcasting); bytes = inputs read + output written."""
    shape = np.broadcast_shapes(*(x.shape for x in xs))
    out = MetaArray(shape, xs[0].dtype) if _meta(*xs) else fn(*xs)
    return out, flops_per_element * math.prod(shape), sum(x.nbytes for x in xs) + out.nbytes


def sum_to(x, shape: tuple[int, ...]):
    """Sum leading dims away so that x has `shape` (the gradient of a broadcast)."""
    rows = math.prod(x.shape[: x.ndim - len(shape)])  # explicit: a piece may be empty
    out = MetaArray(shape, x.dtype) if _meta(x) else x.reshape(rows, *shape).sum(axis=0)
    return out, x.size, x.nbytes + out.nbytes


def reduce_last(fn, x, keepdims: bool = True):
    """A reduction over the last dim (max, sum, ...)."""
    shape = (*x.shape[:-1], 1) if keepdims else x.shape[:-1]
    out = MetaArray(shape, x.dtype) if _meta(x) else fn(x, axis=-1, keepdims=keepdims)
    return out, x.size, x.nbytes + out.nbytes


def gelu(x):
    """GeLU, tanh approximation (as Megatron and GPT-2): 0.5x(1 + tanh(c(x + 0.044715x^3)))."""
    return elementwise(
        lambda v: 0.5 * v * (1 + np.tanh(GELU_C * (v + 0.044715 * (v * v * v)))), x, flops_per_element=8
    )


def gelu_grad(x, dy):
    """d/dx of the tanh GeLU, times dy."""

    def fn(v, g):
        t = np.tanh(GELU_C * (v + 0.044715 * (v * v * v)))
        return g * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * v * v))

    return elementwise(fn, x, dy, flops_per_element=14)
