"""Shape-only arrays: a shape and a dtype, no data.

Layers and collectives accept them wherever they accept NumPy arrays and then
compute bytes, time and memory without allocating, so a 175B-parameter model
costs milliseconds to analyse.
"""

from __future__ import annotations

import math

import numpy as np

from tpsim.errors import ShapeError


class MetaArray:
    """An array that has a shape and a dtype but holds no data."""

    __slots__ = ("dtype", "shape")
    __array_priority__ = 1000

    def __init__(self, shape: tuple[int, ...] | int, dtype="float32"):
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def reshape(self, *shape) -> MetaArray:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise ShapeError(f"cannot reshape a meta array of size {self.size} into shape {tuple(shape)}")
        return MetaArray(shape, self.dtype)

    def astype(self, dtype) -> MetaArray:
        return MetaArray(self.shape, dtype)

    def __eq__(self, other) -> bool:
        return isinstance(other, MetaArray) and other.shape == self.shape and other.dtype == self.dtype

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"MetaArray(shape={self.shape}, dtype={self.dtype})"


def meta(shape: tuple[int, ...] | int, dtype="float32") -> MetaArray:
    """A shape-only stand-in for an array: `tpsim.meta((4096, 4096), "bfloat16")`."""
    from tpsim import validate
    from tpsim.dtypes import resolve_dtype

    dims = (shape,) if validate.is_int(shape) or not isinstance(shape, tuple | list) else tuple(shape)
    if any(not validate.is_int(s) or s < 0 for s in dims):
        raise ShapeError(f"meta shape {shape!r} is invalid: every dim needs an int size >= 0")
    return MetaArray(dims, resolve_dtype(dtype))


def is_meta(x) -> bool:
    return isinstance(x, MetaArray)
