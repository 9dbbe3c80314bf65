"""The ledger: its views add up, match the routing and nccl-tests' definitions, export, and survive errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from tpsim import Mesh, presets
from tpsim.collectives import Collective
from tpsim.collectives.algorithms import ALGORITHMS
from tpsim.collectives.api import run_collective
from tpsim.collectives.schedule import ROOTED
from tpsim.errors import TpsimError

PAIRS = [(c, a) for c, names in ALGORITHMS.items() for a in names]
TOPOLOGIES = [presets.fully_connected, presets.switch, presets.ring]
# nccl-tests' busbw / algbw, from its definitions (PERFORMANCE.md)
BUS_FACTOR = {
    Collective.ALL_REDUCE: lambda p: 2 * (p - 1) / p,
    Collective.REDUCE_SCATTER: lambda p: (p - 1) / p,
    Collective.ALL_GATHER: lambda p: (p - 1) / p,
    Collective.ALL_TO_ALL: lambda p: (p - 1) / p,
    Collective.SCATTER: lambda p: (p - 1) / p,
    Collective.GATHER: lambda p: (p - 1) / p,
    Collective.BROADCAST: lambda p: 1.0,
    Collective.REDUCE: lambda p: 1.0,
}


def call(mesh, collective, algorithm=None, rows=6, root=0, **kw):
    """One collective on (rows, 2) float32 buffers, one per device."""
    buffers = [np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)] * mesh.size
    if collective in ROOTED:
        kw["root"] = root
    return run_collective(collective, buffers, mesh, algorithm=algorithm, **kw)


@st.composite
def traced_meshes(draw):
    """A mesh of 1..8 devices on some topology, after 1..3 collectives of any algorithm and size."""
    p = draw(st.integers(1, 8))
    mesh = Mesh(p, topology=draw(st.sampled_from(TOPOLOGIES))(p))
    calls = st.tuples(st.sampled_from(PAIRS), st.integers(0, 9), st.integers(0, p - 1))
    for (collective, algorithm), rows, root in draw(st.lists(calls, min_size=1, max_size=3)):
        call(mesh, collective, algorithm, rows, root)
    return mesh


@given(traced_meshes())
def test_device_and_matrix_views_add_up_to_wire_bytes(mesh):
    trace = mesh.trace
    sent = np.array([d["sent"] for d in trace.per_device()])
    received = np.array([d["received"] for d in trace.per_device()])
    matrix = trace.traffic_matrix()
    assert sent.sum() == received.sum() == trace.wire_bytes
    assert sum(c.wire_bytes for c in trace.collectives) == trace.wire_bytes
    assert sum(s.wire_bytes for s in trace.steps) == trace.wire_bytes
    assert matrix.sum() == trace.wire_bytes
    assert_array_equal(matrix.sum(axis=1), sent)
    assert_array_equal(matrix.sum(axis=0), received)
    assert_array_equal(np.diag(matrix), 0)


@given(traced_meshes())
def test_link_bytes_are_the_bytes_routed_over_them(mesh):
    """Each transfer counts its bytes on every link of topology.path(src, dst)."""
    t, topology = mesh.trace.transfers(), mesh.topology
    routed = Counter()
    for src, dst, nbytes in zip(t["src"], t["dst"], t["nbytes"], strict=True):
        for link in topology.path(int(src), int(dst)):
            routed[link.name] += int(nbytes)
    assert {r["link"]: r["bytes"] for r in mesh.trace.per_link()} == dict(+routed)


def test_on_a_switch_each_transfer_counts_on_out_src_and_in_dst():
    mesh = Mesh(5, topology=presets.switch(5))
    call(mesh, Collective.ALL_REDUCE, "ring", rows=7)
    call(mesh, Collective.ALL_GATHER, "direct", rows=3)
    links = {r["link"]: r["bytes"] for r in mesh.trace.per_link()}
    for d in mesh.trace.per_device():
        assert links[f"out{d['device']}"] == d["sent"]
        assert links[f"in{d['device']}"] == d["received"]


@pytest.mark.parametrize("p", [2, 3, 4, 7, 8])
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_algbw_and_busbw_are_nccl_tests(collective, algorithm, p):
    """algbw = S / time, S one rank's buffer (all_gather, gather: the output); busbw = algbw x factor."""
    mesh = Mesh(p, topology=presets.switch(p))
    call(mesh, collective, algorithm, rows=2 * p)
    c = mesh.trace.collectives[-1]
    S = 2 * p * 2 * 4 * (p if collective in (Collective.ALL_GATHER, Collective.GATHER) else 1)
    assert c.nbytes == S
    assert c.algbw == pytest.approx(S / c.time, rel=1e-12)
    assert c.busbw == pytest.approx(S / c.time * BUS_FACTOR[collective](p), rel=1e-12)
    row = mesh.trace.per_collective()[-1]
    assert (row["time"], row["algbw"], row["busbw"]) == (c.time, c.algbw, c.busbw)


