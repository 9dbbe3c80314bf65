"""The stream timeline of one iteration (tpsim/plan/streams.py, layer_ops.py, timeline.py): with every
overlap off it is the closed form; overlap never slows a step (DP buckets: by at most their extra
latency); the bubble shrinks with microbatches and matches (p-1)/(m v+p-1); bytes never change with a
time-model option; a stream runs one op at a time, in the trace too."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.hardware import device_spec
from tpsim.nn.config import GPTConfig
from tpsim.plan.cluster import CLUSTERS
from tpsim.plan.iteration import iteration, layer_times, logit_times
from tpsim.plan.layout import Layout
from tpsim.plan.streams import Streams, exposed
from tpsim.plan.timeline import bucket_params, lay_out

CFG = GPTConfig(1024, 256, 8, 8, 128, name="small")
H100 = CLUSTERS["h100"]
PARTS = ("compute", "recompute", "tp_comm", "pp_comm", "pp_bubble", "dp_comm", "optimizer")


@st.composite
def setups(draw):
    """A layout, schedule and batch that iteration accepts: L = 8 layers split into pp x chunks."""
    tp, dp, pp = (
        draw(st.sampled_from([1, 2, 4])),
        draw(st.sampled_from([1, 2, 16])),
        draw(st.sampled_from([1, 2, 4])),
    )
    schedule = draw(st.sampled_from(["1f1b", "gpipe"] + (["interleaved"] if pp > 1 else [])))
    chunks = draw(st.sampled_from([1, 2])) if schedule == "interleaved" else 1  # pp x chunks divides 8
    b, m = draw(st.sampled_from([1, 2])), pp * draw(st.integers(1, 3))
    kw = dict(
        global_batch=m * b * dp,
        micro_batch=b,
        schedule=schedule,
        chunks=chunks,
        recompute=draw(st.sampled_from(["none", "selective", "full"])),
        zero1=draw(st.booleans()),
        mode=draw(st.sampled_from(["peak", "realistic"])),
    )
    return Layout(tp, dp, pp, tp > 1 and draw(st.booleans())), kw


def run(layout, cluster=H100, **kw):
    return iteration(CFG, layout, cluster=cluster, device="h100", **kw)


@settings(max_examples=25, deadline=None)
@given(setup=setups(), kernels=st.sampled_from(["unfused", "fused", "flash"]))
def test_with_every_overlap_off_the_timeline_is_the_closed_form(setup, kernels):
    layout, kw = setup
    kw = {**kw, "kernels": kernels}  # unfused: 2019's optimizer, local-DDP copies and cross-entropy too
    closed, streams = run(layout, **kw), run(layout, streams=True, **kw)
    assert (closed["timing"], streams["timing"]) == ("closed form", "stream timeline (timeline.py)")
    t = closed["time"]
    boundary = 2 * kw["micro_batch"] * CFG.seq_len * CFG.hidden / (layout.tp if layout.sp else 1)
    send = H100.send(boundary, across_nodes=layout.tp * layout.dp >= H100.gpus_per_node)
    v = kw["chunks"] if kw["schedule"] == "interleaved" else 1
    if layout.pp > 1 and send > min(t["microbatch_forward"], t["microbatch_backward"]) / v:
        # sends to one neighbour queue on its stream: never faster than the closed form's free-for-all
        assert streams["time"]["iteration"] >= t["iteration"] * (1 - 1e-12)
        return
    for part in ("iteration", *PARTS):  # the same sums in another order: a few ulps apart
        assert streams["time"][part] == pytest.approx(t[part], rel=1e-9, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(setup=setups(), dp_first=st.booleans())
def test_overlap_never_makes_a_step_slower(setup, dp_first):
    """TP overlap never; DP buckets by at most what their extra launches cost: sum T(bucket) - T(all).
    On latency-free links that is 0, so there overlap of any kind never slows a step."""
    layout, kw = setup
    # latency-free: the lockstep alphas and NCCL's per-algorithm latencies (its tuning) both zero
    free = dataclasses.replace(H100, intra_alpha=0.0, inter_alpha=0.0, tuning=None)
    for cluster in (H100, free):
        off = run(layout, cluster, streams=True, **kw)["time"]["iteration"]
        tp = run(layout, cluster, tp_overlap=True, **kw)["time"]["iteration"]
        assert tp <= off * (1 + 1e-12)
        for o in ({"dp_overlap": True}, {"dp_overlap": True, "tp_overlap": True}):
            on = run(layout, cluster, streams=True, **kw, **o)["time"]["iteration"]
            assert on <= off + _bucket_latency(layout, cluster, kw) + 1e-12 * off
            if cluster is free:
                assert on <= off * (1 + 1e-12)


def _bucket_latency(layout, cluster, kw) -> float:
    """sum over buckets of T(bucket) - T(every gradient): the launches bucketing adds."""
    if layout.dp == 1:
        return 0.0
    ops = _lay_out(layout, cluster, kw, dp_overlap=True)[0].ops
    price = cluster.reduce_scatter if kw["zero1"] else cluster.all_reduce
    sizes = [o.nbytes for o in ops if o.device == 0 and o.stream == "dp" and "bucket" in o.name]
    return sum(price(layout.dp, layout.tp, n) for n in sizes) - price(layout.dp, layout.tp, sum(sizes))


def _lay_out(layout, cluster, kw, send=None, **options):
    """lay_out with iteration.py's inputs for CFG on `layout` (a small copy of iteration's wiring)."""
    spec, b = device_spec("h100"), kw["micro_batch"]
    from tpsim.efficiency import efficiency_for
    from tpsim.plan.memory_train import stage_parameters

    eff = None if kw.get("mode") == "peak" else efficiency_for("h100", "realistic")
    t, pp = layout.tp, layout.pp
    lt = layer_times(CFG, t, layout.sp, b, spec, eff, cluster, "fused", kw["recompute"])
    m = kw["global_batch"] // (layout.dp * b)
    return lay_out(
        lt=lt,
        logits=logit_times(CFG, t, b, spec, eff),
        tp=t,
        sp=layout.sp,
        pp=pp,
        dp=layout.dp,
        m=m,
        layers=CFG.num_layers // pp,
        schedule=kw["schedule"],
        chunks=kw["chunks"],
        send=1e-4 if send is None else send,
        send_bytes=2 * b * CFG.seq_len * CFG.hidden,
        params=stage_parameters(CFG, t, pp),
        optimizer=1e-4,
        cluster=cluster,
        zero1=kw["zero1"],
        recompute=kw["recompute"],
        **options,
    )


@settings(max_examples=25, deadline=None)
@given(setup=setups())
def test_the_bytes_are_unchanged_by_any_time_model_option(setup):
    """TP and DP overlap, and the kernels' pricing (peak or realistic), move the same bytes."""
    layout, kw = setup
    totals = []
    for tp_overlap, dp_overlap, mode in itertools.product(
        (False, True), (False, True), ("peak", "realistic")
    ):
        ops = _lay_out(layout, H100, {**kw, "mode": mode}, tp_overlap=tp_overlap, dp_overlap=dp_overlap)[
            0
        ].ops
        by = defaultdict(float)
        for o in ops:
            by[(o.device, o.stream, o.args.get("kind"))] += o.nbytes
        totals.append(by)
    for by in totals[1:]:
        assert by.keys() == totals[0].keys()
        for key, n in by.items():
            assert n == pytest.approx(totals[0][key], rel=1e-12)
    # and they are the closed form's: per microbatch and layer, collectives of S = 2 b s h, no SP 2
    # all-reduces forward and 2 backward, SP 4 all-gathers / reduce-scatters each way; full
    # recompute runs the forward's again
    tp_each = 2 * kw["micro_batch"] * CFG.seq_len * CFG.hidden if layout.tp > 1 else 0
    m = kw["global_batch"] // (layout.dp * kw["micro_batch"])
    per_layer = (
        (6 if kw["recompute"] == "full" else 4) if layout.sp else (3 if kw["recompute"] == "full" else 2)
    )
    tp_bytes = sum(n for (d, stream, _), n in totals[0].items() if d == 0 and stream == "tp")
    assert tp_bytes == pytest.approx(2 * per_layer * tp_each * m * CFG.num_layers // layout.pp)


def _bubble(schedule, p, m, v):
    """The simulated idle share of stage 0 with free sends and no TP / DP: 1 - busy / makespan."""
    layout = Layout(1, 1, p)
    kw = dict(micro_batch=1, global_batch=m, schedule=schedule, chunks=v, recompute="none", zero1=False)
    s, end = _lay_out(layout, H100, kw, send=0.0)
    busy = sum(o.end - o.start for o in s.on(0, "compute"))
    return 1 - busy / end


@pytest.mark.parametrize(("schedule", "v"), [("gpipe", 1), ("1f1b", 1), ("interleaved", 2)])
@pytest.mark.parametrize("p", [2, 4])
def test_the_bubble_shrinks_as_microbatches_grow_to_the_closed_form(schedule, p, v):
    shares = [_bubble(schedule, p, m, v) for m in (p, 2 * p, 4 * p, 8 * p)]
    assert shares == sorted(shares, reverse=True) and shares[-1] < shares[0]
    for m, share in zip((p, 2 * p, 4 * p, 8 * p), shares, strict=True):
        assert share == pytest.approx((p - 1) / (m * v + p - 1), rel=1e-9)


@pytest.mark.parametrize("overlap", [{}, {"tp_overlap": True, "dp_overlap": True}])
def test_the_bubble_share_of_a_step_shrinks_as_microbatches_grow(overlap):
    shares = []
    for m in (2, 4, 8, 16):
        r = run(Layout(2, 2, 2), global_batch=2 * m, micro_batch=1, streams=True, **overlap)
        shares.append(r["time"]["pp_bubble"] / r["time"]["iteration"])
    assert shares == sorted(shares, reverse=True) and shares[-1] < shares[0]


def test_tp_overlap_hides_the_dx_collective_behind_dw():
    """No SP: each layer's 2 backward all-reduces overlap the dW GEMMs of qkv and fc1."""
    off, on = (
        run(Layout(4), global_batch=4, micro_batch=1, tp_overlap=o, streams=True) for o in (False, True)
    )
    assert on["time"]["tp_comm"] < off["time"]["tp_comm"]
    assert on["time"]["iteration"] < off["time"]["iteration"]
    assert on["time"]["compute"] == pytest.approx(off["time"]["compute"])


def test_dp_buckets_follow_megatrons_default_size():
    assert bucket_params(8) == 40_000_000 and bucket_params(64) == 64_000_000
    big = GPTConfig(1024, 4096, 8, 32, 128)  # 8 x 201M parameters: a bucket per layer
    r = iteration(
        big, Layout(1, 2), cluster=H100, global_batch=2, micro_batch=1, streams=True, dp_overlap=True
    )
    plain = iteration(big, Layout(1, 2), cluster=H100, global_batch=2, micro_batch=1, streams=True)
    assert r["time"]["dp_comm"] < plain["time"]["dp_comm"]


def test_streams_run_one_op_at_a_time_and_wait_for_dependencies():
    s = Streams()
    a = s.issue(0, "compute", "a", 2.0)
    c = s.issue(0, "tp", "c", 1.0, [a])
    b = s.issue(0, "compute", "b", 3.0)  # beside c: another stream
    d = s.issue(0, "compute", "d", 1.0, [c])
    assert (c.start, b.start, d.start) == (2.0, 2.0, 5.0)
    assert exposed([(c.start, c.end)], [(a.start, a.end), (b.start, b.end)]) == 0.0
    assert exposed([(0.0, 4.0), (6.0, 8.0)], [(1.0, 2.0), (7.0, 10.0)]) == pytest.approx(3 + 1)


spans = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)).map(sorted).map(tuple), max_size=6)


