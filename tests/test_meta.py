"""A MetaArray answers NumPy as an array of its shape and dtype would: same result shape, same dtype."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tpsim.dtypes import bfloat16
from tpsim.meta import MetaArray, asarray

DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64), bfloat16, np.dtype(np.int64)]
shapes = array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=4)
nonempty = array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)  # a max needs an element


def same(fn, *arrays):
    """fn on MetaArrays has the shape and dtype fn on zero-filled arrays has."""
    want = fn(*(np.zeros(a.shape, a.dtype) for a in arrays))
    got = fn(*arrays)
    if isinstance(want, list):
        assert [(g.shape, g.dtype) for g in got] == [(w.shape, w.dtype) for w in want]
    else:
        assert isinstance(got, MetaArray), got
        assert (got.shape, got.dtype) == (np.shape(want), np.asarray(want).dtype)


@given(nonempty, st.sampled_from(DTYPES))
def test_ufuncs_and_operators(shape, dtype):
    a = MetaArray(shape, dtype)
    same(lambda x: 0.5 * x * (1 + np.tanh(0.7 * (x + 0.04 * (x * x * x)))), a)
    same(lambda x: x >= 2, a)
    same(lambda x: np.exp(x - x.max(axis=-1, keepdims=True)), a)
    same(lambda x: x.astype(np.float32) / np.sqrt(x.astype(np.float32) + 1e-5), a)
    same(lambda x, y: x + y[..., :1], a, MetaArray(shape, np.float32))


@given(shapes, st.sampled_from(DTYPES), st.integers(0, 3))
def test_matmul(shape, dtype, n):
    same(np.matmul, MetaArray(shape, dtype), MetaArray((*shape[:-2], shape[-1], n), dtype))


@given(nonempty, st.sampled_from(DTYPES), st.data())
def test_views_indexing_and_reductions(shape, dtype, data):
    a = MetaArray(shape, dtype)
    dim = data.draw(st.integers(0, len(shape) - 1))
    same(lambda x: np.ascontiguousarray(np.moveaxis(x, dim, 0), like=x), a)
    same(lambda x: x.transpose(), a)
    same(lambda x: x[..., 1:3, None], a)
    same(lambda x: x.reshape(-1, shape[-1]).sum(axis=0), a)
    same(lambda x: x.mean(axis=dim, keepdims=True), a)
    same(lambda x: np.max(x, axis=-1, initial=-1), a)
    same(lambda x: x.sum(), a)
    same(lambda x: x.copy(), a)


@given(shapes, st.sampled_from(DTYPES), st.data())
def test_functions(shape, dtype, data):
    a = MetaArray(shape, dtype)
    dim = data.draw(st.integers(0, len(shape) - 1))
    n = shape[dim]
    cut = data.draw(st.integers(0, n))
    same(lambda x: np.concatenate([x, x], axis=dim), a)
    same(lambda x: np.stack([x, x, x], axis=dim), a)
    same(lambda x: np.split(x, [cut], axis=dim), a)
    same(lambda x: np.pad(x, [(0, 2 if i == dim else 0) for i in range(x.ndim)]), a)
    same(lambda x: np.take(x, np.arange(cut), axis=dim), a)
    same(lambda x: np.full_like(x, -0.0), a)
    same(lambda x: np.zeros(x.shape, x.dtype, like=x), a)
    same(lambda x: np.empty(x.shape, x.dtype, like=x), a)


def test_writes_are_dropped_and_asarray_keeps_it():
    a = MetaArray((3, 4), np.float32)
    a[1:, :2] = 5.0
    assert a == MetaArray((3, 4), np.float32)
    assert a != MetaArray((3, 4), np.float16)  # structural (in)equality, not an elementwise ufunc
    assert asarray(a) is a
    assert isinstance(asarray([1, 2]), np.ndarray)


def test_an_unhandled_function_names_itself():
    with pytest.raises(TypeError, match="where"):
        np.where(MetaArray((2,), bool), 1.0, 0.0)
