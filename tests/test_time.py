"""The time model: the engine's clock against the closed forms, contention, concurrency and device clocks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tpsim
from tpsim import Mesh, meta, presets
from tpsim.collectives import Collective, layout
from tpsim.collectives.algorithms import ALGORITHMS, build
from tpsim.collectives.api import run_collective
from tpsim.collectives.costs import cost
from tpsim.collectives.engine import Run
from tpsim.collectives.schedule import ROOTED

PAIRS = [(c, a) for c, names in ALGORITHMS.items() for a in names]
ALPHA, BW = 3e-6, 7e9  # deliberately not round
COLS = 3  # every buffer is (rows, 3) float32: 12 bytes a row


def run(collective, algorithm, p, topology, *, shape_only=False, rows=None, root=None):
    """Run one collective on a fresh 1-d mesh of p devices, (rows, 3) float32 buffers; return the mesh."""
    root = (p // 2 if root is None else root) if collective in ROOTED else None
    rows = p * build(collective, algorithm, p, root).num_chunks if rows is None else rows
    mesh = Mesh(p, topology=topology)
    buffers = [meta((rows, COLS), "float32") if shape_only else np.ones((rows, COLS), np.float32)] * p
    run_collective(collective, buffers, mesh, algorithm=algorithm, **({} if root is None else {"root": root}))
    return mesh


@pytest.mark.parametrize("p", range(1, 17))
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_fully_connected_time_is_the_closed_form(collective, algorithm, p):
    """Every pair its own link: time == costs.cost(S).  Each rank's buffer has p * num_chunks rows, so
    it divides into p chunks and into the schedule's chunks; S is one rank's buffer (all_gather and
    gather: the output, p buffers).  A shape-only run takes the same time and moves the same bytes."""
    data = run(collective, algorithm, p, presets.fully_connected(p, ALPHA, BW))
    shape_only = run(collective, algorithm, p, presets.fully_connected(p, ALPHA, BW), shape_only=True)
    record = data.trace.collectives[-1]
    S = p * build(collective, algorithm, p, p // 2).num_chunks * COLS * 4
    S *= p if collective in (Collective.ALL_GATHER, Collective.GATHER) else 1
    assert record.time == pytest.approx(cost(collective, algorithm, p, S, ALPHA, BW), rel=1e-9, abs=0)
    assert shape_only.trace.collectives[-1].time == record.time
    assert shape_only.trace.wire_bytes == data.trace.wire_bytes


@pytest.mark.parametrize("p", range(2, 17))
def test_switch_port_is_shared_by_a_direct_all_gather(p):
    """Each rank sends its chunk to p-1 peers through its one egress port: alpha + (p-1) chunk / bw.
    With a link per pair (fully connected) the same step takes alpha + chunk / bw."""
    chunk = 5 * COLS * 4
    switched = run(Collective.ALL_GATHER, "direct", p, presets.switch(p, ALPHA, BW), rows=5)
    switched = switched.trace.collectives[0]
    pairwise = run(Collective.ALL_GATHER, "direct", p, presets.fully_connected(p, ALPHA, BW), rows=5)
    pairwise = pairwise.trace.collectives[0]
    assert switched.time == pytest.approx(ALPHA + (p - 1) * chunk / BW, rel=1e-12)
    assert pairwise.time == pytest.approx(ALPHA + chunk / BW, rel=1e-12)


@pytest.mark.parametrize("n", range(2, 13))
def test_ring_transfer_pays_alpha_per_hop(n):
    """A direct broadcast from 0 on a ring: the transfer to k crosses min(k, n-k) links (ties clockwise),
    paying alpha for each, and shares its first link with the others leaving 0 the same way."""
    mesh = run(Collective.BROADCAST, "direct", n, presets.ring(n, ALPHA, BW), rows=1, root=0)
    t = mesh.trace.transfers()
    k = t["dst"]
    hops = np.minimum(k, n - k)
    clockwise = k <= n - k
    sharing = np.where(clockwise, clockwise.sum(), (~clockwise).sum())
    assert_allclose(t["end"] - t["start"], hops * ALPHA + sharing * COLS * 4 / BW, rtol=1e-12)


@pytest.mark.parametrize("topology", [presets.ring, presets.switch, presets.fully_connected])
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_a_step_lasts_as_long_as_its_slowest_transfer(topology, collective, algorithm):
    """StepRecord.end - start == max over the step's transfers of end - start (0 with no transfers)."""
    mesh = run(collective, algorithm, 6, topology(6), rows=7)
    t = mesh.trace.transfers()
    for step in mesh.trace.steps:
        mine = t["step"] == step.index
        assert_allclose(t["start"][mine], step.start)
        assert step.end - step.start == pytest.approx(max(t["end"][mine] - step.start, default=0.0), abs=0)


