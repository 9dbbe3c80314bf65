"""Lesson 5, the Megatron MLP and attention: exercises on its collectives, forward and backward.

Every expected value is measured: the layers run forward and backward on virtual devices (shape-only
at GPT-3 size) and the communication table is read from the trace.
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import ParallelMLP, TransformerBlock, comm_table, format_comm_table, regions
from tpsim.nn.comm_table import totals
from tpsim.placement import Partial, Replicate
from tpsim.report import fmt_bytes, fmt_time


def _mlp_allreduces() -> Measured:
    mesh = tpsim.Mesh(4)
    mlp = ParallelMLP(mesh, 8, 32, init="exact")
    x = tpsim.distribute(np.ones((4, 1, 8), np.float32), mesh, [Replicate()])
    y = mlp(x)
    mlp.backprop(tpsim.distribute(np.ones(y.shape, np.float32), mesh, [Replicate()]))
    rows = [r for r in comm_table(mlp) if r.collective == "all_reduce"]
    count = sum(r.count for r in rows)
    where = "; ".join(f"{r.count} in {r.direction} from {r.module}" for r in rows)
    others = sum(r.count for r in comm_table(mlp)) - count
    why = f"The communication table lists {count} all-reduces ({where}) and {others} other collectives."
    trace = format_comm_table(comm_table(mlp), "ParallelMLP on 4 devices, forward and backward")
    return Measured(count, why, ((4, "one per linear per pass; fc1's forward and fc2's backward need none"),
                                 (1, "the forward all-reduce alone; the backward has one too")), trace=trace)


mlp_allreduces = Prediction(
    "5.1",
    "Predict, then run: "
    "A ParallelMLP (column-parallel fc1, GeLU, row-parallel fc2) on 4 devices runs one forward and one "
    "backward pass. How many all-reduces does it issue in total?",
    _mlp_allreduces,
    hint=(
        "count the collectives in each of the two regions, f and g, forward and backward: one of each "
        "pair is the identity"
    ),
)


def _backward_region() -> Measured:
    mesh = tpsim.Mesh(4)
    mlp = ParallelMLP(mesh, 8, 32, init="exact")
    x = tpsim.distribute(np.ones((4, 1, 8), np.float32), mesh, [Replicate()])
    y = mlp(x)
    mlp.backprop(tpsim.distribute(np.ones(y.shape, np.float32), mesh, [Replicate()]))
    (row,) = [r for r in comm_table(mlp) if r.direction == "backward"]
    # which region's backward moves bytes: call both on the gradient each one receives
    probe = tpsim.Mesh(4)
    before = len(probe.trace.collectives)
    regions.reduce_from_backward(tpsim.distribute(np.ones(4, np.float32), probe, [Replicate()]), 0)
    g_collectives = len(probe.trace.collectives) - before
    regions.copy_to_backward(tpsim.distribute(np.ones(4, np.float32), probe, [Partial()]), 0)
    f_collectives = len(probe.trace.collectives) - before - g_collectives
    answer = "copy_to" if f_collectives and not g_collectives else "reduce_from"
    why = (
        f"The backward {row.collective} is issued by {row.module} (the column-parallel layer, whose input "
        f"enters through copy_to): copy_to's backward ran {f_collectives} collective on a Partial gradient, "
        f"reduce_from's backward ran {g_collectives} on a replicated one."
    )
    return Measured(answer, why, (("reduce_from", "g: an all-reduce forward, the identity backward"),))


backward_region = Exercise(
    "5.2",
    "In the MLP's backward pass, which of Megatron's regions issues the all-reduce: copy_to (f) or "
    "reduce_from (g)?",
    _backward_region,
    kind="choice",
    choices=("copy_to", "reduce_from"),
    aliases={"f": "copy_to", "g": "reduce_from"},
    hint="which region's input gradient is a sum over the devices' partial results?",
)


def gpt3_layer(t: int = 8, gpu: str = "h100"):
    """One GPT-3 175B layer, shape-only, forward and backward on t GPUs in an NVLink node."""
    mesh = tpsim.Mesh(t, topology=tpsim.presets.nvlink_node(t, gpu), device=gpu, memory=1 << 62)
    layer = TransformerBlock(mesh, 12288, 96, init=None, dtype="bfloat16")
    x = tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), mesh, [Replicate()])
    layer(x)
    layer.backprop(tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), mesh, [Replicate()]))
    return mesh, layer


def _mlp_forward_bytes() -> Measured:
    _, layer = gpt3_layer(4)
    (row,) = [r for r in comm_table(layer.mlp) if r.direction == "forward"]
    why = (f"The forward all-reduce of the MLP's output (2048 x 1 x 12288 bfloat16 = "
           f"{fmt_bytes(row.nbytes)}) made each device send {fmt_bytes(row.sent_per_device)} = 2(t-1)/t S "
           f"with t = 4.")
    traps = ((row.nbytes, "S: the output once, without the ring's 2(t-1)/t"),)
    return Measured(row.sent_per_device, why, traps)


mlp_forward_bytes = Exercise(
    "5.3",
    "GPT-3 175B's MLP (hidden 12288) on 4 devices with 2048 tokens in bfloat16: how many bytes does each "
    "device send in the MLP's forward all-reduce (ring)?",
    _mlp_forward_bytes,
    unit="bytes",
    hint=(
        "the MLP's forward has one all-reduce of the (s, b, h) activation; a ring all-reduce sends 2 "
        "(t-1)/t of it"
    ),
)


def _layer_comm_time() -> Measured:
    _, layer = gpt3_layer(8, "a100")
    rows = comm_table(layer)
    tot = totals(rows)
    count = sum(int(v["count"]) for v in tot.values())
    time = sum(v["time"] for v in tot.values())
    why = (f"One layer issues {count} all-reduces of {fmt_bytes(rows[0].nbytes // rows[0].count)} "
           f"({int(tot['forward']['count'])} forward, {int(tot['backward']['count'])} backward), each "
           f"{fmt_time(time / count)} on the ring at "
           f"{tpsim.presets.NVLINK['a100'][0] / 1e9:g} GB/s: {fmt_time(time)}.")
    return Measured(time, why, ((time / 2, "the forward (or the backward) pass alone"),))


layer_comm_time = Exercise(
    "5.4",
    "A whole GPT-3 175B layer (attention + MLP, no sequence parallelism), 2048 tokens, bfloat16, on an "
    "8 x A100 NVLink node (alpha 2 us, 300 GB/s per direction): how long does it spend in communication, "
    "forward and backward together? "
    "(within 2%)",
    _layer_comm_time,
    unit="seconds",
    rel_tol=0.02,
    hint=(
        "count the all-reduces of a layer in forward and in backward, then price each with the ring's "
        "alpha-beta time"
    ),
)

EXERCISES = [mlp_allreduces, backward_region, mlp_forward_bytes, layer_comm_time]
