"""Placements, as in PyTorch DTensor: how a global array lives on one mesh dim.

    Shard(d)    S(d)  each device of the mesh dim holds one piece of tensor dim d
    Replicate() R     each device holds the whole array
    Partial(op) P     each device holds a term; the array is their reduction by `op`
                      (avg: the rank-order sum divided once by p, so exact only when the sum is)

Uneven shards follow DTensor's layout, the `torch.chunk` rule: pieces of
ceil(n / p) elements, the last ones shorter or empty.  n = 5 over p = 4 gives
[2, 2, 1, 0], so a tensor sharded here and by DTensor has the same pieces on the
same ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

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