@settings(max_examples=50, deadline=None)
@given(mine=spans, cover=spans)
def test_exposed_time_is_what_no_cover_hides(mine, cover):
    """On whole-second intervals: count the seconds [k, k+1) inside `mine` and outside `cover`."""
    inside = lambda k, iv: any(s <= k < e for s, e in iv)  # noqa: E731
    assert exposed(mine, cover) == sum(inside(k, mine) and not inside(k, cover) for k in range(20))


@pytest.mark.parametrize("layout", [Layout(2, 2, 2, True), Layout(4, 2, 2)])
def test_the_trace_has_a_process_per_stage_a_thread_per_stream_and_no_overlap_on_one(layout, tmp_path):
    path = tmp_path / "trace.json"
    r = run(layout, global_batch=16, micro_batch=1, tp_overlap=True, dp_overlap=True, trace=str(path))
    events = json.loads(path.read_text())["traceEvents"]
    names = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
    assert names == {(p, s) for p in range(2) for s in ("compute", "tp", "pp next", "pp prev", "dp")}
    spans = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            spans[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    assert len(spans) == 2 * 4  # every stream of both stages was used, but stage 0 has no previous
    # stage and stage 1 no next one: they never send that way
    for track in spans.values():
        track.sort()
        for (_, end), (start, _) in itertools.pairwise(track):
            assert start >= end - 1e-6 * abs(end)  # microseconds, rounded once
    last = max(e["ts"] + e["dur"] for e in events if e["ph"] == "X")
    assert last == pytest.approx(r["time"]["iteration"] * 1e6, rel=1e-9)
