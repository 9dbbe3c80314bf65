"""The distributed array: one shard per virtual device, and the placements that say how they join.

    x = tpsim.distribute(np.arange(8.0), mesh, [Shard(0)])   # device d holds a piece
    x.redistribute([Replicate()])                             # an all-gather, step by step
    x.full()                                                  # the global array, for looking at

On an n-d mesh `placements` has one entry per mesh dim.  Several mesh dims
may shard one tensor dim; they split it in mesh-dim order, outer first, as
DTensor does.  Shards are cut by the torch.chunk rule, so uneven shards match
DTensor's.  Each shard's bytes are charged to its device ("tensor") while the
DArray lives.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from tpsim.darray_checks import check_local, check_replicas
from tpsim.device import allocate_all, free_all
from tpsim.dtypes import resolve_dtype
from tpsim.errors import PlacementError, WorldSizeError
from tpsim.meta import asarray, is_meta
from tpsim.placement import (
    Partial,
    Placement,
    Replicate,
    Shard,
    check_placements,
    local_shapes,
    local_slices,
    partial_identity,
)
from tpsim.redistribute import redistribute


class DArray:
    """Shards on every device of a mesh, plus their placements: the global view of a distributed tensor."""

    def __init__(
        self,
        shards: Sequence,
        mesh,
        placements: Sequence[Placement],
        shape: tuple[int, ...],
        category: str = "tensor",
    ):
        self.mesh, self.placements, self.shape = mesh, tuple(placements), tuple(shape)
        self.shards = list(shards)
        self.dtype = self.shards[0].dtype
        self._request = {d: int(s.nbytes) for d, s in enumerate(self.shards) if s.nbytes}
        allocate_all(mesh.devices, self._request, category)
        self._category = [category]  # a list, so the finalizer frees under the category it has then
        self.saves = 0  # how many modules keep it for backward (tpsim.nn)
        self._finalizer = weakref.finalize(self, _free, mesh.devices, self._request, self._category)

    @property
    def category(self) -> str:
        """The memory category its bytes count under: "tensor", "weights", "grads", "activations", ..."""
        return self._category[0]

    def recategorize(self, category: str) -> None:
        """Count this array's bytes under another category (e.g. saved for backward: "activations")."""
        for d, n in self._request.items():
            self.mesh.devices[d].move(n, self._category[0], category)
        self._category[0] = category

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_meta(self) -> bool:
        return is_meta(self.shards[0])

    def local(self, device: int):
        """The shard device `device` holds."""
        return self.shards[device]

    def full(self) -> np.ndarray:
        """The global array, assembled on the host for inspection (no traffic is counted).

        Partial mesh dims are reduced in rank order; use `redistribute` to see what that costs.
        """
        out = np.empty(self.shape, dtype=self.dtype, like=self.shards[0])  # shape-only shards: a MetaArray
        for d in range(self.mesh.size):
            coord = self.mesh.coordinate(d)
            if any(coord[i] for i, p in enumerate(self.placements) if not isinstance(p, Shard)):
                continue  # one representative per block: coordinate 0 on every R and P mesh dim
            out[local_slices(self.shape, self.mesh, self.placements, d)] = self._reduced(
                coord, self.mesh.ndim - 1
            )
        return out

    def _reduced(self, coord: tuple[int, ...], mesh_dim: int):
        """The block at `coord`, Partial mesh dims 0..mesh_dim reduced innermost first (as redistribute)."""
        if mesh_dim < 0:
            return self.shards[self.mesh.device_at(coord)]
        p = self.placements[mesh_dim]
        if not isinstance(p, Partial):
            return self._reduced(coord, mesh_dim - 1)
        terms = [
            self._reduced((*coord[:mesh_dim], k, *coord[mesh_dim + 1 :]), mesh_dim - 1)
            for k in range(self.mesh.shape[mesh_dim])
        ]
        return _combine(p.op, terms)

    def redistribute(
        self,
        placements: Sequence[Placement] | Placement,
        *,
        algorithm: str | None = None,
        label: str | None = None,
    ) -> DArray:
        """The same global array under new placements, moved by the collectives that change needs."""
        return redistribute(self, _as_list(placements, self.mesh), algorithm=algorithm, label=label)

    def __repr__(self) -> str:
        pl = "(" + ", ".join(map(repr, self.placements)) + ")"
        return f"DArray(shape={self.shape}, dtype={self.dtype}, placements={pl}, mesh={self.mesh.shape})"


