"""Megatron's regions: each forward and its backward twin is a change of placement on the TP mesh dim.

A region never changes the global array.  It changes where its pieces live, and the
collective that change needs is the only traffic.  The oracle is that definition: the
same `full()` before and after, every device holding exactly the piece its placement
says, and the collective recorded under the module and direction that ran it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal

from tpsim import Mesh, Partial, Replicate, Shard, distribute, from_local
from tpsim.darray import local_slices
from tpsim.errors import PlacementError
from tpsim.nn import Module, regions

R, P = Replicate(), Partial()
SEQ, LAST = 1, 2  # arrays are (b, s, h): the sequence is dim 1, features the last dim


def by_name(name: str):
    return getattr(regions, name)


# region, the TP placement it takes, the one it returns, the collective it runs (None: local)
REGIONS = [
    ("copy_to", R, R, None),
    ("copy_to_backward", P, R, "all_reduce"),
    ("reduce_from", P, R, "all_reduce"),
    ("reduce_from_backward", R, R, None),
    ("gather_from", Shard(LAST), R, "all_gather"),
    ("gather_from_backward", R, Shard(LAST), None),
    ("scatter_to", R, Shard(LAST), None),
    ("scatter_to_backward", Shard(LAST), R, "all_gather"),
    ("sequence_gather", Shard(SEQ), R, "all_gather"),
    ("sequence_gather_backward", P, Shard(SEQ), "reduce_scatter"),
    ("sequence_reduce_scatter", P, Shard(SEQ), "reduce_scatter"),
    ("sequence_reduce_scatter_backward", Shard(SEQ), R, "all_gather"),
    ("sequence_scatter", R, Shard(SEQ), None),
    ("sequence_scatter_backward", Shard(SEQ), R, "all_gather"),
]


def call(name: str, x, tp: int):
    fn = by_name(name)
    return fn(x, tp, SEQ) if name.startswith("sequence") else fn(x, tp)


@st.composite
def meshes(draw):
    """A 1-d TP mesh of 1..8 devices, or (dp=2, tp) with the batch sharded or replicated over dp."""
    t = draw(st.integers(1, 8))
    if draw(st.booleans()):
        return Mesh(t, names=("tp",)), []
    return Mesh((2, t), names=("dp", "tp")), [draw(st.sampled_from([Shard(0), R]))]


def placed(terms: np.ndarray, mesh, others: list, tp_placement):
    """The (b, s, h) array on the mesh; under P on TP, TP rank r holds terms[r] and the array is their sum."""
    tp = mesh.ndim - 1
    if not tp_placement.is_partial():
        return distribute(terms[0], mesh, [*others, tp_placement]), terms[0]
    cut = [*others, R]
    shards = [
        terms[mesh.coordinate(d)[tp]][local_slices(terms[0].shape, mesh, cut, d)] for d in range(mesh.size)
    ]
    return from_local(shards, mesh, [*others, P], shape=terms[0].shape), terms.sum(axis=0)


def term_stacks(t: int, dtype):
    """t exact (b, s, h) terms of small integers, so every sum is exact whatever its order.

    b is even: groups along one mesh dim must hold equal shapes (a known limit, see test_darray.py).
    """
    sizes = st.tuples(st.integers(1, 2).map(lambda k: 2 * k), st.integers(1, 9), st.integers(1, 9))
    shape = sizes.map(lambda s: (t, *s))
    return hnp.arrays(dtype, shape, elements=st.integers(-8, 8))


@pytest.mark.parametrize(("name", "takes", "gives", "collective"), REGIONS, ids=[r[0] for r in REGIONS])
@given(mesh_and_others=meshes(), dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_a_region_keeps_the_global_array_and_runs_its_collective(
    name, takes, gives, collective, mesh_and_others, dtype, data
):
    mesh, others = mesh_and_others
    tp, t = mesh.ndim - 1, mesh.shape[-1]
    x, want = placed(data.draw(term_stacks(t, dtype)), mesh, others, takes)
    direction = data.draw(st.sampled_from(["forward", "backward"]))
    with Module(mesh, name="block.mlp").scope(direction):
        y = call(name, x, tp)
    assert y.placements == (*others, gives)
    assert_array_equal(y.full(), want)
    for d in range(mesh.size):  # every device holds exactly the piece its placement says
        assert_array_equal(y.shards[d], want[local_slices(want.shape, mesh, y.placements, d)])
    if collective is None:
        assert not mesh.trace.collectives
        if takes == gives:
            assert y is x  # identity: the very same array, not a copy
        return
    (record,) = mesh.trace.collectives
    assert (record.collective, record.mesh_dim, record.group_size) == (collective, "tp", t)
    assert (record.label, record.direction) == ("block.mlp", direction)
    assert record.num_groups == mesh.size // t


def wrong_placements(name: str) -> list:
    takes = {n: t for n, t, _, _ in REGIONS}[name]
    candidates = [R, P, Shard(0), Shard(SEQ), Shard(LAST)]
    return [p for p in candidates if p != takes]


WRONG = [(n, p) for n, _, _, _ in REGIONS for p in wrong_placements(n)]


@pytest.mark.parametrize(("name", "wrong"), WRONG, ids=[f"{n}-{p!r}" for n, p in WRONG])
def test_a_wrong_input_placement_is_refused_naming_it_and_nothing_moves(name, wrong):
    mesh = Mesh((2, 3), names=("dp", "tp"))
    x, _ = placed(np.arange(3 * 2 * 3 * 6.0).reshape(3, 2, 3, 6), mesh, [R], wrong)
    before = [dict(d.in_use) for d in mesh.devices]
    with pytest.raises(PlacementError, match=rf"(?<!\w){re.escape(repr(wrong))}(?!\w)") as info:
        call(name, x, 1)
    assert "tp" in str(info.value)  # the mesh dim it looked at
    assert not mesh.trace.collectives
    assert [dict(d.in_use) for d in mesh.devices] == before
