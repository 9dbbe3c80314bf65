"""The communication table of a module: every collective it issued, forward and backward.

PyTorch's CommDebugMode counts collectives; this table also gives their bytes
and predicted time, read from the trace.  For one transformer layer without
sequence parallelism it shows 2 all-reduces forward and 2 backward of b*s*h
elements: with a ring that is 8 b s h (t-1)/t elements sent per device.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tpsim.report import fmt_bytes, fmt_time, table


@dataclass
class CommRow:
    direction: str  # "forward" / "backward" / "" (outside any module)
    module: str
    collective: str
    count: int
    nbytes: int  # S per call, summed over calls (nccl-tests' size)
    sent_per_device: float  # bytes one device sent over links, summed over calls (max over devices)
    time: float  # summed predicted time of the calls


def comm_table(module_or_mesh, prefix: str | None = None, since: int = 0) -> list[CommRow]:
    """Rows (direction, module, collective) for every collective whose label starts with `prefix`.

    Pass a Module (its name is the prefix) or a Mesh; `since` skips earlier collectives.
    """
    mesh = getattr(module_or_mesh, "mesh", module_or_mesh)
    if prefix is None and hasattr(module_or_mesh, "name") and module_or_mesh is not mesh:
        prefix = module_or_mesh.name
    trace = mesh.trace
    sent = _sent_by_collective(trace)
    rows: dict[tuple, CommRow] = {}
    for c in trace.collectives[since:]:
        label = c.label or ""
        if prefix and not (label == prefix or label.startswith(prefix + ".")):
            continue
        key = (c.direction or "", label, c.collective)
        row = rows.setdefault(key, CommRow(key[0], label, c.collective, 0, 0, 0.0, 0.0))
        row.count += 1
        row.nbytes += c.nbytes
        row.sent_per_device += sent.get(c.index, 0.0)
        row.time += c.time
    order = {"forward": 0, "backward": 1, "": 2}
    return sorted(rows.values(), key=lambda r: (order.get(r.direction, 3), r.module, r.collective))


def totals(rows: list[CommRow]) -> dict[str, dict[str, float]]:
    """Per direction: number of collectives, bytes sent per device, predicted time."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0, "sent_per_device": 0.0, "time": 0.0})
    for r in rows:
        d = out[r.direction]
        d["count"] += r.count
        d["sent_per_device"] += r.sent_per_device
        d["time"] += r.time
    return dict(out)


def format_comm_table(rows: list[CommRow], title: str = "Communication") -> str:
    body = [(r.direction, r.module, r.collective, r.count, fmt_bytes(r.nbytes), fmt_bytes(r.sent_per_device),
             fmt_time(r.time)) for r in rows]
    text = table(body, ("pass", "module", "collective", "calls", "size", "sent/device", "time"), title)
    tot = totals(rows)
    lines = [
        f"{d or 'other'}: {int(v['count'])} collectives, {fmt_bytes(v['sent_per_device'])} sent per device, "
        f"{fmt_time(v['time'])}"
        for d, v in tot.items()
    ]
    return text + "\n" + "\n".join(lines)


def _sent_by_collective(trace) -> dict[int, float]:
    """Max over devices of the bytes one device sent, for each collective."""
    import numpy as np

    t = trace.transfers()
    if not len(t["src"]):
        return {}
    key = t["collective"] * trace.mesh.size + t["src"]
    per = np.bincount(key, weights=t["nbytes"])
    per = per.reshape(-1, trace.mesh.size) if len(per) % trace.mesh.size == 0 else np.pad(
        per, (0, -len(per) % trace.mesh.size)).reshape(-1, trace.mesh.size)
    return {i: float(v) for i, v in enumerate(per.max(axis=1)) if v}
