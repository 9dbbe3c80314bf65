"""redistribute: change placements, one mesh dim at a time, with the collective each change needs.

    S(d) -> R     all-gather          P -> R     all-reduce
    P -> S(d)     reduce-scatter      S(i) -> S(j)  all-to-all
    R -> S(d)     local slice         R -> P     local: rank 0 keeps the value (sum, prod),
                                                 every rank keeps it (avg, max, min)
    S(d) -> P     not allowed (as in DTensor): go through R

Mesh dims are visited innermost first.  A mesh dim may change a Shard(d) only
when no mesh dim inside it also shards d at that moment; otherwise the pieces
along it are not contiguous and the change is refused with the order that
works.  Every change is planned and checked before the first byte moves.
"""

from __future__ import annotations

import numpy as np

from tpsim.collectives import all_gather, all_reduce, all_to_all, reduce_scatter
from tpsim.device import allocate_all, free_all
from tpsim.errors import PlacementError
from tpsim.meta import MetaArray
from tpsim.placement import (
    Partial,
    Placement,
    Replicate,
    Shard,
    check_placements,
    chunk_offsets,
    chunk_sizes,
    local_shapes,
    partial_identity,
)


def plan(src: list[Placement], dst: list[Placement], names: tuple[str, ...]) -> list[tuple[int, Placement]]:
    """The (mesh dim, new placement) changes in the order they run; PlacementError if one is not allowed."""
    current, steps = list(src), []
    for i in reversed(range(len(src))):
        a, b = current[i], dst[i]
        if a == b:
            continue
        if isinstance(a, Shard) and isinstance(b, Partial):
            raise PlacementError(
                f"mesh dim {names[i]}: {a} -> {b} is not allowed; redistribute to R first, then P"
            )
        if isinstance(a, Partial) and isinstance(b, Partial):
            raise PlacementError(
                f"mesh dim {names[i]}: {a} -> {b} changes the reduction op; reduce to R first"
            )
        for dim in {p.dim for p in (a, b) if isinstance(p, Shard)}:
            inner = [names[j] for j in range(i + 1, len(current)) if current[j] == Shard(dim)]
            if inner:
                raise PlacementError(
                    f"mesh dim {names[i]}: {a} -> {b} while inner mesh dim(s) {inner} also shard tensor dim "
                    f"{dim}; change those first (redistribute in two calls)"
                )
        steps.append((i, b))
        current[i] = b
    return steps


def redistribute(x, placements: list[Placement], *, algorithm: str | None = None, label: str | None = None):
    placements = check_placements(placements, x.shape, x.mesh)
    steps = plan(list(x.placements), placements, x.mesh.names)
    # a dry run on shapes, on a scratch copy of the mesh: any error (shapes, memory) raises here,
    # before the first byte moves, so a rejected call leaves the trace and memory as they were
    if len(steps) > 1:
        dry = [MetaArray(s.shape, s.dtype) for s in x.shards]
        _run_chain(x.mesh.scratch_copy(), dry, list(x.placements), steps, algorithm, label, x.category)
    elif steps:  # one collective checks all it needs before it moves a byte, but for the result's memory
        for d, shape in enumerate(local_shapes(tuple(x.shape), x.mesh.shape, tuple(placements))):
            x.mesh.devices[d].check(int(np.prod(shape, dtype=np.int64)) * x.dtype.itemsize)
    shards, current = _run_chain(
        x.mesh, list(x.shards), list(x.placements), steps, algorithm, label, x.category
    )
    return type(x)(shards, x.mesh, current, x.shape, x.category)  # a DArray: darray.py imports this module


def _run_chain(mesh, shards, current, steps, algorithm, label, category):
    """Apply the changes in order; each intermediate result is charged to its devices while it lives."""
    held: dict[int, int] = {}
    try:
        for i, new in steps:
            shards = _change(mesh, shards, i, current[i], new, algorithm, label)
            request = {d: int(s.nbytes) for d, s in enumerate(shards) if s.nbytes}
            allocate_all(mesh.devices, request, category)
            free_all(mesh.devices, held, category)
            held = request
            current[i] = new
    finally:
        free_all(mesh.devices, held, category)  # the result DArray charges itself
    return shards, current


