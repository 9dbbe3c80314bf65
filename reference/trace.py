"""The reference's Chrome / Perfetto trace: the events of tpsim's trace, built from ranks' CallRecords.

    write_part(path, comm.record, rank)        # on each rank: its part, wall-clock seconds
    merge_parts(path, world_size)              # then in one process: one file, one process per rank
    write_traces(path, per_rank_records, sims) # reference.check --trace: path and its tpsim twin

Each collective is a span on its rank's "collectives" thread, named and with args as tpsim names them
("all_reduce (ring)"; args: bytes = S, label = the module that issued it, direction), so a reference
trace and tpsim's load side by side in Perfetto.
Schedule mode also knows every isend: one span per send on the "send" thread, as tpsim's transfers.
"""

from __future__ import annotations

import json
from pathlib import Path

from tpsim import trace_events


def rank_events(record) -> list[dict]:
    """One rank's part of the trace: a span per collective (and per isend in schedule mode)."""
    events = []
    for r in record:
        events.append(
            trace_events.collective(r.op, r.algorithm, r.rank, r.start, r.end, r.nbytes, r.label, r.direction)
        )
        for step, dst, nbytes, start, end in r.sends:
            events.append(trace_events.send(r.op, step, r.rank, dst, start, end, nbytes, None))
    return events


def reference_document(records: list) -> dict:
    """One document from every rank's record (records[r]: rank r's CallRecords, in call order)."""
    return trace_events.merge([trace_events.tracks(range(len(records)))] + [rank_events(r) for r in records])


def part_path(path: str, rank: int) -> str:
    return f"{path}.rank{rank}"


def write_part(path: str, record, rank: int) -> str:
    """This rank's events, to merge later (any launcher: spawn, torchrun, one node or several)."""
    events = trace_events.tracks([rank]) + rank_events(record)
    with open(part_path(path, rank), "w") as f:
        json.dump(events, f)
    return part_path(path, rank)


def merge_parts(path: str, world_size: int) -> dict:
    """Every rank's part (`write_part`) as one trace at `path`; the parts are removed."""
    parts = []
    for rank in range(world_size):
        part = Path(part_path(path, rank))
        parts.append(json.loads(part.read_text()))
        part.unlink()
    doc = trace_events.merge(parts)
    trace_events.write(doc, path)
    return doc


def tpsim_document(traces: list) -> dict:
    """tpsim's traces of several runs (one mesh each, every clock from 0) laid end to end."""
    events, offset = [], 0.0
    for i, trace in enumerate(traces):
        doc = trace.to_chrome_trace()
        spans = [e for e in doc["traceEvents"] if e["ph"] == "X"]
        events += [e for e in doc["traceEvents"] if e["ph"] == "M"] if i == 0 else []
        events += [{**e, "ts": e["ts"] + offset} for e in spans]
        offset = max((e["ts"] + e["dur"] for e in events if e["ph"] == "X"), default=offset)
    return trace_events.document(events)


def twin(path: str) -> str:
    """Where tpsim's trace goes next to the reference's: run.json -> run.tpsim.json."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}.tpsim{p.suffix or '.json'}"))


def write_traces(path: str, records: list, traces: list) -> tuple[str, str]:
    """The reference's trace at `path`, tpsim's of the same runs at `twin(path)`."""
    trace_events.write(reference_document(records), path)
    trace_events.write(tpsim_document(traces), twin(path))
    return path, twin(path)
