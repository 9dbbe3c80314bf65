"""Lesson 3, row-parallel linear: exercises on partial sums, the all-reduce's bytes and time, and its bits.

Every expected value is measured: the layer and the collectives run on virtual devices.
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import RowParallelLinear
from tpsim.placement import Shard
from tpsim.report import fmt_bytes, fmt_time

ALPHA, BANDWIDTH = tpsim.presets.NVLINK_ALPHA, tpsim.presets.NVLINK["a100"][0]  # the preset's own figures


def small_layer():
    """The lesson's example: x (4, 8) split by features, RowParallelLinear(8, 8) on 4 devices, exact data."""
    mesh = tpsim.Mesh(4)
    layer = RowParallelLinear(mesh, 8, 8, bias=False, init="exact")
    x = tpsim.distribute(np.arange(32, dtype=np.float32).reshape(4, 8) % 5, mesh, [Shard(1)])
    return mesh, layer, x


def _partial_value() -> Measured:
    _, layer, x = small_layer()
    xs, ws = x.local(2), layer.params["weight"].local(2)  # (4, 2) and (8, 2): device 2's features 4..5
    partial = float((xs @ ws.T)[1, 3])
    y = layer(x)
    why = (
        f"Device 2 holds x[1, 4:6] = {xs[1].tolist()} and W[3, 4:6] = {ws[3].tolist()}, so its term is "
        f"{xs[1, 0]:g} * {ws[3, 0]:g} + {xs[1, 1]:g} * {ws[3, 1]:g} = {partial:g}; the all-reduce adds the 4 "
        f"devices' terms into y[1, 3] = {y.local(2)[1, 3]:g}."
    )
    return Measured(partial, why, ((float(y.local(2)[1, 3]), "y[1, 3] after the all-reduce: the sum of all "
                                                               "4 devices' terms"),))


partial_value = Exercise(
    "3.1",
    "In the lesson's example (x = arange(32).reshape(4, 8) % 5 split by columns, W from init='exact', "
    "RowParallelLinear(8, 8, bias=False) on 4 devices), what is device 2's partial sum for y[1, 3], "
    "before the all-reduce?",
    _partial_value,
    hint=(
        "device 2 holds only columns 4 and 5 of x and of W: its term is the dot product over those two "
        "columns alone"
    ),
)


def _allreduce_bytes() -> Measured:
    mesh = tpsim.Mesh(3)
    layer = RowParallelLinear(mesh, 6, 6, bias=False, init="exact")
    layer(tpsim.distribute(np.ones((2, 6), np.float32), mesh, [Shard(1)]))
    c = mesh.trace.collectives[-1]
    sent = mesh.trace.per_device()[0]["sent"]
    why = (
        f"y is {fmt_bytes(c.nbytes)}. The {c.algorithm} all-reduce ran {c.num_steps} steps "
        f"({c.num_steps // 2} of reduce-scatter, {c.num_steps // 2} of all-gather), each device sending one "
        f"{c.nbytes // 3} B third per step: {sent} B = 2(p-1)/p of y."
    )
    traps = ((c.nbytes, "S, all of y once"), (2 * c.nbytes, "2S: the whole y out and back"),
             (c.nbytes * 2 // 3, "(p-1)/p S: the reduce-scatter half alone"))
    trace = f"{c.collective} ({c.algorithm}) of {c.nbytes} B, {c.num_steps} steps\n" + "\n".join(
        f"device {d['device']}: sent {d['sent']:.0f} B, received {d['received']:.0f} B"
        for d in mesh.trace.per_device())
    return Measured(sent, why, traps, trace=trace)


allreduce_bytes = Prediction(
    "3.2",
    "Predict, then run: "
    "A RowParallelLinear(in=6, out=6) runs on 3 devices with x of shape (2, 6) float32: the partial sums "
    "y (2, 6) are all-reduced with a ring. How many bytes does each device send?",
    _allreduce_bytes,
    unit="bytes",
    hint=(
        "a ring all-reduce is a reduce-scatter then an all-gather, and each half sends (t-1)/t of the "
        "buffer"
    ),
)


def _allreduce_time() -> Measured:
    mesh = tpsim.Mesh(8, topology=tpsim.presets.nvlink_node(8, "a100"), device="a100")
    layer = RowParallelLinear(mesh, 4 * 12288, 12288, init=None, dtype="bfloat16")
    x = tpsim.distribute(tpsim.meta((2048, 1, 4 * 12288), "bfloat16"), mesh, [Shard(2)])
    layer(x)
    c = mesh.trace.collectives[-1]
    why = (
        f"y is 2048 x 1 x 12288 bfloat16 = {fmt_bytes(c.nbytes)}; the ring all-reduce takes {c.num_steps} "
        f"steps of alpha = {fmt_time(ALPHA)} plus one {fmt_bytes(c.nbytes / 8)} piece at {BANDWIDTH / 1e9:g} "
        f"GB/s: {fmt_time(c.time)}."
    )
    half = c.time / 2
    return Measured(c.time, why, ((half, "the reduce-scatter (or the all-gather) half alone"),
                                  (c.nbytes / BANDWIDTH, "S / bandwidth, with no alpha and no 2(p-1)/p")))


allreduce_time = Exercise(
    "3.3",
    "GPT-3's second MLP layer, RowParallelLinear(49152, 12288) in bfloat16 on an 8 x A100 NVLink node "
    "(alpha 2 us, 300 GB/s per direction), with 2048 tokens. How long does its ring all-reduce take? "
    "(within 2%)",
    _allreduce_time,
    unit="seconds",
    rel_tol=0.02,
    hint="count the ring's steps for an all-reduce; each costs one latency plus S/t bytes over the link",
)


def _replicas_identical() -> Measured:
    rng = np.random.default_rng(0)
    partials = [rng.standard_normal(8).astype(np.float32) for _ in range(4)]
    out = tpsim.all_reduce(partials, tpsim.Mesh(4), algorithm="ring")
    patterns = {o.tobytes() for o in out}
    why = (
        f"The 4 devices hold {len(patterns)} distinct bit pattern(s): in the reduce-scatter half each chunk "
        "is summed once, in one order, on one device; the all-gather half only copies that chunk everywhere."
    )
    return Measured(len(patterns), why, (
        (4, "one per device, as if each device summed the terms in its own order"),
        (2, "a split between two orders; but no chunk is ever summed twice"),
    ))


replicas_identical = Exercise(
    "3.4",
    "Random float32 partial sums (seed 0, 8 values on each of 4 devices) are all-reduced with tpsim's ring. "
    "Float addition is not associative. How many distinct bit patterns do the 4 devices' results show?",
    _replicas_identical,
    hint="in the ring, each chunk is summed once, on one device, and afterwards only copied",
)


EXERCISES = [partial_value, allreduce_bytes, allreduce_time, replicas_identical]
