"""The Simple-protocol slot option (nccl_model.NCCL_SIMPLE_CHUNKED, realistic(node, chunks=True)): a ring
step of one rank's share S / p over the channels takes k = ceil(S / (p x channels x slot)) slots and pays
its hop latencies once per slot; with one slot it is the per-step formula; it is never faster than it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.nodes import BY_DEVICE, NODES
from tpsim.plan import nccl_model as nm
from tpsim.plan.cluster import CLUSTERS, realistic

US = 1e-6
ONE_SLOT = 8 * nm.NVSWITCH_RING_CHANNELS * nm.SLOT  # the largest S whose 8-rank ring step is one slot


def test_the_slot_is_nccls_buffer_over_its_steps():
    assert nm.SLOT == 512 * 1024 == (4 << 20) // 8 and nm.NCCL_SIMPLE_CHUNKED.channels == 24


@pytest.mark.parametrize("gpu", ["a100", "h100", "h200"])
@pytest.mark.parametrize("nbytes", [1, 1 << 20, ONE_SLOT - 1, ONE_SLOT])
def test_one_slot_is_the_per_step_formula(gpu, nbytes):
    chunked, per_step = realistic(BY_DEVICE[gpu], chunks=True), CLUSTERS[gpu]
    for a in per_step.available(8, 1):
        assert chunked.predict(8, 1, nbytes, a) == per_step.predict(8, 1, nbytes, a)
    assert chunked.reduce_scatter(8, 1, nbytes) == per_step.reduce_scatter(8, 1, nbytes)


def test_the_slot_count_and_the_ring_time_by_hand():
    """8 ranks on one A100 node, S = 3 slots' worth per rank and channel plus one byte: each of the
    14 ring steps takes 4 slots, so 56 NVLink hop latencies of 3.4 us after the 8.4 us base."""
    nbytes = 3 * ONE_SLOT + 1
    assert nm.slots(8, nbytes, 24) == 4 == math.ceil(nbytes / (8 * 24 * 512 * 1024))
    a100 = realistic(NODES["dgx-a100"], chunks=True)
    bw = a100.intra_bandwidth
    expected = 8.4 * US + 4 * 2 * 7 * 3.4 * US + 2 * 7 / 8 * nbytes / bw
    assert a100.predict(8, 1, nbytes, "ring") == pytest.approx(expected, rel=1e-12)
    # the slots add latency only: the per-step ring plus 3 more rounds of 14 hops
    extra = a100.predict(8, 1, nbytes, "ring") - CLUSTERS["a100"].predict(8, 1, nbytes, "ring")
    assert extra == pytest.approx(3 * 14 * 3.4 * US, rel=1e-9)


def test_no_channels_is_one_slot():
    assert nm.slots(8, 1 << 33, 0) == 1 and nm.slots(1, 1 << 33, 24) == 1


@settings(max_examples=60, deadline=None)
@given(
    gpu=st.sampled_from(["a100", "h100", "h200"]),
    p=st.sampled_from([2, 4, 8, 16, 64]),
    small=st.integers(1, 1 << 34),
    grow=st.integers(0, 1 << 34),
)
def test_time_is_monotone_in_size_and_never_below_the_per_step_model(gpu, p, small, grow):
    chunked, per_step = realistic(BY_DEVICE[gpu], chunks=True), CLUSTERS[gpu]
    for a in chunked.available(p, 1):
        t = chunked.predict(p, 1, small, a)
        assert chunked.predict(p, 1, small + grow, a) >= t
        assert t >= per_step.predict(p, 1, small, a)
        assert chunked.bytes_per_rank(p, 1, small, a) == per_step.bytes_per_rank(p, 1, small, a)
    assert chunked.reduce_scatter(p, 1, small + grow) >= chunked.reduce_scatter(p, 1, small)


def test_the_option_is_named():
    assert "Simple slot" in realistic(NODES["dgx-a100"], chunks=True).describe()
    assert "Simple slot" not in CLUSTERS["a100"].describe()
