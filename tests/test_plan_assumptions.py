"""tpsim.plan.assumptions: the line printed beside an iteration() figure names what that figure assumed."""

from __future__ import annotations

import pytest

from tpsim.errors import TopologyError
from tpsim.nn.config import PRESETS
from tpsim.nodes import NODES
from tpsim.plan import Layout
from tpsim.plan.assumptions import describe, rates, sources
from tpsim.plan.cluster import from_node
from tpsim.plan.iteration import iteration


def run(mode: str, **options):
    cluster = from_node(NODES["dgx-h100"])
    r = iteration(PRESETS["gpt3-1.3b"], Layout(tp=2, dp=2), cluster=cluster, global_batch=8, micro_batch=2,
                  mode=mode, **options)
    return r, cluster


def test_the_line_names_each_setting_the_result_was_computed_with():
    r, cluster = run("realistic", recompute="selective", kernels="flash", zero1=True, dp_overlap=True)
    line = describe(r, cluster, dp_overlap=True, zero1=True)
    for words in ("realistic efficiency (H100", "DP overlap on", "recompute selective", "kernels flash",
                  "micro-batch 2, 2 per step, global batch 8", "ZeRO-1 on", "links nominal (datasheet)",
                  cluster.name):
        assert words in line, words
    peak, _ = run("peak")
    assert "datasheet peak" in describe(peak, cluster) and "recompute none" in describe(peak, cluster)


def test_rates_are_the_clusters_own():
    nominal, achievable = from_node(NODES["dgx-h100"]), from_node(NODES["dgx-h100"], achievable=True)
    assert rates(nominal) == "450 GB/s per GPU inside a node, 8 NICs x 50 GB/s per node between nodes"
    assert rates(achievable) != rates(nominal) and "8 NICs x 45 GB/s" in rates(achievable)
    r, _ = run("realistic")
    assert "links achievable" in describe(r, achievable, achievable=True)


def test_sources_cite_the_efficiency_and_the_datasheet():
    cluster = from_node(NODES["dgx-a100"])
    eff, node = sources("a100", cluster)
    assert "267.9 TFLOP/s" in eff and "DGX A100 datasheet" in node
    with pytest.raises(TopologyError, match="no efficiency parameters"):
        sources("l40s", cluster)
