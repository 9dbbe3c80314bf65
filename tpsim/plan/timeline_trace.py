"""The stream timeline (timeline.py) as a Chrome / Perfetto trace: one process per pipeline stage, one
thread per stream (compute, tp, pp, dp), so the overlap of communication and compute is seen.

Built with tpsim/trace_events.py's builders: a collective's span carries its size S in args["bytes"],
a compute op its category (compute, recompute, optimizer) and the layer and microbatch it belongs to.
"""

from __future__ import annotations

from tpsim import trace_events as te
from tpsim.plan.streams import Streams
from tpsim.plan.timeline import STREAMS

THREADS = tuple(enumerate(STREAMS))
TID = {name: tid for tid, name in THREADS}


def events(s: Streams, devices: int) -> list[dict]:
    """Metadata and one span per op with a duration (free sends, dp = 1 and the like leave none)."""
    out = te.tracks(range(devices), prefix="stage ", threads=THREADS)
    for o in s.ops:
        if o.end <= o.start:
            continue
        args = {"category": o.cat, **o.args}
        if o.nbytes:
            args["bytes"] = int(o.nbytes)
        cat = "compute" if o.stream == "compute" else "send" if o.cat == "pp" else "collective"
        out.append(te.span(o.name, cat, o.device, TID[o.stream], o.start, o.end, args))
    return out


def write(s: Streams, devices: int, path: str) -> None:
    te.write(te.document(events(s, devices)), path)