def _change(mesh, shards, i, a: Placement, b: Placement, algorithm, label) -> list:
    kw = {"mesh_dim": i, "algorithm": algorithm, "label": label}
    if isinstance(a, Shard) and isinstance(b, Replicate):
        moved = all_gather([_front(s, a.dim) for s in shards], mesh, **kw)
        return [_back(s, a.dim) for s in moved]
    if isinstance(a, Partial) and isinstance(b, Replicate):
        return all_reduce(shards, mesh, op=a.op, **kw)
    if isinstance(a, Partial) and isinstance(b, Shard):
        moved = reduce_scatter([_front(s, b.dim) for s in shards], mesh, op=a.op, **kw)
        return [_back(s, b.dim) for s in moved]
    if isinstance(a, Replicate) and isinstance(b, Shard):
        return [_local_piece(mesh, d, s, i, b.dim) for d, s in enumerate(shards)]
    if isinstance(a, Replicate) and isinstance(b, Partial):
        return [_keep_on_rank0(mesh, d, s, i, b.op) for d, s in enumerate(shards)]
    if isinstance(a, Shard) and isinstance(b, Shard):
        return _shard_to_shard(mesh, shards, i, a.dim, b.dim, kw)
    raise PlacementError(f"mesh dim {mesh.names[i]}: no rule for {a} -> {b}")


def _shard_to_shard(mesh, shards, i, old: int, new: int, kw) -> list:
    """All-to-all: rank r cuts its S(old) piece along `new`, sends cut j to rank j, joins along `old`.

    Uneven S(old) shards are padded along `old` to the group's longest first and trimmed after,
    as DTensor does (an all-to-all moves equal pieces); the padding crosses the wire and is counted.
    """
    p = mesh.shape[i]
    groups = mesh.groups(i)
    group_of = {d: g for g in groups for d in g}
    longest = {d: max(shards[e].shape[old] for e in group_of[d]) for d in range(mesh.size)}
    padded = [_pad(s, old, longest[d]) for d, s in enumerate(shards)]
    moved = all_to_all([_front(s, new) for s in padded], mesh, **kw)
    out = []
    for d, s in enumerate(moved):
        cut = chunk_sizes(shards[d].shape[new], p)[mesh.group_rank(d, i)]
        pieces = _split_rows(s, [cut] * p)  # one piece from each source rank, each `cut` rows of `new`
        rows = [shards[e].shape[old] for e in group_of[d]]  # each source's true length along `old`
        out.append(_join([_trim(_back(x, new), old, n) for x, n in zip(pieces, rows, strict=True)], old))
    return out


def _pad(s, dim: int, n: int):
    """Zero-pad tensor dim `dim` to length n (local)."""
    if s.shape[dim] == n:
        return s
    return np.pad(s, [(0, n - k if i == dim else 0) for i, k in enumerate(s.shape)])


def _trim(s, dim: int, n: int):
    if s.shape[dim] == n:
        return s
    return np.take(s, np.arange(n), axis=dim)


def _split_rows(s, counts):
    return np.split(s, np.cumsum(counts)[:-1])


def _join(pieces, old: int):
    """Join pieces (already in their original dim order) along `old`."""
    return np.concatenate(pieces, axis=old)


def _front(s, dim: int):
    """Move tensor dim `dim` to the front (a local copy: collectives cut along dim 0)."""
    return np.ascontiguousarray(np.moveaxis(s, dim, 0), like=s)  # like=s: a shape-only s stays one


def _back(s, dim: int):
    return np.ascontiguousarray(np.moveaxis(s, 0, dim), like=s)


def _local_piece(mesh, device, s, i, dim):
    rank, p, n = mesh.group_rank(device, i), mesh.shape[i], s.shape[dim]
    lo, size = chunk_offsets(n, p)[rank], chunk_sizes(n, p)[rank]
    return np.take(s, np.arange(lo, lo + size), axis=dim)


def _keep_on_rank0(mesh, device, s, i, op):
    if op not in ("sum", "prod") or mesh.group_rank(device, i) == 0:
        return s.copy()
    return np.full_like(s, partial_identity(op, s.dtype))


__all__ = ["plan", "redistribute"]