def distribute(array, mesh, placements: Sequence[Placement] | Placement, category: str = "tensor") -> DArray:
    """Cut a global array (NumPy or `tpsim.meta`) into shards by `placements`, one per mesh dim.

    Partial(sum) and Partial(prod) put the value on rank 0 of the mesh dim and the
    identity elsewhere; Partial(avg/max/min) put it everywhere.  No traffic is counted:
    this is how data starts out on the devices.
    """
    array = asarray(array)  # a Python list or scalar is accepted as NumPy takes it
    placements = check_placements(_as_list(placements, mesh), array.shape, mesh)
    resolve_dtype(array.dtype)
    shards = []
    for d in range(mesh.size):
        shard = array[local_slices(array.shape, mesh, placements, d)].copy()
        coord = mesh.coordinate(d)
        for i, p in enumerate(placements):
            if isinstance(p, Partial) and p.op in ("sum", "prod") and coord[i] != 0:
                shard[...] = partial_identity(p.op, shard.dtype)
        shards.append(shard)
    return DArray(shards, mesh, placements, array.shape, category)


def from_local(
    shards: Sequence,
    mesh,
    placements: Sequence[Placement] | Placement,
    shape: tuple[int, ...] | None = None,
    category: str = "tensor",
    run_check: bool = True,
) -> DArray:
    """Wrap per-device shards (one per device, in device order) without moving anything.

    With `run_check` (the default) the replicas of every Replicate mesh dim must hold equal values
    (PlacementError otherwise); `run_check=False` trusts them, as DTensor.from_local's run_check does,
    and the full() view then reads the replica at coordinate 0.
    """
    placements = _as_list(placements, mesh)
    if len(shards) != mesh.size:
        raise WorldSizeError(f"from_local got {len(shards)} shards for a mesh of {mesh.size} devices")
    shards = [asarray(s) for s in shards]
    if shape is None:
        shape = infer_shape([s.shape for s in shards], mesh, placements)
    placements = check_placements(placements, shape, mesh)
    wants = local_shapes(tuple(shape), mesh.shape, tuple(placements))
    if [s.shape for s in shards] != wants or any(s.dtype != shards[0].dtype for s in shards):
        check_local(shards, wants, placements, shape)
    if run_check:
        check_replicas(shards, mesh, placements)
    return DArray(shards, mesh, placements, shape, category)


def infer_shape(shapes: list[tuple[int, ...]], mesh, placements: list[Placement]) -> tuple[int, ...]:
    """The global shape from the shards: sharded dims add up along their mesh dims."""
    shape = list(shapes[0])
    for dim in {p.dim % len(shape) for p in placements if isinstance(p, Shard)}:
        along = [i for i, p in enumerate(placements) if isinstance(p, Shard) and p.dim % len(shape) == dim]
        devices = [
            d
            for d in range(mesh.size)
            if all(mesh.coordinate(d)[j] == 0 for j in range(mesh.ndim) if j not in along)
        ]
        shape[dim] = sum(shapes[d][dim] for d in devices)
    return tuple(shape)


def _free(devices, request, category: list[str]) -> None:
    free_all(devices, request, category[0])


def _as_list(placements, mesh) -> list[Placement]:
    if isinstance(placements, Placement):
        if mesh.ndim != 1:
            raise PlacementError(
                f"a single placement {placements} is ambiguous on a {mesh.ndim}-d mesh; give one per mesh dim"
            )
        return [placements]
    if isinstance(placements, str) or not isinstance(placements, Sequence):
        raise PlacementError(
            f"placements {placements!r} must be a Placement or a list of them, one per mesh dim"
        )
    return list(placements)


def _combine(op: str, terms: list):
    """Reduce terms in rank order; avg divides the sum once at the end (as the collectives do)."""
    ufunc = {"sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply}[op]
    total = terms[0]
    for t in terms[1:]:
        total = ufunc(total, t)
    return (total / np.asarray(len(terms), dtype=total.dtype)).astype(total.dtype) if op == "avg" else total


__all__ = ["DArray", "Replicate", "Shard", "distribute", "from_local"]
