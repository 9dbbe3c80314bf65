"""Topology: routes for each kind, vectorised route against path(), files, errors, presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.errors import TopologyError
from tpsim.presets import (
    PRESETS,
    fully_connected,
    multi_node,
    nvlink_node,
    pcie,
    preset,
    ring,
    switch,
)
from tpsim.topology import (
    HierarchicalRouting,
    Link,
    PairwiseRouting,
    RingRouting,
    SwitchRouting,
    Topology,
)


def _arr(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _distinct_alphas(routing, n: int, name: str = "t") -> Topology:
    """Every link a different alpha (powers of two, exact sums), so a wrong link shows in the latency."""
    names = routing.link_names(n)
    return Topology(name, n, [Link(x, 2.0**-i, 1e9 + i) for i, x in enumerate(names)], routing, "test")


def _kinds(n: int) -> list[Topology]:
    out = [_distinct_alphas(r, n) for r in (PairwiseRouting(), SwitchRouting(), RingRouting())]
    out += [_distinct_alphas(HierarchicalRouting(g), n) for g in range(1, n + 1) if n % g == 0]
    return out


# ---- each kind on small examples


def test_ring_of_six_takes_the_shorter_way_and_pays_alpha_per_hop() -> None:
    t = ring(6, alpha=1e-6)
    ti, li, lat = t.route(_arr(0, 0, 4, 1), _arr(3, 1, 2, 0))
    assert ti.tolist() == [0, 0, 0, 1, 2, 2, 3]
    assert li.tolist() == [0, 1, 2, 0, 6 + 4, 6 + 3, 6 + 1]  # 0->3 clockwise (tie); 4->2 and 1->0 ccw
    assert lat == pytest.approx([3e-6, 1e-6, 2e-6, 1e-6], rel=1e-12)
    assert [x.name for x in t.path(0, 3)] == ["0->1 cw", "1->2 cw", "2->3 cw"]
    assert [x.name for x in t.path(5, 3)] == ["5->4 ccw", "4->3 ccw"]


def test_ring_ties_go_clockwise_and_hops_are_the_shorter_distance() -> None:
    for n in range(2, 10):
        t = ring(n)
        for i in range(n):
            for j in range(n):
                if i != j:
                    d = (j - i) % n
                    path = t.path(i, j)
                    assert len(path) == min(d, n - d)
                    assert path[0].name.endswith(" cw") == (d <= n - d)


def test_switch_crosses_egress_then_ingress() -> None:
    t = switch(4, alpha=1e-6, bandwidth=10e9)
    ti, li, lat = t.route(_arr(0, 3, 2), _arr(1, 0, 3))
    assert ti.tolist() == [0, 0, 1, 1, 2, 2]
    assert li.tolist() == [0, 4 + 1, 3, 4 + 0, 2, 4 + 3]
    assert lat.tolist() == [1e-6] * 3  # alpha / 2 per port, alpha end to end
    assert [x.name for x in t.path(3, 0)] == ["out3", "in0"]
    assert t.bandwidths.tolist() == [10e9] * 8


def test_pairwise_gives_every_ordered_pair_its_own_link() -> None:
    n = 5
    t = fully_connected(n, alpha=2e-6)
    src, dst = np.nonzero(~np.eye(n, dtype=bool))
    ti, li, lat = t.route(src, dst)
    assert ti.tolist() == list(range(n * (n - 1)))
    assert sorted(li.tolist()) == list(range(n * (n - 1)))  # a bijection onto the links
    assert all(t.links[k].name == f"{s}->{d}" for k, s, d in zip(li, src, dst, strict=True))
    assert lat.tolist() == [2e-6] * len(src)


def test_hierarchical_uses_the_switch_inside_a_node_and_nics_between() -> None:
    t = multi_node(nodes=2, gpus_per_node=4)
    n = 8
    ti, li, _ = t.route(_arr(1, 1, 7), _arr(2, 5, 4))
    assert ti.tolist() == [0, 0, 1, 1, 2, 2]
    assert li.tolist() == [1, n + 2, 2 * n + 1, 3 * n + 5, 7, n + 4]
    assert [x.name for x in t.path(1, 5)] == ["nic-out1", "nic-in5"]
    assert t.path(1, 5)[0].bandwidth == 50e9
    assert t.path(1, 2)[0].bandwidth == 450e9


def test_route_of_nothing_is_empty() -> None:
    ti, li, lat = ring(4).route(_arr(), _arr())
    assert ti.shape == li.shape == lat.shape == (0,)
    assert ti.dtype == li.dtype == np.int64 and lat.dtype == np.float64


def test_alphas_and_bandwidths_are_cached_read_only_float64() -> None:
    t = nvlink_node()
    assert t.alphas is t.alphas and t.alphas.dtype == np.float64 and t.alphas.shape == (16,)
    with pytest.raises(ValueError):
        t.bandwidths[0] = 1.0


# ---- vectorised route equals path(), for every kind, n and pair


@pytest.mark.parametrize("n", range(1, 10))
def test_route_equals_path_for_all_pairs(n: int) -> None:
    src, dst = np.nonzero(~np.eye(n, dtype=bool))
    for t in _kinds(n):
        ti, li, lat = t.route(src, dst)
        assert ti.dtype == li.dtype == np.int64 and ti.shape == li.shape
        want_ti, want_li, want_lat = [], [], []
        for k, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
            path = t.path(s, d)
            want_ti += [k] * len(path)
            want_li += [t.links.index(x) for x in path]
            want_lat.append(sum(x.alpha for x in path))
        assert ti.tolist() == want_ti, t.describe()
        assert li.tolist() == want_li, t.describe()
        assert lat.tolist() == want_lat, t.describe()  # power-of-two alphas: sums are exact


@given(
    st.integers(2, 12).flatmap(
        lambda n: st.tuples(
            st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n - 1)), max_size=40)
        )
    ),
    st.integers(0, 10),
)
def test_route_of_a_random_batch_concatenates_the_paths(case, pick: int) -> None:
    n, pairs = case
    src = np.array([s for s, _ in pairs], dtype=np.int64)
    dst = np.array([(s + k) % n for s, k in pairs], dtype=np.int64)  # k >= 1: never a local copy
    kinds = _kinds(n)
    t = kinds[pick % len(kinds)]
    ti, li, lat = t.route(src, dst)
    paths = [t.path(int(s), int(d)) for s, d in zip(src, dst, strict=True)]
    assert li.tolist() == [t.links.index(x) for p in paths for x in p]
    assert ti.tolist() == [k for k, p in enumerate(paths) for _ in p]
    assert lat.tolist() == [sum(x.alpha for x in p) for p in paths]


# ---- files


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_dict_from_dict_round_trip(name: str) -> None:
    t = preset(name, 8)
    back = Topology.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t
    assert back.links == t.links and back.kind == t.kind and back.source == t.source
    assert np.array_equal(back.alphas, t.alphas)


def test_save_and_load(tmp_path) -> None:
    t = _distinct_alphas(HierarchicalRouting(3), 6, "calibrated")
    path = tmp_path / "topo.json"
    t.save(path)
    back = Topology.load(path)
    assert back == t
    assert back.route(_arr(0, 4), _arr(5, 3))[2].tolist() == t.route(_arr(0, 4), _arr(5, 3))[2].tolist()


def test_load_names_the_file_and_the_problem(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TopologyError, match=r"bad\.json"):
        Topology.load(bad)
    d = ring(4).to_dict()
    d["links"][2]["bandwidth"] = 0
    bad.write_text(json.dumps(d))
    with pytest.raises(TopologyError, match=r"bad\.json.*'2->3 cw'.*bandwidth 0"):
        Topology.load(bad)


def test_from_dict_rejects_malformed_input() -> None:
    d = ring(4).to_dict()
    with pytest.raises(
        TopologyError, match=r"unknown routing kind 'mesh'.*pairwise, switch, ring, hierarchical"
    ):
        Topology.from_dict({**d, "routing": {"kind": "mesh"}})
    with pytest.raises(TopologyError, match="needs 8 links; got 7"):
        Topology.from_dict({**d, "links": d["links"][:7]})
    with pytest.raises(TopologyError, match="missing 'links'"):
        Topology.from_dict({k: v for k, v in d.items() if k != "links"})
    with pytest.raises(TopologyError, match="malformed"):
        Topology.from_dict({**d, "links": [{"name": "x"}] * 8})
    with pytest.raises(TopologyError, match="group_size 3 does not split 8"):
        Topology.from_dict(
            {**multi_node(2, 4).to_dict(), "routing": {"kind": "hierarchical", "group_size": 3}}
        )


# ---- errors name the bad value


def test_route_names_a_device_out_of_range() -> None:
    t = switch(4)
    with pytest.raises(TopologyError, match=r"destination device 4 is outside 0\.\.3"):
        t.route(_arr(0, 1), _arr(1, 4))
    with pytest.raises(TopologyError, match=r"source device -1 is outside 0\.\.3"):
        t.route(_arr(-1), _arr(1))
    with pytest.raises(TopologyError, match=r"source device 7 is outside 0\.\.3"):
        t.path(7, 0)


def test_route_rejects_local_copies_and_bad_arrays() -> None:
    t = ring(4)
    with pytest.raises(TopologyError, match=r"transfer 1 is a local copy \(2 -> 2\)"):
        t.route(_arr(0, 2), _arr(1, 2))
    with pytest.raises(TopologyError, match="integer"):
        t.route(np.array([0.0]), np.array([1.0]))
    with pytest.raises(TopologyError, match="must match"):
        t.route(_arr(0, 1), _arr(1))


def test_bad_links_are_named() -> None:
    with pytest.raises(TopologyError, match=r"link 'out3' has bandwidth -1\.0"):
        Link("out3", 1e-6, -1.0)
    with pytest.raises(TopologyError, match=r"link 'nic-in0' has alpha -1e-06"):
        Link("nic-in0", -1e-6, 1e9)
    with pytest.raises(TopologyError, match=r"link 'x' has bandwidth nan"):
        Link("x", 0.0, float("nan"))
    with pytest.raises(TopologyError, match=r"link 'out0' has bandwidth 0"):
        switch(2, bandwidth=0)
    with pytest.raises(TopologyError, match="two links named 'a'"):
        Topology("t", 2, [Link("a", 0, 1), Link("a", 0, 1)], PairwiseRouting())


def test_preset_errors_name_the_value_and_the_valid_ones() -> None:
    with pytest.raises(
        TopologyError, match=r"unknown topology preset 'nvswitch'; valid: dgx-2, .*fully-connected"
    ):
        preset("nvswitch", 8)
    with pytest.raises(TopologyError, match=r"unknown gpu 'l40s'; valid: v100, a100, h100, h200 \(l40s"):
        nvlink_node(8, "l40s")
    with pytest.raises(TopologyError, match="unknown PCIe gen 3; valid: 4, 5"):
        pcie(8, gen=3)
    with pytest.raises(TopologyError, match="multiple of 8; got 12"):
        preset("dgx-h100", 12)
    with pytest.raises(TopologyError, match="n is 0"):
        ring(0)


# ---- presets


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_name_their_source(name: str) -> None:
    t = preset(name, 8)
    assert t.num_devices == 8 and t.source.strip()
    assert t.source in t.describe() and t.kind in t.describe()


def test_real_system_figures() -> None:
    assert set(nvlink_node(8, "h100").bandwidths) == {450e9}
    assert set(nvlink_node(8, "h200").bandwidths) == {450e9}
    assert set(nvlink_node(8, "a100").bandwidths) == {300e9}
    assert set(nvlink_node(16, "v100").bandwidths) == {150e9}
    assert set(pcie(8, 4).bandwidths) == {32e9} and set(pcie(8, 5).bandwidths) == {64e9}
    assert "assumption" in nvlink_node().source and "datasheet" in nvlink_node().source
    assert "PCI-SIG" in pcie().source and "DGX H100" in multi_node().source
    t = multi_node()
    assert t.num_devices == 16 and t.routing == HierarchicalRouting(8)
    assert t.route(_arr(0), _arr(8))[2].tolist() == [5e-6]  # NIC alpha, end to end


def test_topology_does_not_import_presets() -> None:
    """presets builds on topology, one way: no import of presets or nodes in topology or routing."""
    import ast
    from pathlib import Path

    import tpsim.topology

    for path in (Path(tpsim.topology.__file__), Path(tpsim.topology.__file__).with_name("routing.py")):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names |= {
            f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
        }
        assert not {x for x in names if "presets" in x or "nodes" in x}, path


def test_a_dgx_h100_node_leaves_through_all_eight_nics() -> None:
    """Issue 14: a node's cross-node traffic may use all of its 8 x 400 Gb/s NICs; the preset gives every GPU
    its own (the single ring of lesson 8 used 2 of 16 because of its schedule, not of the preset)."""
    t = preset("dgx-h100", 16)
    nics = [x for x in t.links if x.name.startswith("nic-out")]
    assert len(nics) == 16 and {x.bandwidth for x in nics} == {400e9 / 8}
    assert len({t.path(i, i + 8)[0].name for i in range(8)}) == 8  # GPU i to its twin: NIC i
