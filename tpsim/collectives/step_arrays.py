"""A schedule's steps as NumPy index arrays, built once per schedule and cached.

The engine indexes its store with these instead of walking Transfer objects, which is
what keeps a 2046-step, 1024-device ring cheap.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import numpy as np

from tpsim.collectives.schedule import REDUCE, Schedule


@dataclass(frozen=True)
class StepArrays:
    """One step of a schedule as NumPy index arrays (group-local ranks)."""

    src: np.ndarray  # (T,) sending rank of each transfer
    dst: np.ndarray  # (T,)
    pair_t: np.ndarray  # (P,) transfer of each (transfer, chunk) pair
    pair_c: np.ndarray  # (P,) chunk read on src
    pair_dc: np.ndarray  # (P,) chunk written on dst
    pair_reduce: np.ndarray  # (P,) bool: reduce (True) or copy
    simple: bool  # targets unique and no pair reads a chunk another pair writes
    wire: np.ndarray  # (W,) transfers that cross a link (src != dst)
    wire_chunk: np.ndarray | None  # (W,) their chunk when every transfer moves one chunk, else None


_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare(schedule: Schedule) -> list[StepArrays]:
    cached = _prepared.get(schedule)
    if cached is not None:
        return cached
    out, k, memo = [], schedule.num_chunks, {}

    def array(column: tuple, dtype) -> np.ndarray:  # rings share one src/dst/ops tuple across steps
        key = id(column)
        if key not in memo:
            memo[key] = (column, np.array(column, dtype=dtype))
        return memo[key][1]

    for step in schedule.steps:
        n = len(step)
        pair_c = np.fromiter(itertools.chain.from_iterable(step.chunks), np.int64)
        if step.dst_chunks is step.chunks:  # most schedules land chunks where they were
            pair_dc = pair_c
        else:
            pair_dc = np.fromiter(itertools.chain.from_iterable(step.dst_chunks), np.int64, len(pair_c))
        if len(pair_c) == n:  # one chunk per transfer, the common case
            pair_t = np.arange(n, dtype=np.int64)
        else:
            pair_t = np.repeat(np.arange(n, dtype=np.int64), [len(c) for c in step.chunks])
        src, dst = array(step.src, np.int64), array(step.dst, np.int64)
        reduce_t = array(step.ops, object) == REDUCE
        written = np.sort(dst[pair_t] * k + pair_dc)
        read = src[pair_t] * k + pair_c
        unique = not (written[1:] == written[:-1]).any()
        overlap = np.searchsorted(written, read).clip(max=len(written) - 1) if len(written) else None
        simple = unique and not (overlap is not None and (written[overlap] == read).any())
        wire = np.flatnonzero(src != dst)
        wire_chunk = pair_c[wire] if len(pair_c) == n else None
        out.append(StepArrays(src, dst, pair_t, pair_c, pair_dc, reduce_t[pair_t], simple, wire, wire_chunk))
    _prepared[schedule] = out
    return out
