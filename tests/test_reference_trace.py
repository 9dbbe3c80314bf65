"""The reference's Chrome trace is tpsim's: one process per rank, the same collective events (name,
category; args: bytes, the module that issued it, the direction) in the same order, and in schedule
mode the same sends, for the same layer."""

from __future__ import annotations

import json

import pytest

from reference.cases import default_cases
from reference.check import check
from reference.record import CallRecord
from reference.trace import merge_parts, twin, write_part
from tpsim import trace_events

WS = 2


def spans(doc: dict, pid: int, tid: int) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == pid and e["tid"] == tid]


def essentials(events: list[dict], *keys: str) -> list[tuple]:
    return [(e["name"], e["cat"], *(e["args"][k] for k in keys)) for e in events]


@pytest.fixture(scope="module", params=["native", "schedule"])
def traced(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("trace") / "run.json")
    cases = [c for c in default_cases(WS, "exact", "float32") if c.layer in ("mlp", "gpt")]
    result = check(WS, cases, comm=request.param, timeout=240, trace=path)
    assert result["ok"]
    with open(path) as f, open(twin(path)) as g:
        return request.param, json.load(f), json.load(g)


@pytest.mark.multiprocess
def test_one_process_per_rank_named_as_tpsim_names_its_devices(traced):
    _, ref, sim = traced
    names = [
        {e["pid"]: e["args"]["name"] for e in d["traceEvents"] if e["name"] == "process_name"}
        for d in (ref, sim)
    ]
    assert names[0] == names[1] == {0: "dev0", 1: "dev1"}
    assert {e["pid"] for e in ref["traceEvents"] if e["ph"] == "X"} == {0, 1}
    assert min(e["ts"] for e in ref["traceEvents"] if e["ph"] == "X") == 0  # merged onto one clock


@pytest.mark.multiprocess
def test_collectives_have_tpsim_names_categories_and_bytes_on_every_rank(traced):
    _, ref, sim = traced
    for rank in range(WS):
        mine, theirs = spans(ref, rank, trace_events.COLLECTIVES), spans(sim, rank, trace_events.COLLECTIVES)
        assert len(mine) > 7  # the MLP: 2, and 5 with SP; then the GPT's
        keys = ("bytes", "label", "direction")
        assert essentials(mine, *keys) == essentials(theirs, *keys)
        assert all(e["dur"] >= 0 and set(e["args"]) == {"bytes", "label", "direction"} for e in mine)


@pytest.mark.multiprocess
def test_schedule_mode_sends_are_tpsims_transfers_native_mode_has_none(traced):
    mode, ref, sim = traced
    for rank in range(WS):
        mine, theirs = spans(ref, rank, trace_events.SEND), spans(sim, rank, trace_events.SEND)
        if mode == "native":  # gloo's own collectives: their sends are not seen
            assert not mine and theirs
        else:
            assert mine and sorted(essentials(mine, "bytes")) == sorted(essentials(theirs, "bytes"))


def test_merge_puts_every_rank_on_one_clock_from_zero():
    parts = [
        [*trace_events.tracks([0]), trace_events.collective("all_reduce", "ring", 0, 10.0, 10.5, 64)],
        [trace_events.collective("all_reduce", "ring", 1, 10.25, 10.5, 64)],
    ]
    doc = trace_events.merge(parts)
    x = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [(e["pid"], e["ts"], e["dur"]) for e in x] == [(0, 0.0, 0.5e6), (1, 0.25e6, 0.25e6)]
    assert len(doc["traceEvents"]) == 1 + len(trace_events.THREADS) + 2


def test_each_rank_writes_its_part_and_one_process_merges_them(tmp_path):
    def call(rank, start, sends=()):
        return CallRecord(
            0,
            "all_reduce",
            (4,),
            "float32",
            (0, 1),
            "schedule",
            "ring",
            16,
            16,
            32,
            "sum",
            None,
            rank,
            start=start,
            end=start + 1e-3,
            direction="forward",
            sends=sends,
            label="mlp.fc2",
        )

    path = str(tmp_path / "run.json")
    write_part(path, [call(0, 5.0, ((0, 1, 8, 5.0, 5.0005), (1, 1, 8, 5.0005, 5.001)))], 0)
    write_part(path, [call(1, 5.0002)], 1)
    doc = merge_parts(path, 2)
    assert json.loads((tmp_path / "run.json").read_text()) == doc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # the parts are gone
    x = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [(e["pid"], e["tid"], e["name"]) for e in x] == [
        (0, 0, "all_reduce (ring)"),
        (0, 1, "all_reduce step 0 -> dev1"),
        (0, 1, "all_reduce step 1 -> dev1"),
        (1, 0, "all_reduce (ring)"),
    ]
    assert x[0]["ts"] == 0 and x[3]["ts"] == pytest.approx(200.0)  # microseconds after rank 0 started
    assert x[0]["args"] == {"bytes": 32, "label": "mlp.fc2", "direction": "forward"}
