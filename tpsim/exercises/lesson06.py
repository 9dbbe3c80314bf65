"""Lesson 6 exercises: the vocab-parallel embedding and cross-entropy, measured on the simulator.

    6.1 padded_rows           rows of GPT-2's padded table on each of 4 ranks
    6.2 loss_bytes            bytes a device sends in the cross-entropy's three all-reduces
    6.3 backward_collective   which collective the embedding's backward pass needs
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import VocabParallelCrossEntropy, VocabParallelEmbedding
from tpsim.nn.embedding import vocab_ranges

GPT2_VOCAB, PAD, T = 50257, 128, 4
S, B, V_LOSS, T_LOSS = 2048, 1, 51200, 8
NO_COLLECTIVE = None  # as the API says it: no collective is None, not a string


CHOICES = ("all_reduce", "all_gather", "reduce_scatter", NO_COLLECTIVE)


def _padded_rows() -> Measured:
    emb = VocabParallelEmbedding(tpsim.Mesh(T), GPT2_VOCAB, 1, init=None, pad_to_multiple_of=PAD)
    rows = {hi - lo for lo, hi in vocab_ranges(emb.params["weight"], 0)}
    (n,) = rows  # padded: every rank holds the same number of rows
    return Measured(
        n,
        f"V = {GPT2_VOCAB} rounded up to a multiple of {PAD} x {T} = {PAD * T} is "
        f"{emb.padded_vocab_size}, and {emb.padded_vocab_size} / {T} = {n} rows on every rank.",
        traps=(
            (GPT2_VOCAB / T, "V / t without padding, not a whole number of rows"),
            (-(-GPT2_VOCAB // T), "ceil(V / t): torch.chunk's pieces without padding, uneven at the end"),
            (51200 / T, "the padding for t = 8 (a multiple of 1024), divided by 4"),
        ),
    )


def _loss_bytes() -> Measured:
    mesh = tpsim.Mesh(T_LOSS, topology=tpsim.presets.nvlink_node(T_LOSS))
    logits = tpsim.distribute(tpsim.meta((S, B, V_LOSS), "bfloat16"), mesh, [tpsim.Shard(2)])
    VocabParallelCrossEntropy(mesh)(logits, tpsim.meta((S, B), "int64"))
    sent = {d["sent"] for d in mesh.trace.per_device()}
    (n,) = sent  # a ring: every device sends the same
    kinds = [f"{c.collective} {c.op} of {c.nbytes} B" for c in mesh.trace.collectives]
    return Measured(
        n,
        f"The loss ran {len(kinds)} collectives ({'; '.join(kinds)}), each a ring all-reduce in which a "
        f"device sends 2 (t-1)/t of the buffer: 3 x 2 x {T_LOSS - 1}/{T_LOSS} x {S * B} x 2 B = {n} B.",
        traps=(
            (3 * S * B * 2, "the three buffers' sizes, not what a ring sends"),
            (S * B * V_LOSS * 2 * (T_LOSS - 1) / T_LOSS, "what gathering the logits would send"),
        ),
    )


def _backward_collective() -> Measured:
    mesh = tpsim.Mesh(4)
    emb = VocabParallelEmbedding(mesh, 10, 3, init="exact")
    y = emb(np.array([[7], [2], [9]]))
    before = len(mesh.trace.collectives)
    emb.backprop(tpsim.distribute(np.ones(y.shape, np.float32), mesh, y.placements))
    issued = [c.collective for c in mesh.trace.collectives[before:]]
    answer = issued[0] if len(issued) == 1 else NO_COLLECTIVE if not issued else "+".join(issued)
    assert answer in CHOICES, answer
    return Measured(
        answer,
        "The backward pass issued no collective: dy is already replicated, and each rank scatter-adds "
        "the rows of the ids it owns into its own rows of dE." if not issued else
        f"The backward pass issued {issued}.",
        traps=(("all_reduce", "the forward pass's collective; backward, dy arrives replicated"),
               ("all_gather", "what a vocab-parallel layer would need if dy arrived split")),
        trace=f"collectives in the backward pass: {issued or 'none'}\n"
              f"collectives in the forward pass: {[c.collective for c in mesh.trace.collectives[:before]]}",
    )


padded_rows = Exercise(
    "6.1",
    f"GPT-2's vocabulary has V = {GPT2_VOCAB} tokens.  With Megatron's make_vocab_size_divisible_by = "
    f"{PAD} and a TP degree of t = {T}, how many rows of the embedding table does each rank hold?",
    measure=_padded_rows,
    hint='Megatron pads V up to a multiple of make_vocab_size_divisible_by x t before splitting it',
)
loss_bytes = Exercise(
    "6.2",
    f"Logits of s = {S}, b = {B}, V = {V_LOSS} in bfloat16 are split by vocabulary over t = {T_LOSS} "
    "devices (NVLink, ring all-reduces).  How many bytes does one device send in the vocab-parallel "
    "cross-entropy's forward pass?",
    measure=_loss_bytes,
    unit="bytes",
    hint=(
        "the loss all-reduces three (s, b) arrays, never the logits; a ring all-reduce sends 2 (t-1)/t of"
        " each"
    ),
)
backward_collective = Prediction(
    "6.3",
    "Predict, then run: "
    "Which collective does the backward pass of VocabParallelEmbedding (no sequence parallelism) issue "
    "(None, the Python value, if it issues none)?",
    measure=_backward_collective,
    kind="choice",
    choices=CHOICES,
    hint=(
        "what placement does dy have when it reaches the embedding, and does any rank need rows that "
        "another rank owns?"
    ),
)
