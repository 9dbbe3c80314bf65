"""The closed-form iteration model (tpsim/plan/iteration.py): its breakdown adds up, and it moves the
right way when a link slows, recomputation, overlap or microbatches change; MFU / HFU as defined."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.hardware import DEVICES
from tpsim.nn.config import GPTConfig
from tpsim.plan import flops as fl
from tpsim.plan.cluster import DGX2H, Cluster
from tpsim.plan.iteration import iteration
from tpsim.plan.layout import Layout

CFG = GPTConfig(51200, 2048, 24, 16, 1024, name="gpt-1.3b")
H100_NODE = Cluster("8 x H100, 8 x 400 Gb/s", 8, 2e-6, 450e9, 8, 50e9, 5e-6, "test")
PARTS = ("compute", "recompute", "tp_comm", "pp_comm", "pp_bubble", "dp_comm", "optimizer")


def run(layout=None, cluster=H100_NODE, **kw):
    kw = dict(dict(global_batch=32, micro_batch=2), **kw)
    return iteration(CFG, layout or Layout(2, 2, 2), cluster=cluster, device="h100", **kw)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
@pytest.mark.parametrize("mode", ["realistic", "peak"])
def test_breakdown_adds_up_to_the_iteration(mode, recompute):
    r = run(mode=mode, recompute=recompute)
    assert sum(r["time"][p] for p in PARTS) == pytest.approx(r["time"]["iteration"])
    assert min(r["time"][p] for p in PARTS) >= 0
    assert r["mode"] == mode
    assert r["tokens_per_s"] == pytest.approx(32 * 1024 / r["time"]["iteration"])


def test_mfu_and_hfu_are_megatrons():
    r = run(recompute="full")
    step, peak = r["time"]["iteration"], DEVICES["h100"].peak("bfloat16")
    model = fl.model_flops(32, 1024, 24, 2048, 51200)
    assert r["mfu"] == pytest.approx(model / (step * 8 * peak))
    assert r["hfu"] == pytest.approx(fl.hardware_flops(32, 1024, 24, 2048, 51200, "full") / (step * 8 * peak))
    assert r["hfu"] > r["mfu"]


def test_realistic_is_slower_than_the_datasheet_roofline():
    assert run(mode="realistic")["time"]["iteration"] > run(mode="peak")["time"]["iteration"]


def test_recompute_trades_time_for_memory():
    none, sel, full = (run(recompute=m) for m in ("none", "selective", "full"))
    assert none["time"]["iteration"] < sel["time"]["iteration"] < full["time"]["iteration"]
    acts = [r["memory"]["activations"] for r in (none, sel, full)]
    assert acts[0] > acts[1] > acts[2]
    assert none["time"]["recompute"] == 0


@settings(max_examples=20, deadline=None)
@given(slower=st.floats(1.0, 100.0))
def test_time_never_decreases_when_a_link_gets_slower(slower):
    fast = run()
    slow_intra = run(
        cluster=dataclasses.replace(H100_NODE, intra_bandwidth=H100_NODE.intra_bandwidth / slower)
    )
    slow_nic = run(
        layout=Layout(8, 2),
        cluster=dataclasses.replace(H100_NODE, nic_bandwidth=H100_NODE.nic_bandwidth / slower),
    )
    assert slow_intra["time"]["iteration"] >= fast["time"]["iteration"]
    assert slow_nic["time"]["iteration"] >= run(layout=Layout(8, 2))["time"]["iteration"]


def test_dp_overlap_never_makes_a_step_slower():
    plain, overlap = (run(layout=Layout(8, 2), dp_overlap=o) for o in (False, True))
    assert overlap["time"]["iteration"] <= plain["time"]["iteration"]
    assert plain["time"]["dp_comm"] > 0


@pytest.mark.parametrize("pp", [2, 4])
def test_the_bubble_shrinks_as_microbatches_grow(pp):
    shares = []
    for batch in (8, 16, 64, 256):
        r = run(layout=Layout(1, 1, pp), global_batch=batch, micro_batch=1, mode="peak")
        shares.append(r["time"]["pp_bubble"] / r["time"]["iteration"])
    assert shares == sorted(shares, reverse=True) and shares[-1] < shares[0]


def test_zero1_shards_the_optimizer_state():
    plain, zero = (run(layout=Layout(1, 8), zero1=z) for z in (False, True))
    assert zero["memory"]["optimizer"] == pytest.approx(plain["memory"]["optimizer"] / 8)
    assert zero["time"]["optimizer"] < plain["time"]["optimizer"]


def test_sp_moves_the_same_tp_bytes_in_the_same_ring_time():
    """Under SP each all-reduce becomes a reduce-scatter plus an all-gather: the same ring time."""
    tp, sp = (run(layout=Layout(8, 1, 1, s), recompute="none")["time"]["tp_comm"] for s in (False, True))
    assert sp == pytest.approx(tp)


def test_dp_ring_across_dgx2h_nodes_shares_the_nics():
    """TP 8 x DP 64 on 16-GPU nodes: 2 ranks of each DP ring per node, 8 rings share the node's NICs."""
    alpha, bw = DGX2H.ring(64, 8)
    node_total = 8 * 100e9 / 8  # DGX-2: 8 ports of 100 Gb/s
    assert (alpha, bw) == (DGX2H.inter_alpha, pytest.approx(node_total / 8))
    assert DGX2H.ring(8, 1) == (DGX2H.intra_alpha, DGX2H.intra_bandwidth)


def test_flash_attention_keeps_the_scores_off_memory():
    long = dict(global_batch=8, micro_batch=1, layout=Layout(1))
    fused, flash = (run(kernels=k, **long) for k in ("fused", "flash"))
    assert flash["memory"]["activations"] < fused["memory"]["activations"]
    assert (
        flash["memory"]["activations_per_layer"]
        == run(kernels="fused", recompute="selective", **long)["memory"]["activations_per_layer"]
    )
    assert flash["time"]["iteration"] < fused["time"]["iteration"]
    assert flash["flops"] == fused["flops"]  # Megatron's count: the backward's rerun of QK^T is not in it
