"""Shape-only arrays: a shape and a dtype, no data.

Layers and collectives accept them wherever they accept NumPy arrays and then
compute bytes, time and memory without allocating, so a 175B-parameter model
costs milliseconds to analyse.

A MetaArray answers NumPy for itself, through NumPy's own override protocols, so
one kernel serves both: ufuncs and operators (`x * w + b`, `np.exp`, `np.matmul`)
broadcast shapes and resolve dtypes as NumPy would; basic indexing, `reshape`,
`astype`, `transpose` and reductions give the shape of their result; writes are
dropped; and the NumPy functions in `_HANDLED` (moveaxis, concatenate, stack, pad,
take, split, full_like, zeros/empty/full with `like=`, sum/max/min/mean) return
MetaArrays.  Anything else raises NumPy's TypeError, naming the function.
`asarray` is the one coercion NumPy cannot dispatch: use `tpsim.meta.asarray`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np

from tpsim import validate
from tpsim.dtypes import resolve_dtype
from tpsim.errors import ShapeError

_HANDLED: dict[Callable, Callable] = {}


def _implements(*funcs: Callable):
    def register(impl: Callable) -> Callable:
        for f in funcs:
            _HANDLED[f] = impl
        return impl

    return register


class MetaArray(np.lib.mixins.NDArrayOperatorsMixin):
    """An array that has a shape and a dtype but holds no data."""

    __slots__ = ("dtype", "shape")

    def __init__(self, shape: tuple[int, ...] | int, dtype="float32"):
        self.shape = (shape,) if isinstance(shape, int) else tuple(map(int, shape))
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

    @classmethod
    def _of(cls, shape: tuple[int, ...], dtype: np.dtype) -> MetaArray:
        """A MetaArray from a tuple of ints and an np.dtype, unchecked (the hot path of shape-only runs)."""
        out = object.__new__(cls)
        out.shape, out.dtype = shape, dtype
        return out

    def reshape(self, *dims) -> MetaArray:
        shape = tuple(dims[0] if len(dims) == 1 and isinstance(dims[0], tuple | list) else dims)
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise ShapeError(f"cannot reshape a meta array of size {self.size} into shape {tuple(shape)}")
        return MetaArray(shape, self.dtype)

    def astype(self, dtype, copy: bool = True) -> MetaArray:
        return MetaArray(self.shape, dtype)

    def copy(self) -> MetaArray:
        return MetaArray._of(self.shape, self.dtype)

    def transpose(self, *axes) -> MetaArray:
        order = tuple(axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes)
        return _view(np.transpose, self, order or None)

    def sum(self, axis=None, keepdims: bool = False, **kw) -> MetaArray:
        return _reduce(self, "sum", axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False, **kw) -> MetaArray:
        return _reduce(self, "mean", axis, keepdims)

    def max(self, axis=None, keepdims: bool = False, **kw) -> MetaArray:
        return _reduce(self, "max", axis, keepdims)

    def min(self, axis=None, keepdims: bool = False, **kw) -> MetaArray:
        return _reduce(self, "min", axis, keepdims)

    def __getitem__(self, key) -> MetaArray:
        return MetaArray._of(_shape_view(self.shape)[key].shape, self.dtype)  # basic indexing, no data

    def __setitem__(self, key, value) -> None:
        """Writes into a shape-only array are dropped: there is nothing to hold them."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or "out" in kwargs:
            return NotImplemented
        dtype = kwargs.get("dtype")
        out = _apply(ufunc, *inputs)
        return out if dtype is None else out.astype(dtype)

    # + - * / straight to _apply, past NumPy's ufunc dispatch: the bulk of a shape-only run's calls
    def __add__(self, other):
        return _apply(np.add, self, other)

    def __radd__(self, other):
        return _apply(np.add, other, self)

    def __sub__(self, other):
        return _apply(np.subtract, self, other)

    def __rsub__(self, other):
        return _apply(np.subtract, other, self)

    def __mul__(self, other):
        return _apply(np.multiply, self, other)

    def __rmul__(self, other):
        return _apply(np.multiply, other, self)

    def __truediv__(self, other):
        return _apply(np.true_divide, self, other)

    def __rtruediv__(self, other):
        return _apply(np.true_divide, other, self)

    def __array_function__(self, func, types, args, kwargs):
        impl = _HANDLED.get(func)
        return NotImplemented if impl is None else impl(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, MetaArray) and other.shape == self.shape and other.dtype == self.dtype

    def __ne__(self, other) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"MetaArray(shape={self.shape}, dtype={self.dtype})"


def meta(shape: tuple[int, ...] | int, dtype="float32") -> MetaArray:
    """A shape-only stand-in for an array: `tpsim.meta((4096, 4096), "bfloat16")`."""
    dims = (shape,) if validate.is_int(shape) or not isinstance(shape, tuple | list) else tuple(shape)
    if any(not validate.is_int(s) or s < 0 for s in dims):
        raise ShapeError(f"meta shape {shape!r} is invalid: every dim needs an int size >= 0")
    return MetaArray(dims, resolve_dtype(dtype))


def is_meta(x) -> bool:
    return isinstance(x, MetaArray)


def asarray(x):
    """np.asarray, but a shape-only array stays one (NumPy dispatches every function but this)."""
    return x if is_meta(x) else np.asarray(x)


