"""Placements, as in PyTorch DTensor: how a global array lives on one mesh dim.

    Shard(d)    S(d)  each device of the mesh dim holds one piece of tensor dim d
    Replicate() R     each device holds the whole array
    Partial(op) P     each device holds a term; the array is their reduction by `op`
                      (avg: the rank-order sum divided once by p, so exact only when the sum is)

Uneven shards follow DTensor's layout, the `torch.chunk` rule: pieces of
ceil(n / p) elements, the last ones shorter or empty.  n = 5 over p = 4 gives
[2, 2, 1, 0], so a tensor sharded here and by DTensor has the same pieces on the
same ranks.  On an n-d mesh the mesh dims that shard one tensor dim cut it in
mesh-dim order, outer first (`local_slices`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpsim.errors import PlacementError, ReduceOpError

REDUCE_OPS = ("sum", "avg", "max", "min", "prod")


@dataclass(frozen=True)
class Placement:
    """Base class of Shard, Replicate and Partial."""

    def is_shard(self, dim: int | None = None) -> bool:
        return isinstance(self, Shard) and (dim is None or self.dim == dim)

    def is_replicate(self) -> bool:
        return isinstance(self, Replicate)

    def is_partial(self) -> bool:
        return isinstance(self, Partial)


@dataclass(frozen=True)
class Shard(Placement):
    dim: int

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or isinstance(self.dim, bool):
            raise PlacementError(f"Shard(dim) needs an int dim, got {self.dim!r}")

    def __repr__(self) -> str:
        return f"S({self.dim})"


@dataclass(frozen=True)
class Replicate(Placement):
    def __repr__(self) -> str:
        return "R"


@dataclass(frozen=True)
class Partial(Placement):
    op: str = "sum"

    def __post_init__(self) -> None:
        if self.op not in REDUCE_OPS:
            raise ReduceOpError(f"Partial op {self.op!r} is unknown; valid: {', '.join(REDUCE_OPS)}")

    def __repr__(self) -> str:
        return "P" if self.op == "sum" else f"P({self.op})"


def chunk_sizes(n: int, p: int) -> list[int]:
    """Sizes of the p pieces of n elements under the torch.chunk rule (trailing pieces may be empty)."""
    step = -(-n // p) if n else 0
    return [max(0, min(step, n - i * step)) for i in range(p)]


def chunk_offsets(n: int, p: int) -> list[int]:
    """Start of each piece under the torch.chunk rule; a piece i spans [off[i], off[i] + size[i])."""
    step = -(-n // p) if n else 0
    return [min(i * step, n) for i in range(p)]


def normalize_dim(dim: int, ndim: int, what: str = "Shard") -> int:
    """Resolve a negative dim; a dim out of range raises PlacementError naming the valid range."""
    if not -ndim <= dim < ndim:
        raise PlacementError(
            f"{what} dim {dim} is out of range for a {ndim}-d array; valid dims are {-ndim}..{ndim - 1}"
            if ndim
            else f"{what} dim {dim}: a 0-d array has no dims to shard"
        )
    return dim % ndim


def partial_identity(op: str, dtype: np.dtype):
    """The neutral term of a non-holding rank: -0.0 for float sums, since x + (-0.0) is x, sign and all."""
    if op == "prod":
        return 1
    return -0.0 if np.dtype(dtype).kind == "f" or str(dtype) == "bfloat16" else 0


def local_slices(
    shape: tuple[int, ...], mesh, placements: Sequence[Placement], device: int
) -> tuple[slice, ...]:
    """The block of the global array that `device` holds."""
    return _slices(tuple(shape), mesh.shape, tuple(placements), device)


@functools.lru_cache(maxsize=1 << 16)  # every layer op asks the same few questions, once per device
def _slices(shape: tuple[int, ...], mesh_shape: tuple[int, ...], placements: tuple, device: int):
    lo, hi = [0] * len(shape), list(shape)
    coord = []
    for size in reversed(mesh_shape):  # Mesh.coordinate, from the shape alone
        coord.append(device % size)
        device //= size
    coord.reverse()
    for i, p in enumerate(placements):
        if isinstance(p, Shard):
            n = hi[p.dim] - lo[p.dim]
            start = lo[p.dim] + chunk_offsets(n, mesh_shape[i])[coord[i]]
            lo[p.dim], hi[p.dim] = start, start + chunk_sizes(n, mesh_shape[i])[coord[i]]
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=False))


@functools.lru_cache(maxsize=1 << 14)
def local_shapes(shape: tuple[int, ...], mesh_shape: tuple[int, ...], placements: tuple) -> list:
    """The shape of every device's block, in device order."""
    n = 1
    for s in mesh_shape:
        n *= s
    return [tuple(x.stop - x.start for x in _slices(shape, mesh_shape, placements, d)) for d in range(n)]


def check_placements(placements: list[Placement], shape: tuple[int, ...], mesh) -> list[Placement]:
    """One Placement per mesh dim, Shard dims resolved against `shape`, at most one Partial op."""
    if len(placements) != mesh.ndim:
        raise PlacementError(
            f"{len(placements)} placements {placements} for a {mesh.ndim}-d mesh {mesh.names}; "
            "give one per mesh dim"
        )
    out = []
    for i, p in enumerate(placements):
        if not isinstance(p, Placement):
            raise PlacementError(
                f"placement {p!r} on mesh dim {mesh.names[i]} is not Shard, Replicate or Partial"
            )
        out.append(Shard(normalize_dim(p.dim, len(shape))) if isinstance(p, Shard) else p)
    ops = {p.op for p in out if isinstance(p, Partial)}
    if len(ops) > 1:
        raise PlacementError(f"placements {out} mix Partial ops {sorted(ops)}; as in DTensor, use one op")
    return out
