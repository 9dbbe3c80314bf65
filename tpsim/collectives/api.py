"""The collectives, low level: one buffer per device in, one result per device out.

    all_reduce(buffers, mesh)       every device gets the reduction of all buffers
    reduce_scatter(buffers, mesh)   device j gets rows-chunk j of the reduction
    all_gather(buffers, mesh)       every device gets all buffers stacked along dim 0
    broadcast / reduce / scatter / gather (root=...)   the rooted ones
    all_to_all(buffers, mesh)       device j gets chunk j of every buffer, stacked

`buffers` holds one array per device of the mesh, in device order (NumPy
arrays, or `tpsim.meta(...)` for shape-only runs).  With `mesh_dim`, the
collective runs in every group along that mesh dim at once; `root` is a rank
inside the group.  Inputs are never modified; results are new arrays, and
`None` where a rank's result is undefined (non-root ranks of reduce and gather).
Every check runs before anything moves, so a rejected call changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from tpsim import validate
from tpsim.collectives import layout
from tpsim.collectives.algorithms import build
from tpsim.collectives.engine import Run, Snapshot
from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COLLECTIVES, ROOTED
from tpsim.dtypes import is_floating, resolve_dtype
from tpsim.errors import (
    AlgorithmError,
    DTypeError,
    ShapeError,
    UnevenGroups,
    WorldSizeError,
)
from tpsim.meta import MetaArray, asarray, is_meta
from tpsim.placement import REDUCE_OPS, chunk_sizes

REDUCING = (Collective.ALL_REDUCE, Collective.REDUCE, Collective.REDUCE_SCATTER)


UNCUT = (Collective.ALL_REDUCE, Collective.REDUCE, Collective.BROADCAST)  # whole buffers, not cut along dim 0
ROOT_INPUT_ONLY = (Collective.BROADCAST, Collective.SCATTER)  # only the root's buffer carries data


def prepare(
    collective: str,
    buffers: Sequence,
    mesh,
    *,
    root: int | None = None,
    op: str = "sum",
    algorithm: str | None = None,
    mesh_dim: int | str | None = None,
    accum_dtype=None,
    label: str | None = None,
    direction: str | None = None,
    snapshots: bool = False,
    groups: list[tuple[int, ...]] | None = None,
    padded: bool = True,
) -> tuple[Run, Callable[[], list]]:
    """Check everything, then return the engine run and the function that unpacks its results.

    `groups` restricts the run to some groups of the mesh dim (used when groups hold different shapes).
    `padded` (the default) sends uneven all_gather / reduce_scatter / gather / scatter pieces padded to
    the longest, as gloo and NCCL do (layout.PADDED); False sends each piece at its own length.
    """
    if label is None and direction is None:
        label, direction = mesh.label  # attributed to the module running now, if any
    if collective not in COLLECTIVES:
        raise AlgorithmError(f"unknown collective {collective!r}; valid: {', '.join(COLLECTIVES)}")
    collective = Collective(collective)  # the trace records the member, whichever was passed
    if not isinstance(padded, bool):
        raise AlgorithmError(f"{collective} padded={padded!r}; valid: True (as gloo and NCCL send) or False")
    all_groups = mesh.groups(mesh_dim)
    groups = all_groups if groups is None else groups
    dim_name = None if mesh_dim is None else mesh.names[mesh.dim_index(mesh_dim)]
    p = len(groups[0])
    if len(buffers) != mesh.size:
        raise WorldSizeError(
            f"{collective} got {len(buffers)} buffers for a mesh of {mesh.size} devices; "
            "pass one buffer per device, in device order"
        )
    if collective in REDUCING:
        validate.reduce_op(collective, op, REDUCE_OPS)
    root = validate.root(collective, 0 if root is None else root, p) if collective in ROOTED else None
    schedule = build(collective, algorithm, p, root)
    rank_of = {d: r for devs in groups for r, d in enumerate(devs)}
    arrays = {d: asarray(b) for d, b in enumerate(buffers) if b is not None}
    missing = [
        d
        for d in range(mesh.size)
        if d not in arrays and not (collective in ROOT_INPUT_ONLY and rank_of[d] != root)
    ]
    if missing:
        raise ShapeError(
            f"{collective}: device {missing[0]} passed None; only non-root ranks of "
            f"{' and '.join(ROOT_INPUT_ONLY)} may pass None"
        )
    shape_only = _check_kinds(collective, arrays)
    dtype = _check_dtypes(collective, arrays)
    if accum_dtype is not None:
        accum_dtype = resolve_dtype(accum_dtype)
    if op == "avg" and collective in REDUCING and not is_floating(dtype):
        raise DTypeError(f"{collective} op 'avg' needs a floating dtype, got {dtype}")
    shapes = _check_shapes(collective, arrays, groups, root)
    rows = [[layout.rows_and_row_size(shapes[g][r])[0] for r in range(p)] for g in range(len(groups))]
    row_size = layout.rows_and_row_size(shapes[0][root or 0])[1]
    if collective in UNCUT:
        rows, row_size = [[int(np.prod(s, dtype=np.int64)) for s in gs] for gs in shapes], 1
    table = layout.chunk_table(collective, p, schedule.num_chunks, rows[0], row_size)
    wire = table  # (p, k) chunk lengths as they cross the links
    if padded and collective in layout.PADDED:
        wire = layout.chunk_table(
            collective, p, schedule.num_chunks, layout.wire_rows(collective, rows[0], p, root), row_size
        )
    store = None if shape_only else layout.new_store(len(groups) * p, table, dtype)
    if store is not None:
        _pack(collective, store, arrays, groups, table, root, p)
    nbytes = _reported_size(collective, shapes[0], root or 0, dtype)
    run = Run(
        mesh,
        schedule,
        groups,
        table,
        dtype,
        store,
        op=op,
        accum_dtype=accum_dtype,
        nbytes=nbytes,
        mesh_dim=dim_name,
        label=label,
        direction=direction,
        snapshots=snapshots,
        wire_sizes=wire,
    )

    def results() -> list:
        return _unpack(collective, run.store, groups, table, shapes, root, p, op, dtype, mesh.size)

    return run, results


def run_collective(collective: str, buffers: Sequence, mesh, **kwargs) -> list:
    try:
        runs = [prepare(collective, buffers, mesh, **kwargs)]
    except UnevenGroups:
        # uneven shards on an n-d mesh: the groups of this mesh dim hold different shapes, so each
        # group runs its own collective (at the same time: the groups' devices are disjoint)
        runs = [
            prepare(collective, buffers, mesh, groups=[g], **kwargs)
            for g in mesh.groups(kwargs.get("mesh_dim"))
        ]
    for run, _ in runs:  # every memory check before any run starts
        for d, n in run.scratch.items():
            mesh.devices[d].check(n)
    out: list = [None] * mesh.size
    for run, results in runs:
        run.run()
        for d, r in enumerate(results()):
            if r is not None:
                out[d] = r
    return out


def stepwise(collective: str, buffers: Sequence, mesh, **kwargs) -> Iterator[Snapshot]:
    """Run a collective one step at a time, yielding a `Snapshot` before the first step and after each.

    The input is checked at the call, not at the first step.
    """
    run, _ = prepare(collective, buffers, mesh, snapshots=True, **kwargs)
    return iter(run)


def _check_kinds(collective: str, arrays: dict) -> bool:
    meta = [d for d, a in arrays.items() if is_meta(a)]  # the engine's boundary: a run moves data or none
    data = [d for d, a in arrays.items() if not is_meta(a)]  # not `d not in meta`: p^2
    if meta and data:
        raise DTypeError(f"{collective}: device {meta[0]} passed a shape-only (meta) buffer but device "
                         f"{data[0]} passed data; pass one kind on every device")
    return bool(meta)


def _check_dtypes(collective: str, arrays: dict) -> np.dtype:
    first = next(iter(arrays))
    dtype = resolve_dtype(arrays[first].dtype)
    for d, a in arrays.items():
        if a.dtype != dtype:
            raise DTypeError(
                f"{collective}: device {d} has dtype {a.dtype} but device {first} has {dtype}; "
                "every rank needs the same dtype"
            )
    return dtype


def _check_shapes(collective: str, arrays: dict, groups, root) -> list[list[tuple]]:
    """Per group, per rank: the shape of its input (for scatter/broadcast non-roots: the root's)."""
    out = []
    for devs in groups:
        ref_rank = root if collective in ROOT_INPUT_ONLY else 0
        ref = arrays[devs[ref_rank]].shape
        shapes = []
        for r, d in enumerate(devs):
            shape = arrays[d].shape if d in arrays else ref
            if not shape and collective not in UNCUT:
                raise ShapeError(
                    f"{collective}: device {d} (rank {r}) has a 0-d buffer; {collective} cuts "
                    "buffers along dim 0, so they need at least one dim"
                )
            if collective in (Collective.ALL_GATHER, Collective.GATHER):
                if shape[1:] != ref[1:]:
                    raise ShapeError(
                        f"{collective}: device {d} (rank {r}) has shape {shape}; shards may differ "
                        f"only in dim 0, and device {devs[0]} has {ref}"
                    )
            elif shape != ref:
                raise ShapeError(
                    f"{collective}: device {d} (rank {r}) has shape {shape} but device "
                    f"{devs[ref_rank]} has {ref}; every rank needs the same shape"
                )
            shapes.append(shape)
        out.append(shapes)
    first = out[0]
    for devs, shapes in zip(groups, out, strict=False):
        if shapes != first:
            raise UnevenGroups(
                f"{collective}: group {devs} has shapes {shapes} but group {groups[0]} has {first}; "
                "every group of the mesh dim needs the same shapes"
            )
    return out


def _reported_size(collective: str, shapes: list[tuple], root: int, dtype: np.dtype) -> int:
    """S as nccl-tests reports it: the full buffer (all-gather: the output; all-to-all: one rank's input)."""
    sizes = [int(np.prod(s, dtype=np.int64)) * dtype.itemsize for s in shapes]
    return sum(sizes) if collective in (Collective.ALL_GATHER, Collective.GATHER) else sizes[root]


def _pack(collective, store, arrays, groups, table, root, p) -> None:
    for g, devs in enumerate(groups):
        for r, d in enumerate(devs):
            row, sizes = store[g * p + r], table[r]
            if collective in (Collective.ALL_GATHER, Collective.GATHER):
                layout.pack(row, arrays[d].reshape(-1), sizes, [r])
            elif collective in ROOT_INPUT_ONLY:
                if r == root:
                    layout.pack(row, arrays[d].reshape(-1), sizes, range(len(sizes)))
            elif collective == Collective.ALL_TO_ALL:
                layout.pack(row, arrays[d].reshape(-1), sizes, range(p))
            else:
                layout.pack(row, arrays[d].reshape(-1), sizes, range(len(sizes)))


def _unpack(collective, store, groups, table, shapes, root, p, op, dtype, n_devices) -> list:
    out: list = [None] * n_devices
    rest = shapes[0][0][1:] if shapes[0][0] else ()
    for g, devs in enumerate(groups):
        for r, d in enumerate(devs):
            if collective in (Collective.REDUCE, Collective.GATHER) and r != root:
                continue
            sizes = table[r]
            if collective in UNCUT:
                ids, shape = list(range(len(sizes))), shapes[g][r]
            elif collective in (Collective.REDUCE_SCATTER, Collective.SCATTER):
                rows = shapes[g][root if collective == Collective.SCATTER else r][0]
                ids, shape = [r], (chunk_sizes(rows, p)[r], *rest)
            elif collective == Collective.ALL_TO_ALL:  # a piece of `r`'s rows from every rank
                ids, shape = list(range(p, 2 * p)), (sum(chunk_sizes(s[0], p)[r] for s in shapes[g]), *rest)
            else:
                ids, shape = list(range(p)), (sum(s[0] for s in shapes[g]), *rest)
            if store is None:
                out[d] = MetaArray(shape, dtype)
                continue
            flat = layout.unpack(store[g * p + r], sizes, ids)
            if op == "avg" and collective in REDUCING:
                flat = (flat / np.asarray(p, dtype=dtype)).astype(dtype)
            out[d] = flat.reshape(shape)
    return out
