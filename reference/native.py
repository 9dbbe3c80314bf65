"""The native path of `Comm`: each collective as the backend's own dist.* call.

Inputs arrive as tpsim lays them out (the cut dim at the front, flattened): `flat` is this rank's
buffer, `rows` every rank's dim-0 length, `row_size` the elements per row. Each function returns this
rank's result, flat (None off the root of reduce and gather), plus a note when it had to pad.

Where the backend wants equal pieces and the torch.chunk rule gives unequal ones (all_gather, gather,
reduce_scatter, scatter), pieces are padded to the longest and trimmed after, as DTensor does; the
padding is real traffic. `avg` is a sum followed by one division by p, as tpsim does it (gloo has
ReduceOp.AVG since torch 2.x, NCCL too, but dividing once keeps the two engines' arithmetic alike).
Ops gloo lacks on CUDA tensors go through the CPU (staging.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from reference.staging import from_wire, is_staged, to_wire, wire_empty
from tpsim.placement import chunk_sizes

REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "avg": dist.ReduceOp.SUM,  # then / p
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
    "prod": dist.ReduceOp.PRODUCT,
}
PADDED = "uneven: padded to the longest piece, trimmed after"


def run(comm, collective: str, flat, rows: list[int], row_size: int, *, op, root, dtype, device, backend):
    """Dispatch; returns (result flat or None, rows each rank put on the wire, note)."""
    staged = is_staged(backend, collective)
    f = _NATIVE[collective]
    return f(
        _Call(comm.group, comm.rank, comm.size, comm.ranks, device),
        flat,
        rows,
        row_size,
        op=op,
        root=root,
        dtype=dtype,
        staged=staged,
    )


class _Call:
    """What a native op needs of the Comm, with the device of this call's tensors."""

    def __init__(self, group, rank, size, ranks, device):
        self.group, self.rank, self.size, self.ranks, self.device = group, rank, size, ranks, device


def _all_reduce(comm, flat, rows, row_size, *, op, root, dtype, staged):
    buf = _own(flat, staged)
    dist.all_reduce(buf, op=REDUCE_OPS[op], group=comm.group)
    return from_wire(buf, comm.device, staged), rows, ""


def _reduce(comm, flat, rows, row_size, *, op, root, dtype, staged):
    buf = _own(flat, staged)
    dist.reduce(buf, dst=comm.ranks[root], op=REDUCE_OPS[op], group=comm.group)
    return (from_wire(buf, comm.device, staged) if comm.rank == root else None), rows, ""


def _broadcast(comm, flat, rows, row_size, *, op, root, dtype, staged):
    if comm.rank == root:
        buf = _own(flat, staged)
    else:
        buf = wire_empty(rows[root] * row_size, dtype, comm.device, staged)
    dist.broadcast(buf, src=comm.ranks[root], group=comm.group)
    return from_wire(buf, comm.device, staged), rows, ""


def _all_gather(comm, flat, rows, row_size, *, op, root, dtype, staged):
    longest = max(rows)
    mine = _padded(to_wire(flat, staged), longest * row_size)
    out = wire_empty(comm.size * longest * row_size, dtype, comm.device, staged)
    dist.all_gather_single(out, mine, group=comm.group)
    res = _trimmed(out.view(comm.size, -1), rows, row_size)
    return from_wire(res, comm.device, staged), [longest] * comm.size, _note(rows)


def _gather(comm, flat, rows, row_size, *, op, root, dtype, staged):
    longest = max(rows)
    mine = _padded(to_wire(flat, staged), longest * row_size)
    bins = [wire_empty(longest * row_size, dtype, comm.device, staged) for _ in range(comm.size)]
    dist.gather(mine, bins if comm.rank == root else None, dst=comm.ranks[root], group=comm.group)
    if comm.rank != root:
        return None, [longest] * comm.size, _note(rows)
    res = _trimmed(torch.stack(bins), rows, row_size)
    return from_wire(res, comm.device, staged), [longest] * comm.size, _note(rows)


def _reduce_scatter(comm, flat, rows, row_size, *, op, root, dtype, staged):
    p, n = comm.size, rows[0]
    cut = chunk_sizes(n, p)
    step = cut[0]
    padded = _padded(_own(flat, staged), p * step * row_size)  # a copy: x is never touched
    out = wire_empty(step * row_size, dtype, comm.device, staged)
    dist.reduce_scatter_single(out, padded, op=REDUCE_OPS[op], group=comm.group)
    res = out[: cut[comm.rank] * row_size]
    return from_wire(res, comm.device, staged), [p * step] * p, _note(cut)


def _scatter(comm, flat, rows, row_size, *, op, root, dtype, staged):
    p, n = comm.size, rows[root]
    cut = chunk_sizes(n, p)
    step = cut[0]
    out = wire_empty(step * row_size, dtype, comm.device, staged)
    pieces = None
    if comm.rank == root:
        pieces = list(_padded(to_wire(flat, staged), p * step * row_size).view(p, -1))
    dist.scatter(out, pieces, src=comm.ranks[root], group=comm.group)
    return from_wire(out[: cut[comm.rank] * row_size], comm.device, staged), [p * step] * p, _note(cut)


def _all_to_all(comm, flat, rows, row_size, *, op, root, dtype, staged):
    p = comm.size
    cut = chunk_sizes(rows[comm.rank], p)  # rows to each destination
    out = wire_empty(p * cut[comm.rank] * row_size, dtype, comm.device, staged)
    dist.all_to_all_single(
        out,
        to_wire(flat, staged),
        output_split_sizes=[chunk_sizes(rows[i], p)[comm.rank] * row_size for i in range(p)],
        input_split_sizes=[c * row_size for c in cut],
        group=comm.group,
    )
    return from_wire(out, comm.device, staged), rows, ""


def _own(flat: torch.Tensor, staged: bool) -> torch.Tensor:
    """A copy of `flat` that the backend may overwrite in place (on the host when staged)."""
    return to_wire(flat, staged) if staged else flat.clone()


def _padded(flat: torch.Tensor, n: int) -> torch.Tensor:
    """`flat` zero-padded to n elements (contiguous; the input itself when it already fits)."""
    if flat.numel() == n:
        return flat.contiguous()
    out = torch.zeros(n, dtype=flat.dtype, device=flat.device)
    out[: flat.numel()] = flat
    return out


def _trimmed(stacked: torch.Tensor, rows: list[int], row_size: int) -> torch.Tensor:
    """(p, longest * row_size) -> rank i's first rows[i] rows, joined."""
    if len(set(rows)) == 1:
        return stacked.reshape(-1)
    return torch.cat([stacked[i, : r * row_size] for i, r in enumerate(rows)])


def _note(rows: list[int]) -> str:
    return PADDED if len(set(rows)) > 1 else ""


_NATIVE = {
    "all_reduce": _all_reduce,
    "reduce": _reduce,
    "broadcast": _broadcast,
    "all_gather": _all_gather,
    "gather": _gather,
    "reduce_scatter": _reduce_scatter,
    "scatter": _scatter,
    "all_to_all": _all_to_all,
}
