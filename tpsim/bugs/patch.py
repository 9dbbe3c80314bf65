"""Two small tools the mutations are made of: swap a region for a call, relabel shards without moving them.

A mutation never edits the correct layer.  It either subclasses it and overrides one method, or
runs the correct method with one region swapped (`swap`), or claims a placement the shards do
not have (`relabel`): the last is how "forgot the all-reduce" looks in the global view, where
each device keeps its partial sum and calls it the whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tpsim.darray import DArray, from_local
from tpsim.placement import Replicate


@contextlib.contextmanager
def swap(namespace, name: str, replacement) -> Iterator[None]:
    """Inside, `namespace.name` is `replacement` (e.g. one region of tpsim.nn.regions)."""
    original = getattr(namespace, name)
    setattr(namespace, name, replacement)
    try:
        yield
    finally:
        setattr(namespace, name, original)


def relabel(x: DArray, tp: int, placement=None, category: str | None = None) -> DArray:
    """The same shards, claimed as `placement` (default R) on mesh dim `tp`: no bytes move."""
    placements = list(x.placements)
    placements[tp] = placement or Replicate()
    # the bug: shards that differ, claimed R (run_check would refuse them)
    out = from_local(list(x.shards), x.mesh, placements, shape=x.shape, run_check=False)
    if category:
        out.recategorize(category)
    return out
