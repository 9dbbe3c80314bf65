"""How a Comm call's tensor goes on the wire as rows, and comes back (reference.comm's layout).

    front, rows, row_size, rebuild = to_rows(c, x, shape, dim, other_dim, lengths, p, rank)

Every op cuts along a dim by the torch.chunk rule, as tpsim's placements and DTensor do: the dim is
moved to the front, so the collective runs on dim 0 (rows of `row_size` elements) as tpsim's does, and
`rebuild` moves it back.  all_reduce, reduce and broadcast are flat: one row per element.  all_to_all
pads uneven S(concat_dim) shards to the longest and trims them on the way back.
"""

from __future__ import annotations

import math

import torch

from tpsim.collectives import layout
from tpsim.placement import chunk_sizes


def chunk_table(c, schedule, rows, row_size):
    """The chunk table native mode counts its bytes on: reductions and broadcast are flat, the rest
    cut in rows."""
    if c in ("all_reduce", "reduce", "broadcast"):
        return layout.chunk_table(
            c, schedule.world_size, schedule.num_chunks, [r * row_size for r in rows], 1
        )
    return layout.chunk_table(c, schedule.world_size, schedule.num_chunks, rows, row_size)


def to_rows(c, x, shape, dim, other_dim, lengths, p, rank):
    """(front, rows, row_size, rebuild): x with the cut dim first, every rank's rows, and how to
    turn the flat result back into this rank's tensor."""
    if c in ("all_reduce", "reduce", "broadcast"):
        n = math.prod(shape)
        return x, [n] * p, 1, lambda y: y.reshape(shape)
    if c == "all_to_all":
        return all_to_all_rows(x, shape, dim, other_dim, lengths, p, rank)
    front = None if x is None else x.movedim(dim, 0).contiguous()
    rest = shape[:dim] + shape[dim + 1 :]
    row_size = math.prod(rest)
    if c in ("all_gather", "gather"):
        rows = list(lengths) if lengths is not None else [shape[dim]] * p
    else:
        rows = [shape[dim]] * p

    def rebuild(y):
        return y.reshape(-1, *rest).movedim(0, dim).contiguous()

    return front, rows, row_size, rebuild


def all_to_all_rows(x, shape, new, old, lengths, p, rank):
    """Pad S(old) to the longest shard, move `new` first; rebuild trims each source's piece along old."""
    lengths = list(lengths) if lengths is not None else [shape[old]] * p
    longest = max(lengths)
    padded_shape = list(shape)
    padded_shape[old] = longest
    if shape[old] != longest:
        pad = torch.zeros(padded_shape, dtype=x.dtype, device=x.device)
        pad.narrow(old, 0, shape[old]).copy_(x)
        x = pad
    front = x.movedim(new, 0).contiguous()
    rest = tuple(padded_shape[:new] + padded_shape[new + 1 :])
    cut = chunk_sizes(shape[new], p)[rank]

    def rebuild(y):
        pieces = y.reshape(p, cut, *rest).unbind(0)  # one piece from each source rank
        back = [piece.movedim(0, new).narrow(old, 0, n) for piece, n in zip(pieces, lengths, strict=True)]
        return torch.cat(back, dim=old).contiguous()

    return front, [shape[new]] * p, math.prod(rest), rebuild
