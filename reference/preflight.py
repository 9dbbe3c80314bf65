"""Preflight: before a collective, every rank shows the others what it is about to call.

Each rank packs (seq, collective, reduce op, root, dims, dtype, shape) into a fixed-size int64
descriptor; one all_gather gives every rank every descriptor, so every rank sees the same table and
raises the same clear error, instead of a hang or a silently wrong result:

    all_reduce #3: rank 1 has shape (4, 6), ranks 0,2,3 have (4, 8)

The same exchange tells a rank the other ranks' shapes when it needs them (uneven all_gather,
gather and all_to_all without `sizes`). It is control traffic: not counted in the Comm's bytes and
not recorded as a collective.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tpsim.collectives.schedule import COLLECTIVES
from tpsim.errors import CollectiveMismatch, DTypeError, ShapeError
from tpsim.placement import REDUCE_OPS

MAX_DIMS = 24
FIELDS = 8  # seq, collective, reduce op, root, dim, other dim, dtype, ndim
DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex64,
    torch.complex128,
)
NONE = -1


@dataclass(frozen=True)
class Descriptor:
    seq: int
    collective: str
    reduce_op: str | None
    root: int | None
    dim: int | None  # the cut dim (all_gather, gather, reduce_scatter, scatter; all_to_all: split dim)
    other_dim: int | None  # all_to_all: the concat dim
    dtype: torch.dtype | None  # None: this rank passed no tensor (non-root of broadcast or scatter)
    shape: tuple[int, ...] | None

    def encode(self) -> torch.Tensor:
        if self.shape is not None and len(self.shape) > MAX_DIMS:
            raise ShapeError(
                f"{self.collective}: a tensor of {len(self.shape)} dims; preflight takes <= {MAX_DIMS}"
            )
        shape = self.shape or ()
        head = [
            self.seq,
            COLLECTIVES.index(self.collective),
            NONE if self.reduce_op is None else REDUCE_OPS.index(self.reduce_op),
            _opt(self.root),
            _opt(self.dim),
            _opt(self.other_dim),
            NONE if self.dtype is None else DTYPES.index(self.dtype),
            NONE if self.shape is None else len(shape),
        ]
        return torch.tensor(head + list(shape) + [0] * (MAX_DIMS - len(shape)), dtype=torch.int64)

    @classmethod
    def decode(cls, row: list[int]) -> Descriptor:
        seq, coll, red, root, dim, other, dt, ndim = row[:FIELDS]
        return cls(
            seq,
            COLLECTIVES[coll],
            None if red == NONE else REDUCE_OPS[red],
            None if root == NONE else root,
            None if dim == NONE else dim,
            None if other == NONE else other,
            None if dt == NONE else DTYPES[dt],
            None if ndim == NONE else tuple(row[FIELDS : FIELDS + ndim]),
        )


def _opt(v: int | None) -> int:
    return NONE if v is None else int(v)


def exchange(mine: Descriptor, group, device: torch.device) -> list[Descriptor]:
    """Every rank's descriptor, in group-rank order (one small all_gather)."""
    size = dist.get_world_size(group)
    row = mine.encode().to(device)
    table = torch.empty(size * row.numel(), dtype=torch.int64, device=device)
    dist.all_gather_single(table, row, group=group)
    return [Descriptor.decode(r) for r in table.view(size, -1).tolist()]


def check(descs: list[Descriptor], ranks: list[int]) -> None:
    """Raise a clear error naming the ranks whose descriptor differs from the others'."""
    first = descs[0]
    _same(descs, ranks, f"call #{first.seq}", "called", lambda d: d.collective, CollectiveMismatch)
    _same(descs, ranks, f"{first.collective}", "call number", lambda d: f"#{d.seq}", CollectiveMismatch)
    what = f"{first.collective} #{first.seq}"
    for field in ("reduce_op", "root", "dim", "other_dim"):
        _same(
            descs,
            ranks,
            what,
            f"{field.replace('_', ' ')}",
            lambda d, f=field: getattr(d, f),
            CollectiveMismatch,
        )
    held = [(d, r) for d, r in zip(descs, ranks, strict=True) if d.dtype is not None]
    if not held:
        raise ShapeError(f"{what}: no rank passed a tensor; the root must pass one")
    ds, rs = [d for d, _ in held], [r for _, r in held]
    _same(ds, rs, what, "dtype", lambda d: str(d.dtype).removeprefix("torch."), DTypeError)
    _same(ds, rs, what, "ndim", lambda d: len(d.shape), ShapeError)
    free = _free_dim(first)  # the one dim allowed to differ (uneven shards), if any
    label = "shape" if free is None else f"shape (except dim {free})"
    _same(ds, rs, what, label, lambda d: _masked(d.shape, free), ShapeError)


def _free_dim(d: Descriptor) -> int | None:
    if d.collective in ("all_gather", "gather"):
        return d.dim
    if d.collective == "all_to_all":
        return d.other_dim
    return None


def _masked(shape: tuple[int, ...], free: int | None) -> tuple:
    return tuple("*" if i == free else n for i, n in enumerate(shape))


def _same(descs, ranks, what: str, field: str, key, error: type[Exception]) -> None:
    values = [key(d) for d in descs]
    counts = Counter(values)
    if len(counts) == 1:
        return
    # the value most ranks hold is the reference (ties: the lowest rank's); the others are named
    common = max(counts, key=lambda v: (counts[v], -values.index(v)))

    def verb(n: int) -> str:
        return "called" if field == "called" else "has" if n == 1 else "have"

    odd = [
        f"{_ranks([r for r, v in zip(ranks, values, strict=True) if v == x])} {verb(counts[x])}"
        f"{'' if field == 'called' else ' ' + field} {_fmt(x)}"
        for x in dict.fromkeys(values)
        if x != common
    ]
    rest = [r for r, v in zip(ranks, values, strict=True) if v == common]
    raise error(f"{what}: {'; '.join(odd)}; {_ranks(rest)} {verb(len(rest))} {_fmt(common)}")


def _ranks(rs: list[int]) -> str:
    return f"rank {rs[0]}" if len(rs) == 1 else "ranks " + ",".join(map(str, rs))


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(map(str, v)) + ("," if len(v) == 1 else "") + ")"
    return str(v)