def _apply(ufunc, *inputs) -> MetaArray:
    """ufunc(*inputs) as NumPy would shape and type it; (..., m, k) @ (..., k, n) for matmul."""
    shapes: tuple[tuple[int, ...], ...] = tuple(getattr(x, "shape", ()) for x in inputs)
    if ufunc is np.matmul:
        a, b = shapes[0], shapes[1]
        shape = (*_broadcast(a[:-2], b[:-2]), a[-2], b[-1])
    else:
        shape = shapes[0] if len(set(shapes)) == 1 else _broadcast(*shapes)
    return MetaArray._of(shape, _ufunc_dtype(ufunc, tuple(getattr(x, "dtype", type(x)) for x in inputs)))


@functools.lru_cache(maxsize=4096)
def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    return np.broadcast_shapes(*shapes)


@functools.lru_cache(maxsize=4096)
def _shape_view(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only array of `shape` over one byte (stride 0): NumPy's own indexing rules, no memory."""
    return np.broadcast_to(np.empty((), np.int8), shape)


def _view(func: Callable, a: MetaArray, *args, **kwargs) -> MetaArray:
    return MetaArray._of(func(_shape_view(a.shape), *args, **kwargs).shape, a.dtype)


@functools.lru_cache(maxsize=1024)
def _ufunc_dtype(ufunc, dtypes: tuple) -> np.dtype:
    """The dtype NumPy gives ufunc(*inputs): found on one-element stand-ins (Python scalars stay weak)."""
    stand_ins = [d(1) if isinstance(d, type) else np.ones(1, d) for d in dtypes]
    with np.errstate(all="ignore"):
        if ufunc is np.matmul:
            stand_ins = [s.reshape(1, 1) for s in stand_ins]
        return np.asarray(ufunc(*stand_ins)).dtype


@functools.lru_cache(maxsize=256)
def _reduced_dtype(name: str, dtype: np.dtype) -> np.dtype:
    return getattr(np.ones(1, dtype), name)().dtype


def _reduce(a: MetaArray, name: str, axis, keepdims: bool) -> MetaArray:
    axes = range(a.ndim) if axis is None else [axis] if isinstance(axis, int) else axis
    axes = {ax % a.ndim for ax in axes}
    shape = [1 if i in axes else n for i, n in enumerate(a.shape) if keepdims or i not in axes]
    return MetaArray(tuple(shape), _reduced_dtype(name, a.dtype))


for _view_fn in (np.moveaxis, np.transpose, np.swapaxes, np.expand_dims, np.squeeze, np.broadcast_to):
    _HANDLED[_view_fn] = functools.partial(_view, _view_fn)  # NumPy's own rules, on a stride-0 array


@_implements(np.ascontiguousarray, np.asarray)
def _as_is(a, dtype=None, **kwargs):
    return a if dtype is None else MetaArray(a.shape, dtype)


def _reduction(name: str) -> Callable:
    return lambda a, axis=None, keepdims=False, **kw: _reduce(a, name, axis, keepdims)


for _reduce_fn, _name in ((np.sum, "sum"), (np.mean, "mean"), (np.max, "max"), (np.min, "min")):
    _HANDLED[_reduce_fn] = _reduction(_name)  # by name: NumPy 1.x calls np.max "amax"


@_implements(np.concatenate)
def _concatenate(arrays, axis=0, **kwargs):
    shape = list(arrays[0].shape)
    shape[axis] = sum(x.shape[axis] for x in arrays)
    return MetaArray(tuple(shape), np.result_type(*(x.dtype for x in arrays)))


@_implements(np.stack)
def _stack(arrays, axis=0, **kwargs):
    shape = list(arrays[0].shape)
    shape.insert(axis % (len(shape) + 1), len(arrays))
    return MetaArray(tuple(shape), np.result_type(*(x.dtype for x in arrays)))


@_implements(np.split)
def _split(a, indices_or_sections, axis=0):
    n = a.shape[axis]
    if isinstance(indices_or_sections, int):
        bounds = [i * n // indices_or_sections for i in range(indices_or_sections + 1)]
    else:
        bounds = [0, *(min(int(i), n) for i in indices_or_sections), n]
    lead = (slice(None),) * (axis % a.ndim)
    return [a[(*lead, slice(lo, max(lo, hi)))] for lo, hi in itertools.pairwise(bounds)]


@_implements(np.pad)
def _pad(a, pad_width, mode="constant", **kwargs):
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (a.ndim, 2))
    shape = tuple(n + int(lo) + int(hi) for n, (lo, hi) in zip(a.shape, widths, strict=True))
    return MetaArray(shape, a.dtype)


@_implements(np.take)
def _take(a, indices, axis=None, **kwargs):
    picked = getattr(indices, "shape", np.shape(indices))
    if axis is None:
        return MetaArray(picked, a.dtype)
    axis %= a.ndim
    return MetaArray((*a.shape[:axis], *picked, *a.shape[axis + 1 :]), a.dtype)


@_implements(np.full_like, np.zeros_like, np.ones_like, np.empty_like)
def _like(a, *args, dtype=None, shape=None, **kwargs):
    return MetaArray(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


@_implements(np.zeros, np.empty, np.ones)
def _new(shape, dtype=float, **kwargs):
    return MetaArray(shape, dtype)


@_implements(np.full)
def _new_full(shape, fill_value, dtype=None, **kwargs):
    return MetaArray(shape, np.result_type(fill_value) if dtype is None else dtype)
