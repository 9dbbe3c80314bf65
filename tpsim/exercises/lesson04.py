"""Lesson 4, collectives step by step: exercises on the ring's steps and bytes, and on the alpha-beta model.

Every expected value is measured by running the collectives on virtual devices (shape-only where the
buffers are large) and reading the trace.
"""

from __future__ import annotations

import tpsim
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.report import fmt_bytes, fmt_time

ALGORITHMS = tpsim.ALGORITHMS["all_reduce"]


def all_reduce_record(p: int, nbytes: int, algorithm: str, topology=None):
    """Run a shape-only float32 all-reduce of `nbytes` on p devices; return its trace record and the mesh."""
    mesh = tpsim.Mesh(p, topology=topology(p) if topology else None)
    tpsim.all_reduce([tpsim.meta(nbytes // 4, "float32")] * p, mesh, algorithm=algorithm)
    return mesh.trace.collectives[-1], mesh


def _ring_steps() -> Measured:
    c, _ = all_reduce_record(6, 6 * 1024, "ring")
    why = (f"The ring all-reduce on 6 devices ran {c.num_steps} steps: {c.num_steps // 2} of reduce-scatter, "
           f"then {c.num_steps // 2} of all-gather.")
    return Measured(c.num_steps, why, ((5, "p - 1: the reduce-scatter half alone"),
                                       (6, "p: one step per device, but a device never sends to itself")))


ring_steps = Exercise("4.1", "How many steps does a ring all-reduce take on 6 devices?", _ring_steps, hint=(
    "a ring all-reduce is two phases, reduce-scatter then all-gather; count the steps of each on p "
    "devices"
))


def _ring_bytes() -> Measured:
    c, mesh = all_reduce_record(4, 1 << 20, "ring")
    sent = mesh.trace.per_device()[0]["sent"]
    why = (f"{c.num_steps} steps, each sending one quarter ({fmt_bytes(c.nbytes / 4)}) of the "
           f"{fmt_bytes(c.nbytes)} buffer: {fmt_bytes(sent)} = 2(p-1)/p S per device.")
    traps = ((2 << 20, "2S"), (3 << 20, "(p-1)S: every peer's whole buffer, as direct does"),
             (3 << 18, "(p-1)/p S: the reduce-scatter half alone"))
    trace = f"ring all-reduce of {fmt_bytes(c.nbytes)} on 4 devices: {c.num_steps} steps\n" + "\n".join(
        f"device {d['device']}: sent {fmt_bytes(d['sent'])}" for d in mesh.trace.per_device())
    return Measured(sent, why, traps, trace=trace)


ring_bytes = Prediction(
    "4.2",
    "Predict, then run: "
    "A 1 MiB float32 buffer is all-reduced with a ring on 4 devices. How many bytes does each device send?",
    _ring_bytes,
    unit="bytes",
    hint='each ring step sends one chunk of S/p; count the steps of both phases',
)


def _fastest(p: int, nbytes: int) -> Measured:
    times = {a: all_reduce_record(p, nbytes, a, tpsim.presets.nvlink_node)[0].time for a in ALGORITHMS}
    best = min(times, key=lambda a: times[a])
    listing = ", ".join(f"{a} {fmt_time(t)}" for a, t in sorted(times.items(), key=lambda kv: kv[1]))
    return Measured(best, f"The simulator ran all four on {p} x H100 (NVLink): {listing}.")


fastest_large = Exercise(
    "4.3",
    "On 6 H100s of an NVLink switch (alpha 2 us, 450 GB/s per direction; 6 is not a power of two), "
    "which all-reduce algorithm is fastest for a 256 MiB buffer?",
    lambda: _fastest(6, 256 << 20),
    kind="choice",
    choices=ALGORITHMS,
    hint=(
        "for a large buffer the latencies hardly count: compare the bytes each algorithm pushes through "
        "one GPU's port"
    ),
)


CROSSOVER_P = 6  # 4.4 asks about the node of 4.3: 6 H100s


def crossover_size(p: int) -> int:
    """Bisect on the buffer size (float32, a multiple of p elements) until halving_doubling beats direct."""

    def hd_wins(n: int) -> bool:
        return (all_reduce_record(p, 4 * p * n, "halving_doubling", tpsim.presets.nvlink_node)[0].time
                < all_reduce_record(p, 4 * p * n, "direct", tpsim.presets.nvlink_node)[0].time)

    lo, hi = 1, 1 << 20  # in units of 4p B; direct wins at lo, halving_doubling at hi
    assert not hd_wins(lo) and hd_wins(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if hd_wins(mid) else (mid, hi)
    return 4 * p * hi


def _crossover() -> Measured:
    p = CROSSOVER_P
    size = crossover_size(p)
    why = (f"Measured on {p} devices: below {fmt_bytes(size)} direct's one step (alpha + (p-1) S/bw through "
           f"the sender's port) is cheaper; above it halving-doubling's extra alphas (2 log2 of the largest "
           f"power of two <= p, plus a fold-in and a fold-out step when p is not a power of two) are "
           f"outweighed by its smaller bandwidth term.")
    return Measured(size, why, ((crossover_size(8), "the crossover on 8 devices, not on the 6 asked about"),))


crossover = Exercise(
    "4.4",
    f"Same node ({CROSSOVER_P} H100s): above what buffer size does halving_doubling become faster than "
    "direct? (within 5%)",
    _crossover,
    unit="bytes",
    rel_tol=0.05,
    hint="write both times as alpha-beta sums: direct is one step that pushes (p-1) buffers through one "
    "port, halving-doubling has more steps but sends less; set them equal and solve for S",
)

EXERCISES = [ring_steps, ring_bytes, fastest_large, crossover]
