"""What a simulated collective will cost this machine, estimated before it runs.

A shape-only collective allocates no data, but the engine still walks every transfer of every step
and the trace keeps them: a ring on p devices has about 2p^2 transfers, a direct all-to-all p^2 chunks
whose layout costs p^3.  So `tpsim collective` first runs the same collective on two small meshes
(PROBES devices), fits how time and traced memory grow (t ~ p^e), and refuses a run whose estimate is
past the limits, with the estimate in the message; `--force` runs it anyway.  The closed form needs
no simulation and is quoted instead.  The library itself never refuses a shape-only run.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from dataclasses import dataclass

import tpsim
from tpsim.collectives.algorithms import build
from tpsim.errors import ResourceLimitError
from tpsim.report import fmt_bytes, fmt_time

LIMIT_S = 60.0  # seconds of simulation
LIMIT_BYTES = 4 << 30  # bytes of trace and schedule held at once
FREE_UP_TO = 256  # devices: below this every collective takes well under a second
PROBES = (32, 64)  # devices of the two probe runs


@dataclass(frozen=True)
class Estimate:
    seconds: float
    nbytes: float
    exponent: float  # time grows as p ** exponent

    def text(self) -> str:
        return f"about {fmt_time(self.seconds)} and {fmt_bytes(self.nbytes)}"


def probe(coll: str, algorithm: str, p: int, topology, kw: dict, traced: bool) -> float:
    """Seconds of the collective, shape-only, on p devices; with `traced`, its peak traced bytes."""
    mesh = tpsim.Mesh(p, topology=topology)
    buffers = [tpsim.meta((4 * p,), "float32")] * p
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        getattr(tpsim, coll)(buffers, mesh, algorithm=algorithm, **kw)
        return tracemalloc.get_traced_memory()[1] if traced else time.perf_counter() - start
    finally:
        tracemalloc.stop()


def transfers(coll: str, algorithm: str, p: int, kw: dict) -> int:
    return sum(len(step.src) for step in build(coll, algorithm, p, kw.get("root")).steps)


def estimate(coll: str, algorithm: str, p: int, topology_for, kw: dict) -> Estimate:
    """Time and memory on p devices, grown from two probes as a power of p.

    The exponent is the larger of the measured one and the schedule's (how its transfer count grows):
    at a few dozen devices fixed costs hide part of the growth.
    """
    probe(coll, algorithm, 4, topology_for(4), kw, traced=False)  # imports and caches, not counted
    small, large = PROBES
    ratio = large / small
    least = math.log(transfers(coll, algorithm, large, kw) / transfers(coll, algorithm, small, kw))

    def grow(a: float, b: float) -> tuple[float, float]:
        e = max(least / math.log(ratio), math.log(max(b, 1e-9) / max(a, 1e-9)) / math.log(ratio))
        e = min(3.0, max(1.0, e))
        return b * (p / large) ** e, e

    t1, t2 = (probe(coll, algorithm, q, topology_for(q), kw, traced=False) for q in PROBES)
    m1, m2 = (probe(coll, algorithm, q, topology_for(q), kw, traced=True) for q in PROBES)
    seconds, e = grow(t1, t2)
    nbytes, _ = grow(m1, m2)
    return Estimate(seconds, nbytes, e)


def check(coll: str, algorithm: str, p: int, topology_for, kw: dict, force: bool, closed) -> None:
    """Refuse a run estimated past LIMIT_S or LIMIT_BYTES, unless forced; small meshes always run.

    `closed()` gives the closed-form note the refusal quotes: called only when refusing."""
    if force or p <= FREE_UP_TO:
        return
    est = estimate(coll, algorithm, p, topology_for, kw)
    if est.seconds <= LIMIT_S and est.nbytes <= LIMIT_BYTES:
        return
    raise ResourceLimitError(
        f"--devices {p}: simulating {coll} ({algorithm}) would take {est.text()} "
        f"(grown as p^{est.exponent:.1f} from runs on {PROBES[0]} and {PROBES[1]} devices); "
        f"the limits are {fmt_time(LIMIT_S)} and {fmt_bytes(LIMIT_BYTES)}. "
        f"Pass --force to run it anyway, or fewer devices. {closed()}"
    )
