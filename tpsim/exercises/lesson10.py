"""Lesson 10 exercises: summation order and bytes, the two things the reference must match.

    10.1 sum_order        what tpsim's ring all-reduce of 1e8, 1 and -1e8 (float32) gives
    10.2 schedule_bytes   bytes each rank sends in a ring all-reduce, in tpsim and so in the reference
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.collectives import ring
from tpsim.collectives.schedule import REDUCE
from tpsim.exercises.core import Exercise, Measured, Prediction

VALUES = (1e8, 1.0, -1e8)  # one float32 per device
N, RANKS = 1000, 2  # 10.2: float32 values, ranks


def reduction_chain(values=VALUES, chunk: int = 0) -> list[tuple[int, int, float]]:
    """The reduce steps of the ring schedule for `chunk`, replayed in float32: (src, dst, partial sum).

    Read off tpsim's own schedule object, so the order in the explanation is the order the engine adds in
    (within a step, values combine in ascending rank order, the receiver's at its own rank).
    """
    sched = ring.all_reduce(len(values))
    held = [np.float32(v) for v in values]
    chain = []
    for step in sched.steps:
        for t in step:
            if t.op == REDUCE and chunk in t.chunks:
                a, b = (held[t.src], held[t.dst]) if t.src < t.dst else (held[t.dst], held[t.src])
                held[t.dst] = np.float32(a + b)
                chain.append((t.src, t.dst, float(held[t.dst])))
    return chain


def _sum_order() -> Measured:
    mesh = tpsim.Mesh(len(VALUES))
    out = tpsim.all_reduce([np.array([v], np.float32) for v in VALUES], mesh, algorithm="ring")
    values = {float(o[0]) for o in out}
    (value,) = values  # every rank holds the same bits
    exact = sum(VALUES)
    chain = reduction_chain()
    steps = "; then ".join(
        f"rank {s} sends its partial sum to rank {d}, which adds its own {VALUES[d]:g}: {v:g}"
        for s, d, v in chain
    )
    first = chain[0]
    lost = "the large values cancelled first, so nothing was lost"
    if value != exact:
        lost = ("float32 has 24 bits of mantissa, so near 1e8 the spacing is 8 and "
                f"{VALUES[first[0]]:g} + {VALUES[first[1]]:g} rounds to {first[2]:g}: "
                "the 1 is lost before the large values cancel")
    return Measured(
        value,
        f"The ring schedule fixes the order: {steps}.  {lost[:1].upper() + lost[1:]}.  Every rank then "
        f"gets {value:g} by the all-gather, where exact arithmetic gives {exact:g}.",
        trace="\n".join([f"reduce step {i + 1}: rank {s} -> rank {d}, partial sum {v:g}"
                         for i, (s, d, v) in enumerate(chain)]
                        + [f"rank {r}: {float(o[0]):g}" for r, o in enumerate(out)]),
        traps=((exact, "the exact sum; it needs the two large values to cancel before the 1 is added"),
               (-1e8, "the partial sum after the first reduce step; rank 0's 1e8 has still to be added")),
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


sum_order = Prediction(
    "10.1",
    "Predict, then run: "
    "Three devices hold one float32 each: 1e8, 1.0 and -1e8.  What does tpsim's ring all-reduce (sum) "
    "give on every device?",
    measure=_sum_order,
    hint="the ring adds one rank's value at a time, in the order its schedule sends them; follow the chunk "
    "that holds the value from rank to rank, rounding to float32 after every addition",
)
schedule_bytes = Exercise(
    "10.2",
    f"The reference runs tpsim's ring schedule (comm='schedule') for an all-reduce of {N} float32 values "
    f"on {RANKS} ranks.  How many bytes does each rank send?",
    measure=_schedule_bytes,
    unit="bytes",
    hint="the reference runs tpsim's very schedule, so count what a ring all-reduce sends per rank",
)
