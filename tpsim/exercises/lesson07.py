"""Lesson 7 exercises: sequence parallelism's collectives and activation memory, measured on the simulator.

    7.1 sp_forward_bytes          bytes a device sends in one layer's forward pass with SP
    7.2 sp_activations            activation bytes one device keeps for one layer with SP
    7.3 row_parallel_collective   what replaces the all-reduce after a row-parallel linear under SP
"""

from __future__ import annotations

import tpsim
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import TransformerBlock, comm_table, format_comm_table
from tpsim.nn.config import PRESETS, korthikanti_activation_bytes

CFG = PRESETS["gpt3-1.3b"]  # s 2048, b 1, h 2048, a 16, bfloat16
T = 8


def _layer(sp: bool) -> tuple[tpsim.Mesh, TransformerBlock]:
    """One shape-only GPT-3 1.3B layer at t = 8 on NVLink, after its forward pass."""
    mesh = tpsim.Mesh(T, topology=tpsim.presets.nvlink_node(T))
    block = TransformerBlock(
        mesh, CFG.hidden, CFG.num_heads, CFG.ffn, dropout=0.1, sequence_parallel=sp, init=None,
        dtype=CFG.dtype,
    )
    x = tpsim.meta((CFG.seq_len, CFG.micro_batch, CFG.hidden), CFG.dtype)
    block(tpsim.distribute(x, mesh, [tpsim.Shard(0) if sp else tpsim.Replicate()]))
    return mesh, block


def _sp_forward_bytes() -> Measured:
    mesh, _ = _layer(sp=True)
    (sent,) = {d["sent"] for d in mesh.trace.per_device()}
    kinds = sorted(c.collective for c in mesh.trace.collectives)
    sbh = CFG.seq_len * CFG.micro_batch * CFG.hidden * 2
    return Measured(
        sent,
        f"The forward pass ran {len(kinds)} collectives ({', '.join(kinds)}) of s b h = {sbh} B each; in a "
        f"ring each device sends (t-1)/t of that per collective: 4 x {T - 1}/{T} x {sbh} = {sent} B, "
        "the same as the 2 all-reduces without SP.",
        traps=((2 * (T - 1) / T * sbh, "one all-reduce, or one all-gather plus one reduce-scatter"),
               (4 * sbh, "the four buffers' sizes, not what a ring sends")),
    )


def _sp_activations() -> Measured:
    mesh, _ = _layer(sp=True)
    (kept,) = {d.in_use["activations"] for d in mesh.devices}
    formula = korthikanti_activation_bytes(CFG, T, True)
    return Measured(
        kept,
        f"The device ledger holds {kept} B of activations after the forward pass.  Korthikanti's "
        f"s b h (34 + 5 a s / h) / t gives {formula:.0f} B; the other {kept - formula:.0f} B are the "
        "LayerNorms' float32 mean and rstd per row (any answer within 0.1% is accepted).",
        traps=((korthikanti_activation_bytes(CFG, T, False), "the TP-only formula, without SP"),
               (korthikanti_activation_bytes(CFG, 1, False), "one layer's activations without any split")),
    )


def _row_parallel_collective() -> Measured:
    mesh, block = _layer(sp=True)
    row_parallel = f"{block.name}.self_attention.dense"
    (kind,) = {c.collective for c in mesh.trace.collectives if c.label == row_parallel}
    return Measured(
        kind,
        f"Under SP the attention's row-parallel output projection ({row_parallel}) ended its forward pass "
        f"with a {kind}: each rank keeps s/t rows of the summed output.",
        traps=(("all_gather", "what starts the next column-parallel linear"),
               ("all_reduce", "what ends it without SP")),
        trace=format_comm_table([r for r in comm_table(block) if r.direction == "forward"], "forward, SP"),
    )


sp_forward_bytes = Exercise(
    "7.1",
    f"One GPT-3 1.3B layer (s = {CFG.seq_len}, b = {CFG.micro_batch}, h = {CFG.hidden}, bfloat16) runs "
    f"with TP + SP over t = {T} GPUs with ring collectives.  How many bytes does one device send in the "
    "layer's forward pass?",
    measure=_sp_forward_bytes,
    unit="bytes",
    hint=(
        "SP turns each all-reduce into a reduce-scatter plus an all-gather; count them in a forward pass "
        "and what each sends"
    ),
)
sp_activations = Exercise(
    "7.2",
    f"Same layer (a = {CFG.num_heads} heads, dropout on), TP + SP over t = {T}.  How many bytes of "
    "activations does one device keep for the backward pass?",
    measure=_sp_activations,
    unit="bytes",
    rel_tol=1e-3,
    hint=(
        "with SP nothing of the layer's saved activations stays replicated: Korthikanti's formula divided"
        " by t"
    ),
)
row_parallel_collective = Prediction(
    "7.3",
    "Predict, then run: "
    "With sequence parallelism, which collective ends the forward pass of a row-parallel linear "
    "(the attention's output projection)?",
    measure=_row_parallel_collective,
    kind="choice",
    choices=("all_reduce", "all_gather", "reduce_scatter", "all_to_all"),
    hint='the row-parallel output is a Partial sum, and SP wants it split by sequence afterwards',
)
