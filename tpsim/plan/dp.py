"""Data parallelism: the gradient all-reduce of every step, run by the engine on the mesh's "dp" dim.

Every data-parallel replica holds the same parameters, so after backward each device all-reduces
its gradients with the other replicas of its shard: the devices of its "dp" group.  On a
(pp, dp, tp) mesh all those groups run at once, on the topology's links, so a topology where
they share links (a NIC, a ring) shows the contention.  With a ring the bytes each device sends
are 2 (d - 1) / d times its gradient bytes.

ZeRO-1 (Megatron's distributed optimizer) shards the optimizer state by dp: the gradients are
reduce-scattered and the updated parameters all-gathered, the same bytes as a ring all-reduce.

One call carries every gradient: Megatron's buckets (~40M elements) would add one alpha each.
"""

from __future__ import annotations

import numpy as np

from tpsim.collectives import all_gather, all_reduce, reduce_scatter
from tpsim.meta import meta


def sent_per_device(trace, first: int) -> int:
    """The most bytes any device sent in collectives `first` onwards of `trace`."""
    t = trace.transfers()
    keep = t["collective"] >= first
    if not keep.any():
        return 0
    return int(np.bincount(t["src"][keep], weights=t["nbytes"][keep], minlength=trace.mesh.size).max())


def gradient_sync(
    mesh, params_per_device: int, dtype, *, zero1: bool = False, algorithm=None, dim: str = "dp"
) -> dict:
    """All-reduce (ZeRO-1: reduce-scatter + all-gather) `params_per_device` gradients over `dim`.

    Returns the gradient bytes per device, the bytes each device sent (the maximum over devices),
    the time (from the trace) and the collectives run.
    """
    first = len(mesh.trace.collectives)
    grads = [meta((params_per_device,), dtype)] * mesh.size  # shape-only: no memory is allocated
    label = "dp.grads"
    if zero1:
        shards = reduce_scatter(
            grads, mesh, mesh_dim=dim, algorithm=algorithm, label=label, direction="backward"
        )
        all_gather(shards, mesh, mesh_dim=dim, algorithm=algorithm, label="dp.params", direction="backward")
    else:
        all_reduce(grads, mesh, mesh_dim=dim, algorithm=algorithm, label=label, direction="backward")
    runs = mesh.trace.collectives[first:]
    return {
        "grad_bytes": params_per_device * grads[0].dtype.itemsize,
        "sent_per_device": sent_per_device(mesh.trace, first),
        "time": sum(c.time for c in runs),
        "collectives": [
            f"{c.collective} ({c.algorithm}, {c.group_size} ranks x {c.num_groups} groups)" for c in runs
        ],
    }
