"""Fused weights: several logical matrices stored as one, laid out so that Shard(0) hands every TP
rank its own piece of each (Megatron's fused QKV and gated linear_fc1).

    fuse_rows([A, B], t) = [A_0; B_0; A_1; B_1; ...; A_{t-1}; B_{t-1}]    A_i: rank i's rows of A

Each part is drawn whole from its own seed, as the unsharded layer holds it; the fused array is
then what the column-parallel linear stores.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import distribute
from tpsim.errors import ShapeError
from tpsim.meta import MetaArray, is_meta


def fuse_rows(parts: list, t: int):
    """Interleave the parts' equal row blocks per rank (every part's rows must divide by t)."""
    for p in parts:
        if p.shape[0] % t:
            raise ShapeError(f"a fused part of {p.shape[0]} rows does not split over t = {t} ranks")
    rows = sum(p.shape[0] for p in parts)
    if any(is_meta(p) for p in parts):
        return MetaArray((rows, *parts[0].shape[1:]), parts[0].dtype)
    blocks = [np.split(p, t, axis=0) for p in parts]
    return np.concatenate([b[i] for i in range(t) for b in blocks], axis=0)


def install(linear, key: str, array) -> None:
    """Replace a linear layer's parameter `key` by `array`, cut by the placements it already has."""
    old = linear.params[key]
    if tuple(old.shape) != tuple(array.shape):
        raise ShapeError(f"{linear.name}.{key}: {tuple(array.shape)} does not replace {tuple(old.shape)}")
    linear.param(key, distribute(array, linear.mesh, list(old.placements)))
