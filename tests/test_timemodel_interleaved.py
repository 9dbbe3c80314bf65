"""Interleaved 1F1B (tpsim/plan/interleaved.py): the simulated bubble is (p - 1) / (m v), every op runs
once after what it depends on, and more chunks or more microbatches shrink the bubble."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.nn.config import GPTConfig
from tpsim.plan.cluster import CLUSTERS
from tpsim.plan.interleaved import device_ops, interleaved_bubble, simulate_interleaved
from tpsim.plan.iteration import iteration
from tpsim.plan.layout import Layout
from tpsim.plan.pipeline import PipelineError, simulate

shapes = st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 4)).map(
    lambda t: (t[0], t[1], t[0] * t[2])  # (p, v, m) with m a multiple of p
)


@given(shape=shapes, t_f=st.floats(0.1, 10), ratio=st.floats(1, 3))
def test_the_simulated_bubble_is_p_minus_1_over_m_v(shape, t_f, ratio):
    p, v, m = shape
    t_b = ratio * t_f
    run = simulate_interleaved(p, v, m, t_f, t_b)
    ideal = m * (t_f + t_b)
    assert (run.makespan - ideal) / ideal == pytest.approx(interleaved_bubble(p, m, v), abs=1e-9)


@given(shape=shapes, t_send=st.floats(0, 1))
def test_every_op_runs_once_after_its_dependency(shape, t_send):
    p, v, m = shape
    run = simulate_interleaved(p, v, m, 1.0, 2.0, t_send)
    ops = [op for d in range(p) for op in device_ops(p, v, m, d)]
    assert sorted(ops) == sorted((k, s, j) for k in "FB" for s in range(p * v) for j in range(m))
    end = {}
    for d in range(p):
        for (kind, s, j), (_, _, _, start, stop) in zip(
            device_ops(p, v, m, d), [e for e in run.events if e[0] == d], strict=True
        ):
            end[kind, s, j] = (start, stop)
    for (kind, s, j), (start, _) in end.items():
        dep = ("F", s - 1, j) if kind == "F" else ("B", s + 1, j) if s < p * v - 1 else ("F", s, j)
        if dep in end:
            gap = 0.0 if dep == ("F", s, j) else t_send
            assert start >= end[dep][1] + gap - 1e-12


def test_more_chunks_and_more_microbatches_shrink_the_bubble():
    def bubble(v, m):
        run = simulate_interleaved(4, v, m, 1.0, 2.0, 0.01)
        return run.makespan / (m * 3.0) - 1

    assert bubble(1, 8) > bubble(2, 8) > bubble(4, 8)
    assert bubble(2, 8) > bubble(2, 16) > bubble(2, 64)
    # v = 1 (Megatron runs plain 1F1B then; its warm-up here is longer) takes 1F1B's time with free sends
    assert simulate_interleaved(4, 1, 8, 1.0, 2.0).makespan == pytest.approx(
        simulate("1f1b", 4, 8, 1.0, 2.0).makespan
    )


def test_microbatches_must_be_a_multiple_of_stages():
    with pytest.raises(PipelineError, match="multiple of stages"):
        simulate_interleaved(4, 2, 6, 1.0, 2.0)


def test_interleaving_the_iteration_trades_bubble_for_activations():
    cfg = GPTConfig(51200, 2048, 24, 16, 1024)
    kw = dict(cluster=CLUSTERS["h100"], device="h100", global_batch=16, micro_batch=1)
    plain = iteration(cfg, Layout(1, 1, 4), schedule="1f1b", **kw)
    inter = iteration(cfg, Layout(1, 1, 4), schedule="interleaved", chunks=3, **kw)
    assert inter["time"]["pp_bubble"] < plain["time"]["pp_bubble"]
    held = inter["memory"]["microbatches_held"]
    assert held == (2 * 3 + 2 * 4 + 1) / 3 > plain["memory"]["microbatches_held"]
