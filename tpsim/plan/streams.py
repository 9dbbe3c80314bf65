"""Streams: each device runs one compute stream and named communication streams, as CUDA streams do.

An op is issued onto one stream of one device.  It starts when that stream has finished the op issued
before it (a stream runs its ops in issue order, one at a time) and when every op it depends on has
ended; it then runs for its duration.  Streams of one device run side by side: a collective on the
"tp" stream overlaps a GEMM on "compute" unless some op waits for it.  Links are not shared between
streams here: a collective takes the time the cluster gives it whatever else runs.

    Streams.issue(device, stream, name, seconds, after=...)   schedule one op, return it
    exposed(intervals, by)                                     seconds of `intervals` outside `by`

The iteration's layout onto these streams is tpsim/plan/timeline.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tpsim.errors import PipelineError

COMPUTE = "compute"


@dataclass(slots=True)  # not frozen: a layout makes ~10^6 ops, and frozen __init__ costs more
class Op:
    device: int
    stream: str
    name: str
    start: float
    end: float
    cat: str = "compute"  # "compute", "recompute", "tp", "dp", "pp", "optimizer"
    nbytes: float = 0.0  # the collective's size S (nccl-tests' convention); 0 for compute
    args: dict = field(default_factory=dict, compare=False)


class Streams:
    """Ops issued onto (device, stream) queues; each op's start is fixed when it is issued."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._free: dict[tuple[int, str], float] = {}

    def issue(
        self,
        device: int,
        stream: str,
        name: str,
        seconds: float,
        after: Iterable[Op | None] = (),
        *,
        at: float = 0.0,
        cat: str | None = None,
        nbytes: float = 0.0,
        **args,
    ) -> Op:
        """Run `name` for `seconds` on `stream` of `device` once the stream is free, every op in `after`
        has ended (None entries are skipped) and the clock has reached `at`."""
        if seconds < 0:
            raise PipelineError(f"op {name!r} on device {device}, stream {stream!r}: {seconds} s < 0")
        key = (device, stream)
        start = self._free.get(key, 0.0)
        if at > start:
            start = at
        for o in after:
            if o is not None and o.end > start:
                start = o.end
        op = Op(device, stream, name, start, start + seconds, cat or stream, nbytes, args)
        self._free[key] = op.end
        self.ops.append(op)
        return op

    def free(self, device: int, stream: str) -> float:
        """When the last op issued on (device, stream) ends (0 if none)."""
        return self._free.get((device, stream), 0.0)

    def end(self, device: int | None = None) -> float:
        """The latest end of any op (of `device`, if given)."""
        return max((o.end for o in self.ops if device is None or o.device == device), default=0.0)

    def on(self, device: int, *cats: str) -> list[Op]:
        """The ops of `device` whose category is one of `cats` (all of them if none given)."""
        return [o for o in self.ops if o.device == device and (not cats or o.cat in cats)]


def busy(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of [start, end) intervals, as sorted disjoint intervals."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def exposed(intervals: Iterable[tuple[float, float]], by: Iterable[tuple[float, float]]) -> float:
    """Seconds of the union of `intervals` that lie outside the union of `by`: the exposed time."""
    mine, cover = busy(intervals), busy(by)
    total, i = 0.0, 0
    for s, e in mine:
        cur = s
        while i < len(cover) and cover[i][1] <= cur:
            i += 1
        j = i
        while j < len(cover) and cover[j][0] < e:
            cs, ce = cover[j]
            if cs > cur:
                total += cs - cur
            cur = max(cur, ce)
            if cur >= e:
                break
            j += 1
        if cur < e:
            total += e - cur
    return total
