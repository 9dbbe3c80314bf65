"""The protocol option (nccl_model.with_protocols, realistic(node, protocols=True)): a ring runs whichever
of Simple, LL, LL128 NCCL 2.18.5's tuner figures predict fastest; the bytes stay the closed form's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.nodes import BY_DEVICE, NODES
from tpsim.plan import nccl_model as nm
from tpsim.plan.cluster import CLUSTERS, realistic

US = 1e-6
A100 = realistic(NODES["dgx-a100"], protocols=True)


def test_ll_for_tiny_ll128_in_the_middle_simple_for_large():
    names = {s: A100.phases(8, 1, s, "ring")[0].name for s in (1 << 10, 8 << 20, 1 << 30)}
    assert names[1 << 10].endswith("(LL)") and names[8 << 20].endswith("(LL128)")
    assert names[1 << 30] == "ring all-reduce, 8 ranks"


def test_the_ring_time_is_the_least_of_the_three_by_hand():
    """8 A100s, 4 MiB: 14 NVLink hops each; LL at 1/4 of the link (under its 87.7 GB/s ceiling), LL128 at
    0.92 of it (under 24 channels x 20 GB/s), Simple at the link rate."""
    s, bw, sent = 4 << 20, A100.intra_bandwidth, 2 * 7 / 8 * (4 << 20)
    simple = 8.4 * US + 14 * 3.4 * US + sent / bw
    ll = 6.6 * US + 14 * 0.6 * US + sent / min(bw / 4, 87.7e9)
    ll128 = 14.0 * US + 14 * 1.9 * US + sent / min(0.92 * bw, 24 * 20e9)
    assert A100.predict(8, 1, s, "ring") == pytest.approx(min(simple, ll, ll128), rel=1e-12)
    assert CLUSTERS["a100"].predict(8, 1, s, "ring") == pytest.approx(simple, rel=1e-12)


def test_hopper_takes_its_own_ll128_ceiling():
    assert nm.ring_protocols("h100")[1].cap == pytest.approx(24 * 36.7e9)
    assert nm.ring_protocols("a100")[1].cap == pytest.approx(24 * 20.0e9)


def test_scaling_a_tuning_scales_its_protocols():
    slow = nm.with_protocols(nm.NCCL_SIMPLE, "a100").scaled(3.0)
    assert [p.hop.intra for p in slow.protocols] == pytest.approx([1.8 * US, 5.7 * US])


@settings(max_examples=60, deadline=None)
@given(
    gpu=st.sampled_from(["a100", "h100", "h200"]),
    p=st.sampled_from([2, 4, 8, 16, 64]),
    small=st.integers(1, 1 << 34),
    grow=st.integers(0, 1 << 34),
)
def test_never_slower_than_simple_alone_monotone_and_the_same_bytes(gpu, p, small, grow):
    option, simple = realistic(BY_DEVICE[gpu], protocols=True), CLUSTERS[gpu]
    for a in option.available(p, 1):
        t = option.predict(p, 1, small, a)
        assert t <= simple.predict(p, 1, small, a)
        assert option.predict(p, 1, small + grow, a) >= t
        assert option.bytes_per_rank(p, 1, small, a) == simple.bytes_per_rank(p, 1, small, a)
    assert option.reduce_scatter(p, 1, small) <= simple.reduce_scatter(p, 1, small)


def test_the_option_is_named():
    assert "LL128" in A100.describe() and "LL128" not in CLUSTERS["a100"].describe()
