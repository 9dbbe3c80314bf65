"""Lesson 2, column-parallel linear: exercises on the output's pieces and on the all-gather that joins them.

Every expected value is measured: the layer runs on virtual devices and the shards and the trace are read.
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.collectives.api import stepwise
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import ColumnParallelLinear
from tpsim.report import fmt_bytes, fmt_time

ALPHA, BANDWIDTH = tpsim.presets.NVLINK_ALPHA, tpsim.presets.NVLINK["a100"][0]  # the preset's own figures


def _output_shard_shape() -> Measured:
    mesh = tpsim.Mesh(4)
    layer = ColumnParallelLinear(mesh, 8, 10, bias=False, init="exact")
    x = tpsim.distribute(np.ones((3, 8), np.float32), mesh, [tpsim.Replicate()])
    y = layer(x)
    shape = y.local(3).shape
    pieces = [layer.params["weight"].local(d).shape[0] for d in range(4)]
    why = (
        f"W (10, 8) is cut by the torch.chunk rule into pieces of {pieces} output rows; device 3 multiplies "
        f"the whole x (3, 8) by its piece transposed and gets a {shape} block of y, placement "
        f"{y.placements[0]!r}."
    )
    return Measured(shape, why, (((3, 10), "the whole y, which only exists after an all-gather"),
                                 ((3, 3), "the piece of devices 0-2; torch.chunk leaves the rest to "
                                          "the last"),
                                 ((3, 2), "10 // 4: torch.chunk rounds the piece size up, not down")))


output_shard_shape = Exercise(
    "2.1",
    "x has shape (3, 8) and is replicated; a ColumnParallelLinear(in=8, out=10) is split over 4 devices. "
    "What is the shape of the piece of y that device 3 holds (before any gather)?",
    _output_shard_shape,
    kind="value",
    hint='torch.chunk gives each device ceil(n / t) columns, and the last device what is left over',
)


def _allgather_bytes() -> Measured:
    mesh = tpsim.Mesh(3)
    layer = ColumnParallelLinear(mesh, 8, 12, bias=False, init="exact", gather_output=True)
    layer(tpsim.distribute(np.ones((5, 8), np.float32), mesh, [tpsim.Replicate()]))
    c = mesh.trace.collectives[-1]
    sent = mesh.trace.per_device()[0]["sent"]
    why = (
        f"The {c.algorithm} all-gather of y (5 x 12 float32 = {fmt_bytes(c.nbytes)}) ran {c.num_steps} "
        f"steps; in each, every device passed one {c.nbytes // 3} B piece to its neighbour, so each sent "
        f"{sent} B: (p-1)/p of y."
    )
    return Measured(sent, why, ((c.nbytes, "all of y; a device already holds its own third"),
                                (c.nbytes // 3, "one piece: a single step of the ring"),
                                (mesh.trace.wire_bytes, "what all 3 devices sent together")))


allgather_bytes = Exercise(
    "2.2",
    "x has shape (5, 8) float32; a ColumnParallelLinear(in=8, out=12, gather_output=True) runs on 3 devices, "
    "so y (5, 12) is all-gathered with a ring. How many bytes does each device send?",
    _allgather_bytes,
    unit="bytes",
    hint=(
        "in a ring all-gather a device never sends a piece back to where it came from: count how many of "
        "the t pieces it forwards"
    ),
)


def _allgather_time() -> Measured:
    mesh = tpsim.Mesh(8, topology=tpsim.presets.nvlink_node(8, "a100"), device="a100")
    layer = ColumnParallelLinear(mesh, 12288, 4 * 12288, init=None, dtype="bfloat16", gather_output=True)
    x = tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), mesh, [tpsim.Replicate()])
    layer(x)
    c = mesh.trace.collectives[-1]
    why = (
        f"y is 2048 x 1 x 49152 bfloat16 = {fmt_bytes(c.nbytes)}; the ring all-gather takes {c.num_steps} "
        f"steps, each costing alpha = {fmt_time(ALPHA)} plus one {fmt_bytes(c.nbytes / 8)} piece at "
        f"{BANDWIDTH / 1e9:g} GB/s: "
        f"{fmt_time(c.time)} in all."
    )
    whole = c.nbytes / BANDWIDTH
    return Measured(c.time, why, ((whole, "S / bandwidth: as if all of y crossed one link, with no alpha"),))


allgather_time = Exercise(
    "2.3",
    "GPT-3's first MLP layer as a ColumnParallelLinear(12288, 49152) in bfloat16 on an 8 x A100 NVLink node "
    "(alpha 2 us, 300 GB/s per direction), with x of shape (2048, 1, 12288). If it gathered its output "
    "(gather_output=True), how long would the ring all-gather take? (within 2%)",
    _allgather_time,
    unit="seconds",
    rel_tol=0.02,
    hint=(
        "a ring all-gather is t - 1 steps, and each step costs one latency plus one piece over the link's"
        " bandwidth"
    ),
)

AFTER_STEP = 2  # 2.4: the step after which device 0's chunks are asked for


def _chunks_after_step() -> Measured:
    mesh = tpsim.Mesh(4)
    lines, held = [], None
    for snap in stepwise("all_gather", [np.full(2, d, np.float32) for d in range(4)], mesh, algorithm="ring"):
        holds = {d: tuple(c for c, h in enumerate(hs) if h) for d, hs in snap.holds.items()}
        moves = ", ".join(f"{t.src}->{t.dst} chunk {t.chunks[0]}" for t in snap.transfers)
        lines.append(f"after step {snap.step}: " + "  ".join(f"dev {d} {holds[d]}" for d in holds)
                     + (f"   [{moves}]" if moves else ""))
        if snap.step == AFTER_STEP:
            held = holds[0]
    why = (f"Each step, every device passes the chunk it received last to its right neighbour, so device 0 "
           f"gets chunk 3 from device 3 in step 1 and chunk 2 (via device 3) in step 2: {held}.")
    traps = (((0, 1, 2), "what device 0 would hold if chunks flowed to the left; they come from device 3"),
             ((0, 1, 2, 3), "everything, which takes p - 1 = 3 steps"))
    return Measured(held, why, traps, trace="\n".join(lines))


chunks_after_step = Prediction(
    "2.4",
    "Predict, then run: "
    f"a ring all-gather on 4 devices, device d starting with chunk d.  After step "
    f"{AFTER_STEP}, which chunks does device 0 hold (a sorted tuple, e.g. (0, 1))?",
    _chunks_after_step,
    kind="value",
    hint="in a ring each device sends to device d + 1 and receives from device d - 1; follow chunk 3 and "
    "chunk 2 as they travel",
)

EXERCISES = [output_shard_shape, allgather_bytes, allgather_time, chunks_after_step]
