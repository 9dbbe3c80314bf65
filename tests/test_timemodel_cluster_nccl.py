"""The cluster's NCCL time model (tpsim/plan/cluster.py, nccl_model.py): the options change the time,
never the bytes; slower links never make it faster; auto is the minimum; hierarchical is its phases."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.collectives import costs
from tpsim.errors import AlgorithmError, TopologyError
from tpsim.nodes import NODES
from tpsim.plan import nccl_model as nm
from tpsim.plan.cluster import CLUSTERS, Cluster, from_node, realistic

H100 = NODES["dgx-h100"]
BASE = realistic(H100)  # nvls enabled: every algorithm can run
SIZES = st.integers(1, 1 << 34)
# p and stride powers of two: a group spanning nodes has the same m members in each of its n nodes
GROUPS = st.tuples(st.sampled_from([2, 4, 8, 16, 32, 64, 128]), st.sampled_from([1, 2, 4, 8]))


TUNINGS = [None, nm.NCCL_SIMPLE, nm.NCCL_SIMPLE_CHUNKED, nm.with_protocols(nm.NCCL_SIMPLE_CHUNKED, "h100")]


@st.composite
def clusters(draw):
    """The H100 node under every combination of the time-model options."""
    achievable = draw(st.booleans())
    return dataclasses.replace(
        from_node(H100, achievable),
        algorithm=draw(st.sampled_from(nm.CHOICES)),
        hierarchical=draw(st.booleans()),
        tuning=draw(st.sampled_from(TUNINGS)),
    )


def slower(c: Cluster, knob: str, factor: float) -> Cluster:
    if knob == "tuning":
        return dataclasses.replace(c, tuning=c.tuning.scaled(factor) if c.tuning else None)
    if knob.endswith("alpha"):
        return dataclasses.replace(c, **{knob: getattr(c, knob) * factor})
    return dataclasses.replace(c, **{knob: getattr(c, knob) / factor})


@settings(max_examples=60, deadline=None)
@given(
    c=clusters(),
    group=GROUPS,
    nbytes=SIZES,
    knob=st.sampled_from(["intra_bandwidth", "nic_bandwidth", "intra_alpha", "inter_alpha", "tuning"]),
    factor=st.floats(1.0, 100.0),
)
def test_time_never_decreases_when_a_link_gets_slower(c, group, nbytes, knob, factor):
    p, stride = group
    slow = slower(c, knob, factor)
    for f in ("all_reduce", "reduce_scatter"):
        fast_t, slow_t = getattr(c, f)(p, stride, nbytes), getattr(slow, f)(p, stride, nbytes)
        assert slow_t >= fast_t * (1 - 1e-12), (f, c.describe(), knob)
    for a in c.available(p, stride):  # every algorithm alone, not only the one auto picks
        assert slow.predict(p, stride, nbytes, a) >= c.predict(p, stride, nbytes, a) * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(c=clusters(), other=clusters(), group=GROUPS, nbytes=SIZES)
def test_the_bytes_do_not_depend_on_the_time_options(c, other, group, nbytes):
    """Bandwidth figures, latencies and hierarchical or flat change the time, not what each rank sends;
    the ring's bytes are the closed form's, 2(p-1)/p S, flat or in three phases."""
    p, stride = group
    for a in c.available(p, stride):
        assert c.bytes_per_rank(p, stride, nbytes, a) == pytest.approx(
            other.bytes_per_rank(p, stride, nbytes, a), rel=1e-12
        )
    ring = costs.bytes_sent_per_rank("all_reduce", "ring", p, nbytes)
    assert c.bytes_per_rank(p, stride, nbytes, "ring") == pytest.approx(ring, rel=1e-12)
    assert c.bytes_per_rank(p, stride, nbytes, "tree") == pytest.approx(2 * nbytes, rel=1e-12)


def test_the_closed_form_bytes_take_no_time_option():
    assert list(inspect.signature(costs.bytes_sent_per_rank).parameters) == [
        "collective",
        "algorithm",
        "p",
        "nbytes",
    ]


@settings(max_examples=60, deadline=None)
@given(c=clusters(), group=GROUPS, nbytes=SIZES)
def test_auto_picks_the_least_predicted_time(c, group, nbytes):
    p, stride = group
    auto = dataclasses.replace(c, algorithm="auto")
    times = {a: auto.predict(p, stride, nbytes, a) for a in auto.available(p, stride)}
    assert auto.all_reduce(p, stride, nbytes) == min(times.values())
    assert times[auto.choose(p, stride, nbytes)] == min(times.values())
    assert c.predict(p, stride, nbytes, "auto") == min(times.values())  # asked for, whatever c's own
    no_nvls = dataclasses.replace(auto, nvls=False)
    assert no_nvls.choose(p, stride, nbytes) in ("ring", "tree")
    assert no_nvls.all_reduce(p, stride, nbytes) == min(times["ring"], times["tree"])


def test_auto_switches_from_tree_to_ring_as_the_message_grows():
    """128 A100s over 16 nodes: the tree's few hops win small messages, the ring's 2(p-1)/p S large ones."""
    a100 = CLUSTERS["a100"]
    assert a100.choose(128, 1, 1 << 10) == "tree"
    assert a100.choose(128, 1, 1 << 30) == "ring"
    assert a100.choose(8, 1, 1 << 10) == "ring"  # one node: the tree is a chain, no fewer hops


@settings(max_examples=60, deadline=None)
@given(
    c=clusters(),
    nodes=st.sampled_from([2, 4, 16]),
    stride=st.sampled_from([1, 2, 4]),
    nbytes=SIZES,
)
def test_hierarchical_is_the_sum_of_its_three_phases(c, nodes, stride, nbytes):
    """Reduce-scatter over the node's m members, all-reduce of the 1/m shard on each GPU's own rail
    across the nodes, all-gather: each priced alone by the closed forms (lockstep alphas)."""
    c = dataclasses.replace(c, algorithm="ring", hierarchical=True, tuning=None)
    m = c.gpus_per_node // stride
    p = m * nodes
    rail = min(c.intra_bandwidth, c.nics * c.nic_bandwidth / c.gpus_per_node)
    rs = costs.ring_reduce_scatter(m, nbytes, c.intra_alpha, c.intra_bandwidth)
    across = costs.ring_all_reduce(nodes, nbytes / m, c.inter_alpha, rail)
    ag = costs.ring_all_gather(m, nbytes, c.intra_alpha, c.intra_bandwidth)
    phases = c.phases(p, stride, nbytes)
    assert [ph.seconds for ph in phases] == pytest.approx([rs, across, ag], rel=1e-12)
    assert c.all_reduce(p, stride, nbytes) == pytest.approx(rs + across + ag, rel=1e-12)


def test_two_dgx_h100_all_reduce_runs_at_the_nics_achievable_rate():
    """16 GPUs on 2 DGX H100, 8 GiB: the multi-rail ring's time is S 2(p-1)/p over the busbw of the 8
    rails at the achievable NIC rate, slower only by the NVLink cap (NVLink's achievable rate is
    below 8 NICs') and the latency; the hierarchical one's middle phase is each GPU's 1/8 shard on
    its own NIC."""
    p, nbytes = 16, 8 << 30
    nic, link = H100.nic.achievable, H100.link.achievable
    ideal = nbytes * 2 * (p - 1) / p / (8 * nic)
    for tuning in (None, nm.NCCL_SIMPLE):
        ring = from_node(H100, achievable=True, tuning=tuning)
        latency = ring.all_reduce(p, 1, 0)
        cap = max(1.0, 8 * nic / link)  # the ring runs at min(NVLink, 8 x NIC)
        t = ring.all_reduce(p, 1, nbytes)
        assert t == pytest.approx(ideal * cap + latency, rel=1e-12)
        assert 0 < latency / ideal < 0.01  # at 8 GiB the ratio is the cap's within 1 %
        hier = dataclasses.replace(ring, hierarchical=True)
        rs, across, ag = hier.phases(p, 1, nbytes)
        hop = tuning.ring if tuning else nm.Hop(0, ring.intra_alpha, ring.inter_alpha)
        assert across.seconds == pytest.approx(hop.base + 2 * hop.inter + nbytes / 8 / nic, rel=1e-12)
        assert hier.all_reduce(p, 1, nbytes) == pytest.approx(rs.seconds + across.seconds + ag.seconds)


def test_nvls_sends_the_message_once():
    """In-switch reduction: each GPU sends S (not 2(p-1)/p S) inside one node, at 5/6 of the link."""
    c = CLUSTERS["h100"]
    (ph,) = c.phases(8, 1, 1 << 30, "nvls")
    assert ph.bytes_per_rank == 1 << 30
    assert ph.seconds == pytest.approx(nm.NCCL_SIMPLE.nvls.intra + (1 << 30) / (5 / 6 * c.intra_bandwidth))


def test_nvls_falls_back_where_a_group_has_one_gpu_per_node():
    """TP 8 x DP 2 on two DGX H100: each DP pair has one GPU per node, so the switch has nothing to
    reduce; a cluster set to NVLS runs those on the faster of ring and tree, and says so."""
    c = dataclasses.replace(BASE, algorithm="nvls")
    assert c.choose(8, 1, 1 << 20) == "nvls"
    fallback = min(c.predict(2, 8, 1 << 30, a) for a in ("ring", "tree"))
    assert c.choose(2, 8, 1 << 30) in ("ring", "tree") and c.all_reduce(2, 8, 1 << 30) == fallback
    assert "one GPU per node" in c.describe()


def test_every_choice_is_named():
    c = dataclasses.replace(BASE, algorithm="tree", hierarchical=True)
    text = c.describe()
    assert "tree" in text and "hierarchical" in text and "achievable" in text and "tuning.cc" in text
    nominal = from_node(H100).describe()
    assert "ring" in nominal and "nominal" in nominal and "flat multi-rail" in nominal and "alphas" in nominal
    assert "nvls" in CLUSTERS["h100"].describe() and "nvls" not in CLUSTERS["a100"].describe()


def test_bad_options_are_refused():
    with pytest.raises(AlgorithmError, match="'rnig'"):
        dataclasses.replace(BASE, algorithm="rnig")
    with pytest.raises(TopologyError, match="no in-switch reduction"):
        from_node(NODES["dgx-a100"], algorithm="nvls")
    with pytest.raises(AlgorithmError, match="'nvls'"):
        CLUSTERS["a100"].predict(8, 1, 1024, "nvls")
    with pytest.raises(AlgorithmError, match="'nvls' for 16 ranks at stride 8; valid: ring, tree"):
        CLUSTERS["h100"].predict(16, 8, 1024, "nvls")  # one GPU per node: nothing for the switch to reduce
