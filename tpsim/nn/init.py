"""Seeded global weights, so a sharded model and the unsharded one hold the same numbers.

Every module draws its full weight from `numpy.random.default_rng(seed)` and then
cuts it by its placements; the reference draws the very same array.  `init="exact"`
draws small integers (-2..2) stored as floats: every product and partial sum is then
exact, so results are bitwise equal whatever the reduction order (tier 1 of DESIGN).
"""

from __future__ import annotations

import numpy as np

from tpsim.dtypes import resolve_dtype
from tpsim.errors import ArgumentError
from tpsim.meta import MetaArray

INITS = ("normal", "exact", "zeros", "ones")


def global_weight(
    shape: tuple[int, ...], seed: int, init: str | None = "normal", dtype="float32", std: float = 0.02
):
    """The full weight a module starts from; a MetaArray when `init` is None (shape-only)."""
    dtype = resolve_dtype(dtype)
    if init is None:
        return MetaArray(shape, dtype)
    rng = np.random.default_rng(seed)
    if init == "normal":
        return (rng.standard_normal(shape) * std).astype(dtype)
    if init == "exact":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    if init == "zeros":
        return np.zeros(shape, dtype)
    if init == "ones":
        return np.ones(shape, dtype)
    raise ArgumentError(f"unknown init {init!r}; valid: {', '.join(INITS)} or None for shape-only")
