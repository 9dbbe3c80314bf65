"""How far two engines may drift apart on exact data through tanh/exp/log/sqrt: a forward error bound.

On small integers every GEMM is exact until the first libm call; after it the values are arbitrary
floats, and every later reduction rounds.  The engines sum those in different orders (OpenBLAS's
blocking in NumPy, MKL's or oneDNN's in torch, each picked at run time for the CPU it finds), so the
low bits differ, and by how much depends on how many terms were summed, not on the machine.

The bound is the standard one for a sum of n terms in any order (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., eq. 4.4): |computed - exact| <= gamma_n * sum|terms|, gamma_n =
n*u / (1 - n*u), u = eps / 2 the unit roundoff.  A chain of ops adds its ops' errors to first order,
so a result T that ran after ops with k_1, k_2, ... multiply-adds per output element carries

    |T_engine - T_exact| <= (sum_i max(1, k_i) * u_acc + n_store * u_store) * S_T

u_acc is the unit roundoff of the dtype the kernels accumulate in (float32 for bfloat16 and float16,
tpsim/nn/ops.py), u_store that of the dtype each op rounds its result to once (counted only where it
is narrower than u_acc's), n_store the ops plus (t - 1) per all-reduce or reduce-scatter over t ranks
(a ring or tree reduces t partial sums in the storage dtype; in float32 and float64 those t - 1 join
the sum_i instead).  Two engines: twice that.  max(1, k) counts an elementwise op (GeLU, exp, a scale)
as one rounding: the libms round within an ULP.  The order is not assumed: n - 1 <= n holds for
recursive, blocked and pairwise (ceil(log2 n)) sums alike, since which one a BLAS kernel uses is its
choice.  out and dx take the count of the whole run (an overcount for out).

What is measured, not assumed: the k_i (FLOPs / 2 / output elements of every local op tpsim ran
before T's gradient was stored, read off `tpsim.nn.module.local`), the collectives, and S_T, the scale
of T's exact value (max |T| of the same case in float64).  What is modelled: S_T stands for
sum|terms| normwise; an op whose output cancels (LayerNorm's centring, softmax's shift) or that divides
by a small number (1/sigma) amplifies its input's error beyond this first-order count.  Counting every
op that ran before T, not only those on T's path, is the margin that covers it at these sizes; the
table prints the ratio error / bound for every tensor, so the margin is visible, not hidden.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

import tpsim.nn.module as t_module
from tpsim.nn.ops import compute_dtype

REDUCING = ("all_reduce", "reduce_scatter")


def unit_roundoff(dtype) -> float:
    """u = eps / 2: the largest relative error of one rounding to nearest in `dtype`."""
    return float(ml_dtypes.finfo(np.dtype(dtype)).eps) / 2


def reduced(mesh) -> int:
    """Partial sums the mesh's reducing collectives have added so far: group size - 1 each."""
    return sum(c.group_size - 1 for c in mesh.trace.collectives if c.collective in REDUCING)


@dataclass
class Depth:
    """Rounding counts at one point of a run: accumulation roundings, ops and reduced partial sums."""

    acc: float = 0.0  # sum over ops of max(1, multiply-adds per output element)
    ops: int = 0
    wire: int = 0  # partial sums reduced by collectives: (t - 1) each


class RoundingDepth(AbstractContextManager):
    """While open, counts every tpsim local op's roundings, and snapshots the count whenever a module
    stores a gradient (`at[name]`, name as in `named_grads`).  `total` is the count at the end."""

    def __init__(self):
        self.total, self.at, self._saved = Depth(), {}, None

    def __enter__(self):
        local, accumulate, depth = t_module.local, t_module.Module.accumulate, self

        def counting_local(mesh, name, fn, *args, placements, shape=None):
            out = local(mesh, name, fn, *args, placements=placements, shape=shape)
            flops = [rec.flops for rec in mesh.trace.compute[-mesh.size :]]
            sizes = [s.size for s in out.shards]
            depth.total.acc += max(
                (max(1.0, f / (2 * n)) for f, n in zip(flops, sizes, strict=True) if n), default=1.0
            )
            depth.total.ops += 1
            return out

        def counting_accumulate(module, name, grad):
            accumulate(module, name, grad)
            depth.at[f"{module.name}.{name}"] = Depth(depth.total.acc, depth.total.ops, reduced(module.mesh))

        self._saved = (local, accumulate)
        t_module.local, t_module.Module.accumulate = counting_local, counting_accumulate
        return self

    def finish(self, mesh) -> None:
        """Close the count at the end of the run, for out and dx (an overcount for out)."""
        self.total.wire = reduced(mesh)

    def __exit__(self, *exc):
        t_module.local, t_module.Module.accumulate = self._saved
        return False


@dataclass(frozen=True)
class Bound:
    """One tensor's allowed |reference - tpsim|: 2 * (acc * u_acc + store * u_store) * scale."""

    acc: float
    store: int
    u_acc: float
    u_store: float
    scale: float  # max |T| of the exact (float64) result
    value: float = field(init=False)

    def __post_init__(self):
        per_engine = self.acc * self.u_acc + self.store * self.u_store
        object.__setattr__(self, "value", 2 * per_engine * self.scale)

    def describe(self) -> str:
        return (
            f"2(n_acc {self.acc:.0f} x u {self.u_acc:.2g} + n_store {self.store} x u {self.u_store:.2g})"
            f" x max|T| {self.scale:.3g}"
        )


def bound(depth: Depth, dtype, scale: float) -> Bound:
    """The bound for a result of `dtype` that ran after `depth`'s roundings (see the module docstring)."""
    store, acc = np.dtype(dtype), compute_dtype(dtype)
    u_store, u_acc = unit_roundoff(store), unit_roundoff(acc)
    if u_store > u_acc:  # half precision: each op and each reduced partial sum rounds to the storage dtype
        return Bound(depth.acc, depth.ops + depth.wire, u_acc, u_store, scale)
    return Bound(depth.acc + depth.wire, 0, u_acc, u_store, scale)


def rounding_bounds(
    names: list[str], wide: dict[str, list[np.ndarray]], depth: RoundingDepth, owner: str, dtype
) -> dict[str, Bound]:
    """Per result name ("out", "dx", "grad.<param>"): its Bound, from the wide run's values and counts."""
    out = {}
    for name in names:
        key = f"{owner}.{name.removeprefix('grad.')}"
        d = depth.at.get(key, depth.total) if name.startswith("grad.") else depth.total
        scale = max((float(np.max(np.abs(s), initial=0.0)) for s in wide[name]), default=0.0)
        out[name] = bound(d, dtype, scale if math.isfinite(scale) else math.inf)
    return out