@pytest.mark.parametrize("topology", [presets.fully_connected, presets.switch])
@pytest.mark.parametrize("mesh_dim, group", [("dp", 2), ("tp", 4)])
@pytest.mark.parametrize(
    "collective",
    [Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL],
)
def test_groups_of_a_mesh_dim_run_at_the_same_time(topology, mesh_dim, group, collective):
    """On Mesh((2, 4)) the groups of a mesh dim use disjoint links, so together they take as long as one
    group alone, and every group's transfers run at the same times."""
    mesh = Mesh((2, 4), names=("dp", "tp"), topology=topology(8))
    run_collective(collective, [np.ones((8, COLS), np.float32)] * 8, mesh, mesh_dim=mesh_dim)
    alone = run(collective, None, group, topology(group), rows=8)
    together = mesh.trace.collectives[-1]
    assert together.num_groups == 8 // group
    assert together.time == pytest.approx(alone.trace.collectives[-1].time, rel=1e-12)
    t = mesh.trace.transfers()
    group = {d: g for g, devices in enumerate(mesh.groups(mesh_dim)) for d in devices}
    in_group = np.array([group[d] for d in t["src"]])
    order = np.lexsort((t["end"], t["start"], t["step"]))
    timing = np.stack([t["step"], t["start"], t["end"]], axis=1)[order]  # (transfers, 3), sorted
    for g in range(together.num_groups):
        assert_array_equal(timing[in_group[order] == g], timing[in_group[order] == 0])


def run_on_group(mesh, devices, rows=8):
    """A ring all_reduce on just `devices` (a group no mesh dim names), through the engine itself."""
    p = len(devices)
    schedule = build(Collective.ALL_REDUCE, "ring", p)
    sizes = layout.chunk_table(Collective.ALL_REDUCE, p, schedule.num_chunks, [rows] * p, 1)
    Run(mesh, schedule, [devices], sizes, np.float32, None, nbytes=rows * 4).run()
    return mesh.trace.collectives[-1]


def test_each_device_has_its_own_clock():
    """Disjoint groups do not wait for each other; a group that shares a device waits for it."""
    mesh = Mesh(8)
    a = run_on_group(mesh, (0, 1, 2, 3))
    b = run_on_group(mesh, (4, 5, 6, 7))
    assert a.start == b.start == 0.0
    c = run_on_group(mesh, (3, 4))
    assert c.start == max(a.end, b.end)
    assert mesh.clock == [a.end] * 3 + [c.end] * 2 + [b.end] * 3


def test_collectives_on_overlapping_mesh_dims_run_one_after_the_other():
    mesh = Mesh((2, 4), names=("dp", "tp"))
    x = [np.ones(8, np.float32)] * 8
    tpsim.all_reduce(x, mesh, mesh_dim="tp")
    tpsim.all_reduce(x, mesh, mesh_dim="dp")
    first, second = mesh.trace.collectives
    assert first.start == 0.0
    assert second.start == first.end
    assert mesh.clock == [second.end] * 8


@pytest.mark.parametrize("topology, link_bandwidth", [
    (presets.nvlink_node(8, "h100"), 450e9),
    (presets.nvlink_node(8, "a100"), 300e9),
    (presets.pcie(8, 4), 32e9),
])
def test_ring_all_reduce_busbw_approaches_the_link_bandwidth(topology, link_bandwidth):
    """busbw = S / time * 2(p-1)/p tends to the per-direction link bandwidth as S grows (1 GiB here)."""
    mesh = Mesh(8, topology=topology)
    tpsim.all_reduce([meta((1 << 28,), "float32")] * 8, mesh, algorithm="ring")
    c = mesh.trace.collectives[-1]
    busbw = c.nbytes / c.time * 2 * 7 / 8
    assert 0.98 * link_bandwidth < busbw <= link_bandwidth
