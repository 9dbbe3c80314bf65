"""Lesson 10 exercises: summation order and bytes, the two things the reference must match.

    10.1 sum_order        what tpsim's ring all-reduce of 1e8, 1 and -1e8 (float32) gives
    10.2 schedule_bytes   bytes each rank sends in a ring all-reduce, in tpsim and so in the reference
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.exercises.core import Exercise, Measured

VALUES = (1e8, 1.0, -1e8)  # one float32 per device
N, RANKS = 1000, 2  # 10.2: float32 values, ranks


def _sum_order() -> Measured:
    mesh = tpsim.Mesh(len(VALUES))
    out = tpsim.all_reduce([np.array([v], np.float32) for v in VALUES], mesh, algorithm="ring")
    values = {float(o[0]) for o in out}
    (value,) = values  # every rank holds the same bits
    exact = sum(VALUES)
    if value == exact:
        how = "the two large values cancelled before the 1 was added, so nothing was lost"
    else:
        how = ("1e8 + 1 rounds back to 1e8 in float32 (24 bits of mantissa: the spacing near 1e8 is 8), so "
               "the 1 was added to a large value and lost before -1e8 cancelled it")
    return Measured(
        value,
        f"The ring schedule adds the three values in a fixed order; {how}: every rank gets {value:g}, "
        f"where exact arithmetic gives {exact:g}.",
        traps=((exact, "the exact sum; float32 cannot hold 1e8 + 1"),),
    )


def _schedule_bytes() -> Measured:
    mesh = tpsim.Mesh(RANKS)
    tpsim.all_reduce([np.zeros(N, np.float32)] * RANKS, mesh, algorithm="ring")
    (sent,) = {d["sent"] for d in mesh.trace.per_device()}
    return Measured(
        sent,
        f"A ring all-reduce sends 2 (p-1)/p of the buffer per rank: 2 x 1/2 x {N} x 4 B = {sent} B.  The "
        "reference's schedule mode runs the very same schedule, so its byte counters show the same.",
        traps=((2 * N * 4, "2 S: for p = 2 the ring's 2 (p-1)/p is 1"), (N, "values, not bytes")),
    )


sum_order = Exercise(
    "10.1",
    "Three devices hold one float32 each: 1e8, 1.0 and -1e8.  What does tpsim's ring all-reduce (sum) "
    "give on every device?",
    measure=_sum_order,
)
schedule_bytes = Exercise(
    "10.2",
    f"The reference runs tpsim's ring schedule (comm='schedule') for an all-reduce of {N} float32 values "
    f"on {RANKS} ranks.  How many bytes does each rank send?",
    measure=_schedule_bytes,
    unit="bytes",
)
