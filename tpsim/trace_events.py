"""Chrome / Perfetto trace events, in pure Python: what tpsim's trace and the reference both write.

One process (pid) per device or rank, three threads in each: collectives, send, compute.  A
collective is one span per device that took part, named "all_reduce (ring)" with its size S in
args["bytes"]; a send is one span per transfer.  Times are seconds here and microseconds in the file.
tpsim's trace (`Trace.to_chrome_trace`) and the reference (`python -m reference.check --trace`) build
their events with these functions, so their files load side by side in Perfetto.
"""

from __future__ import annotations

import json

THREADS = ((0, "collectives"), (1, "send"), (2, "compute"))
COLLECTIVES, SEND, COMPUTE = (tid for tid, _ in THREADS)


def tracks(devices, prefix: str = "dev", threads=THREADS) -> list[dict]:
    """Metadata events: a process per device ("dev0", ...), its threads ((tid, name), ...) named."""
    events = []
    for d in devices:
        events.append({"ph": "M", "name": "process_name", "pid": d, "args": {"name": f"{prefix}{d}"}})
        for tid, name in threads:
            events.append({"ph": "M", "name": "thread_name", "pid": d, "tid": tid, "args": {"name": name}})
    return events


def span(name: str, cat: str, pid: int, tid: int, start: float, end: float, args: dict) -> dict:
    """A complete ("X") event; start and end in seconds."""
    return {
        "ph": "X",
        "name": name,
        "cat": cat,
        "pid": pid,
        "tid": tid,
        "ts": start * 1e6,
        "dur": (end - start) * 1e6,
        "args": args,
    }


def collective(
    kind: str,
    algorithm: str,
    device: int,
    start: float,
    end: float,
    nbytes: int,
    label: str | None = None,
    direction: str | None = None,
) -> dict:
    """One device's span of a collective; nbytes is S, as nccl-tests reports it."""
    args = {"bytes": int(nbytes), "label": label, "direction": direction}
    return span(f"{kind} ({algorithm})", "collective", device, COLLECTIVES, start, end, args)


def send(
    kind: str, step: int, src: int, dst: int, start: float, end: float, nbytes: int, link: str | None
) -> dict:
    """One transfer of a collective's step, on the sender's track."""
    args = {"bytes": int(nbytes), "link": link}
    return span(f"{kind} step {step} -> dev{dst}", "send", src, SEND, start, end, args)


def compute(
    name: str,
    device: int,
    start: float,
    end: float,
    flops: float,
    nbytes: float,
    label: str | None = None,
    priced: dict | None = None,
) -> dict:
    """A local op; `priced` (the simulator's) says how its time was modelled: mode, and a GEMM's shape."""
    args = {"flops": flops, "bytes": nbytes, "label": label, **(priced or {})}
    return span(name, "compute", device, COMPUTE, start, end, args)


def document(events: list[dict]) -> dict:
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def merge(parts: list[list[dict]]) -> dict:
    """One document from every rank's events, the clock moved so that the earliest span starts at 0."""
    events = [e for part in parts for e in part]
    starts = [e["ts"] for e in events if e["ph"] == "X"]
    origin = min(starts) if starts else 0.0
    return document([{**e, "ts": e["ts"] - origin} if e["ph"] == "X" else e for e in events])


def write(doc: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)
