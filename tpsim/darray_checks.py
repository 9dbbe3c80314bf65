"""The checks `from_local` runs on shards it is handed: shapes, dtypes, and equal replicas."""

from __future__ import annotations

import numpy as np

from tpsim.errors import DTypeError, PlacementError, ShapeError
from tpsim.meta import is_meta
from tpsim.placement import Replicate


def check_local(shards: list, wants: list, placements, shape) -> None:
    """Every shard has the shape its placements give it, and every dtype is device 0's."""
    for d, s in enumerate(shards):
        if s.shape != wants[d]:
            raise ShapeError(
                f"from_local: device {d} holds shape {s.shape}, but {placements} of a {shape} "
                f"array gives it {wants[d]}"
            )
        if s.dtype != shards[0].dtype:
            raise DTypeError(
                f"from_local: device {d} has dtype {s.dtype}, device 0 has {shards[0].dtype}; "
                "every shard needs the same dtype"
            )


def check_replicas(shards: list, mesh, placements) -> None:
    """Devices that differ only along Replicate mesh dims hold equal values (NaN equals NaN)."""
    if is_meta(shards[0]):  # values are data: shapes alone have none to compare
        return
    for i, p in enumerate(placements):
        if not isinstance(p, Replicate) or mesh.shape[i] == 1:
            continue
        for d in range(mesh.size):
            coord = mesh.coordinate(d)
            if coord[i] == 0:
                continue
            first = mesh.device_at((*coord[:i], 0, *coord[i + 1 :]))
            a, b = shards[first], shards[d]
            if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                diff = (a != b) & ~(np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else a != b
                where = tuple(int(k) for k in np.argwhere(diff)[0]) if a.ndim else ()
                raise PlacementError(
                    f"from_local: Replicate on mesh dim {mesh.names[i]}, but device {d} differs from "
                    f"device {first} at index {where} ({b[where]!r} vs {a[where]!r}); pass equal "
                    "replicas, or run_check=False to trust them (full() then reads the first)"
                )
