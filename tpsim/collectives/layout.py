"""How user buffers map onto a schedule's chunks, and back.

Buffers are cut along their first dim (rows) by the torch.chunk rule, the same
rule as `Shard(0)`: for n rows over k chunks, chunk c holds rows
[c * ceil(n / k), ...), the last chunks shorter or empty.  A 1-d buffer's rows
are its elements.  This rule makes chunk c start at c * (longest chunk), so a
buffer packs into the engine's padded (k, longest) store with one reshape.

    all_reduce / reduce / broadcast   the whole buffer in schedule.num_chunks chunks
    reduce_scatter / scatter          the whole buffer in p chunks; chunk j is rank j's result
    all_gather / gather               rank j's buffer is chunk j (any number of rows)
    all_to_all                        rank r's buffer in p chunks; chunk j goes to rank j
"""

from __future__ import annotations

import math

import numpy as np

from tpsim.collectives.kinds import Collective
from tpsim.placement import chunk_sizes


def chunk_table(collective: str, p: int, k: int, rows: list[int], row_size: int) -> list[list[int]]:
    """(p, k) chunk lengths in elements for every local rank; `rows` is each rank's dim-0 length."""
    if collective in (Collective.ALL_GATHER, Collective.GATHER):
        per = [r * row_size for r in rows]
        return [per[:] for _ in range(p)]
    if collective == Collective.ALL_TO_ALL:
        out_rows = [[chunk_sizes(rows[i], p)[r] for i in range(p)] for r in range(p)]
        return [
            [c * row_size for c in chunk_sizes(rows[r], p)] + [c * row_size for c in out_rows[r]]
            for r in range(p)
        ]
    per = [c * row_size for c in chunk_sizes(rows[0], k)]
    return [per[:] for _ in range(p)]


# The collectives whose torch.distributed backends (gloo, NCCL) need equal pieces: all_gather_into_tensor,
# reduce_scatter_tensor, gather and scatter take one size for every rank, so uneven pieces go padded to
# the longest, as DTensor pads them. The padding crosses the wire; it never enters a result.
PADDED = (Collective.ALL_GATHER, Collective.GATHER, Collective.REDUCE_SCATTER, Collective.SCATTER)


def wire_rows(collective: str, rows: list[int], p: int, root: int | None = None) -> list[int]:
    """Every rank's dim-0 length as the backends send it: uneven pieces padded (see PADDED).

    all_gather / gather: each rank's piece padded to the longest; reduce_scatter / scatter: the buffer
    padded to p * ceil(n / p) rows, so each of the p chunks is as long as the first.
    """
    if collective in (Collective.ALL_GATHER, Collective.GATHER):
        return [max(rows, default=0)] * len(rows)
    if collective in (Collective.REDUCE_SCATTER, Collective.SCATTER):
        n = rows[root or 0]
        return [p * -(-n // p)] * len(rows)
    return list(rows)


def new_store(participants: int, table: list[list[int]], dtype: np.dtype) -> np.ndarray:
    k = len(table[0])
    longest = max((max(row) for row in table), default=0)
    return np.zeros((participants, k, longest), dtype=dtype)


def pack(store_row: np.ndarray, flat: np.ndarray, sizes: list[int], chunks: range | list[int]) -> None:
    """Write `flat` (1-d) into `store_row` (k, longest) as the consecutive `chunks` of lengths `sizes`."""
    longest = store_row.shape[1]
    ids = list(chunks)
    if _chunk_rule(sizes, ids, longest) and ids == list(range(ids[0], ids[0] + len(ids))):
        store_row[ids[0] : ids[0] + len(ids)].reshape(-1)[: flat.size] = flat
        return
    offset = 0
    for c in ids:
        store_row[c, : sizes[c]] = flat[offset : offset + sizes[c]]
        offset += sizes[c]


def unpack(store_row: np.ndarray, sizes: list[int], chunks: range | list[int]) -> np.ndarray:
    """The consecutive `chunks` of `store_row` joined into one 1-d array.

    A view into the store where the chunks lie back to back (no copy of a large
    result); each participant's row is its own, so results never alias each other.
    """
    ids = list(chunks)
    if not ids:
        return np.zeros(0, dtype=store_row.dtype)
    longest = store_row.shape[1]
    total = sum(sizes[c] for c in ids)
    if _chunk_rule(sizes, ids, longest) and ids == list(range(ids[0], ids[0] + len(ids))):
        return store_row[ids[0] : ids[0] + len(ids)].reshape(-1)[:total]
    return np.concatenate([store_row[c, : sizes[c]] for c in ids])


def _chunk_rule(sizes: list[int], ids: list[int], longest: int) -> bool:
    """True when the chunks are full-length except a tail: then padding sits only at the end."""
    seen_short = False
    for c in ids:
        if seen_short and sizes[c]:
            return False
        if sizes[c] != longest:
            seen_short = True
    return True


def rows_and_row_size(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return shape[0], math.prod(shape[1:])