def test_summary_names_every_collective_and_lists_every_device():
    mesh = Mesh((2, 3), names=("dp", "tp"), topology=presets.switch(6))
    for collective in ALGORITHMS:
        call(mesh, collective, mesh_dim="tp")
    text = mesh.trace.summary()
    assert isinstance(text, str)
    collectives, devices = text.split("\n\n")[:2]
    for collective in ALGORITHMS:
        assert f" {collective} " in collectives
    assert devices.splitlines()[0] == "Devices"
    rows = devices.splitlines()[3:]
    assert [int(r.split()[0]) for r in rows] == list(range(mesh.size))


def test_chrome_trace_has_one_span_per_transfer_in_microseconds(tmp_path):
    mesh = Mesh(4, topology=presets.ring(4))
    call(mesh, Collective.ALL_REDUCE, "ring")
    call(mesh, Collective.BROADCAST, "tree", root=2)
    path = tmp_path / "trace.json"
    mesh.trace.to_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {d: f"dev{d}" for d in range(4)}
    sends = [e for e in events if e["ph"] == "X" and e["tid"] == 1]
    t = mesh.trace.transfers()
    assert len(sends) == len(t["src"])
    assert_array_equal([e["pid"] for e in sends], t["src"])
    assert_array_equal([e["args"]["bytes"] for e in sends], t["nbytes"])
    assert_allclose([e["ts"] for e in sends], t["start"] * 1e6, rtol=1e-12)
    assert_allclose([e["dur"] for e in sends], (t["end"] - t["start"]) * 1e6, rtol=1e-12, atol=1e-12)
    spans = [e for e in events if e["ph"] == "X" and e["tid"] == 0]
    assert len(spans) == sum(len(c.devices) for c in mesh.trace.collectives)


@given(traced_meshes())
def test_steps_are_recorded_in_order(mesh):
    """Every collective's steps 0..n-1 in order, back to back from its start to its end."""
    trace = mesh.trace
    for c in trace.collectives:
        steps = [s for s in trace.steps if s.collective == c.index]
        assert [s.index for s in steps] == list(range(c.num_steps))
        bounds = [c.start] + [s.end for s in steps]
        assert [s.start for s in steps] == bounds[:-1]
        assert bounds[-1] == c.end
    starts = [s.start for s in trace.steps]
    assert starts == sorted(starts)


def views(mesh) -> str:
    """Every view of the ledger, plus clocks and memory, as one JSON string."""
    trace = mesh.trace
    return json.dumps({
        "transfers": {k: v.tolist() for k, v in trace.transfers().items()},
        "per_device": trace.per_device(), "per_link": trace.per_link(), "per_step": trace.per_step(),
        "per_collective": trace.per_collective(), "matrix": trace.traffic_matrix().tolist(),
        "summary": trace.summary(), "chrome": trace.to_chrome_trace(), "clock": mesh.clock,
        "memory": mesh.memory(),
    }, default=str)


BAD_CALLS = {
    "root out of range": lambda m: call(m, Collective.BROADCAST, root=4),
    "negative root": lambda m: call(m, Collective.REDUCE, "tree", root=-1),
    "unknown algorithm": lambda m: call(m, Collective.ALL_REDUCE, "butterfly"),
    "unknown op": lambda m: call(m, Collective.ALL_REDUCE, op="mean"),
    "unknown mesh dim": lambda m: call(m, Collective.ALL_GATHER, mesh_dim="tp"),
    "shapes differ": lambda m: run_collective(Collective.ALL_REDUCE, [np.ones(3)] * 3 + [np.ones(4)], m),
    "dtypes differ": lambda m: run_collective(
        Collective.ALL_GATHER, [np.ones(3)] * 3 + [np.ones(3, np.float32)], m
    ),
    "too few buffers": lambda m: run_collective(Collective.ALL_REDUCE, [np.ones(3)] * 3, m),
    "out of memory": lambda m: run_collective(Collective.ALL_REDUCE, [np.ones(1000)] * 4, m),
}


@pytest.mark.parametrize("bad_call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_a_rejected_call_leaves_every_view_unchanged(bad_call):
    mesh = Mesh(4, topology=presets.switch(4), memory=4096)
    call(mesh, Collective.ALL_REDUCE, "ring")
    call(mesh, Collective.ALL_GATHER, "direct")
    before = views(mesh)
    with pytest.raises(TpsimError):
        bad_call(mesh)
    assert views(mesh) == before
