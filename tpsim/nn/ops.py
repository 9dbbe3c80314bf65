"""Local ops on one device's shard, each returning (result, FLOPs, bytes moved to and from memory).

They take NumPy arrays or shape-only `MetaArray`s alike (a MetaArray answers NumPy's
calls with the shape of the result), so a layer written with them runs on real numbers
or on shapes only.  FLOPs count a multiply-add as 2.  A matmul's result is a `Cost`: it unpacks as
the same 3-tuple and carries its GEMM shape, so that Mesh.compute can price it as a GEMM (the
realistic mode, tpsim/efficiency.py); every other op is priced as memory-bound there.

Precision rule (the one torch's CPU and CUDA kernels follow for half-precision inputs, and the one
reference/ mirrors): an op on bfloat16 or float16 reads its inputs widened to float32, does all of
its arithmetic there (a matmul accumulates in float32, a sum too, GeLU's tanh runs in float32), and
rounds ONCE, to the input's dtype, at its end.  Every op returns its input's dtype.  float32 and
float64 run as they are.  Kernels written outside this file follow the same rule with `widen` and
`narrow`.
"""

from __future__ import annotations

import math

import numpy as np

from tpsim.dtypes import bfloat16
from tpsim.efficiency import Gemm
from tpsim.meta import asarray

GELU_C = math.sqrt(2.0 / math.pi)
LOW_PRECISION = (bfloat16, np.dtype(np.float16))  # computed in float32, rounded once at the end


def compute_dtype(dtype) -> np.dtype:
    """The dtype an op on `dtype` computes in: float32 for bfloat16 / float16, else dtype itself."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype in LOW_PRECISION else dtype


def widen(a):
    """a in its compute dtype (a float32 copy of a bfloat16 / float16 array; anything else as it is)."""
    if isinstance(a, np.ndarray) and a.dtype in LOW_PRECISION:
        return a.astype(np.float32)
    return a


def narrow(out, dtype):
    """The one rounding at an op's end: out in `dtype` (no copy when it already is)."""
    return asarray(out).astype(dtype, copy=False)


class Cost(tuple):
    """(out, flops, bytes), unpacking as the plain 3-tuple, with `gemm`: the shape a matmul is priced
    by (None: a memory-bound op)."""

    gemm: Gemm | None

    def __new__(cls, out, flops, nbytes, gemm: Gemm | None = None):
        self = super().__new__(cls, (out, flops, nbytes))
        self.gemm = gemm
        return self


def gemm_of(result) -> Gemm | None:
    """The GEMM shape an op's result carries (a `Cost` of a matmul), else None."""
    return getattr(result, "gemm", None)


def matmul(a, b):
    """(..., m, k) @ (..., k, n) -> (..., m, n): 2mkn FLOPs per batch entry; half precision accumulates
    in float32 and rounds once.  GEMM shape: a weight (b without batch dims) folds a's leading dims
    into m, one GEMM, as cuBLAS runs a linear layer; otherwise a batched GEMM over the batch dims."""
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    shape = (*batch_shape, a.shape[-2], b.shape[-1])
    out = narrow(np.matmul(widen(a), widen(b)), a.dtype)
    flops = 2 * math.prod(shape) * a.shape[-1]
    k, n = b.shape[-2:]
    if math.prod(b.shape[:-2]) == 1:
        gemm = Gemm(math.prod(a.shape[:-1]), n, k)
    else:
        gemm = Gemm(a.shape[-2], n, k, math.prod(batch_shape))
    return Cost(out, flops, a.nbytes + b.nbytes + out.nbytes, gemm)


def transpose(a, axes=None):
    """A view: no FLOPs, no bytes."""
    return np.transpose(a, axes), 0, 0


def elementwise(fn, *xs, flops_per_element: float = 1.0):
    """fn applied elementwise (with broadcasting); bytes = inputs read + output written.

    fn sees half-precision inputs widened to float32 (Python floats in it stay float32 too), and its
    result is rounded once to the first input's dtype.
    """
    shape = np.broadcast_shapes(*(x.shape for x in xs))
    dtype = xs[0].dtype
    out = narrow(fn(*(widen(x) for x in xs)), dtype)
    return out, flops_per_element * math.prod(shape), sum(x.nbytes for x in xs) + out.nbytes


def sum_to(x, shape: tuple[int, ...]):
    """Sum leading dims away so that x has `shape` (the gradient of a broadcast); float32 accumulator
    for half precision."""
    rows = math.prod(x.shape[: x.ndim - len(shape)])  # explicit: a piece may be empty
    out = narrow(widen(x).reshape(rows, *shape).sum(axis=0), x.dtype)
    return out, x.size, x.nbytes + out.nbytes


def reduce_last(fn, x, keepdims: bool = True):
    """A reduction over the last dim (max, sum, ...); float32 accumulator for half precision."""
    out = narrow(fn(widen(x), axis=-1, keepdims=keepdims), x.dtype)
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
