"""The layer builders of the equivalence check: one `Case`, the same module in both engines.

`build_tpsim` makes the tpsim module on a `tpsim.Mesh`; `build_reference` makes its mirror on one rank
from the same spec (same seed, init and dtype), so that shard d of tpsim and rank d of the reference
hold the same weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reference import attention as r_attention
from reference import block as r_block
from reference import dropout as r_dropout
from reference import embedding as r_embedding
from reference import gpt as r_gpt
from reference import linear as r_linear
from reference import llama_cases
from reference import loss as r_loss
from reference import mlp as r_mlp
from reference import norm as r_norm
from tpsim import Replicate, Shard
from tpsim import nn as t_nn
from tpsim.errors import ArgumentError
from tpsim.nn.dropout import DEFAULT, MODEL_PARALLEL

if TYPE_CHECKING:
    from reference.cases import Case

LAYERS = (
    "column",
    "row",
    "mlp",
    "attention",
    "embedding",
    "logits",
    "loss",
    "layernorm",
    "dropout",
    "block",
    "gpt",
    "rmsnorm",
    "swiglu",
    "gqa",
    "llama_block",
    "llama",
)


def _common(case: Case) -> dict:
    return dict(seed=case.seed, init=case.init, dtype=case.dtype)


def _vocab(case: Case, t: int) -> tuple[int, int]:
    """(real vocab, padded vocab) of an embedding, logits or loss case."""
    v, m = case.dims["vocab"], case.options.get("pad_to_multiple_of")
    return v, t_nn.padded_vocab_size(v, t, m)


def build_tpsim(case: Case, mesh):
    """(module that owns the grads, forward(inputs) -> y, input kind, input placement)."""
    d, o, kw = case.dims, case.options, _common(case)
    sp = case.sp
    seq = Shard(0) if sp else Replicate()
    if case.layer == "column":
        m = t_nn.ColumnParallelLinear(
            mesh,
            d["inp"],
            d["out"],
            bias=o.get("bias", True),
            gather_output=o.get("gather_output", False),
            sequence_parallel=sp,
            **kw,
        )
        return m, m, ("x", (d["s"], d["b"], d["inp"]), seq)
    if case.layer == "row":
        par = o.get("input_is_parallel", True)
        m = t_nn.RowParallelLinear(
            mesh, d["inp"], d["out"], input_is_parallel=par, sequence_parallel=sp, **kw
        )
        return m, m, ("x", (d["s"], d["b"], d["inp"]), Shard(2) if par else seq)
    if case.layer == "mlp":
        m = t_nn.ParallelMLP(mesh, d["hidden"], d["ffn"], sequence_parallel=sp, **kw)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "attention":
        m = t_nn.ParallelAttention(
            mesh,
            d["hidden"],
            d["heads"],
            sequence_parallel=sp,
            attention_dropout=o.get("attention_dropout", 0.0),
            **kw,
        )
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer in ("embedding", "logits"):
        m = t_nn.VocabParallelEmbedding(
            mesh,
            d["vocab"],
            d["hidden"],
            sequence_parallel=sp,
            pad_to_multiple_of=o.get("pad_to_multiple_of"),
            **kw,
        )
        if case.layer == "embedding":
            return m, m, ("ids", (d["s"], d["b"]), Replicate())
        return t_nn.VocabParallelLogits(m), m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "loss":
        v, padded = _vocab(case, mesh.size)
        m = t_nn.VocabParallelCrossEntropy(mesh, label_smoothing=o.get("label_smoothing", 0.0), vocab_size=v)
        return m, m, ("logits", (d["s"], d["b"], padded), Shard(2))
    if case.layer == "layernorm":
        m = t_nn.LayerNorm(mesh, d["hidden"], sequence_parallel=sp, **kw)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "dropout":
        stream = MODEL_PARALLEL if sp else DEFAULT  # SP: the shards draw independent masks
        m = t_nn.Dropout(mesh, o["p"], tracker=t_nn.RNGTracker(case.seed), stream=stream)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "block":
        m = t_nn.TransformerBlock(
            mesh, d["hidden"], d["heads"], d["ffn"], dropout=o.get("dropout", 0.0), sequence_parallel=sp, **kw
        )
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "gpt":
        m = t_nn.GPT(mesh, _gpt_config(case), **_gpt_options(case))
        return m, m, ("ids+targets", (d["s"], d["b"]), Replicate())
    if case.layer in llama_cases.LAYERS:
        return llama_cases.build_tpsim(case, mesh)
    raise ArgumentError(f"unknown layer {case.layer!r}; valid: {', '.join(LAYERS)}")


def _gpt_config(case: Case) -> t_nn.GPTConfig:
    d = case.dims
    return t_nn.GPTConfig(
        vocab_size=d["vocab"],
        hidden=d["hidden"],
        num_layers=d["layers"],
        num_heads=d["heads"],
        seq_len=d["seq_len"],
        ffn_hidden=d["ffn"],
        micro_batch=d["b"],
        dtype=case.dtype,
        dropout=case.options.get("dropout", 0.0),
        name="gpt",
    )


def _gpt_options(case: Case) -> dict:
    o = case.options
    return dict(
        sequence_parallel=case.sp,
        tied_embeddings=not o.get("untied", False),
        pad_to_multiple_of=o.get("pad_to_multiple_of"),
        seed=case.seed,
        init=case.init,
    )


def build_reference(case: Case, comm, device):
    """The mirror of build_tpsim on one rank: (module, module that owns the params)."""
    d, o, kw = case.dims, case.options, dict(_common(case), device=device)
    sp = case.sp
    if case.layer == "column":
        m = r_linear.ColumnParallelLinear(
            comm,
            d["inp"],
            d["out"],
            bias=o.get("bias", True),
            gather_output=o.get("gather_output", False),
            sequence_parallel=sp,
            **kw,
        )
        return m, m
    if case.layer == "row":
        par = o.get("input_is_parallel", True)
        m = r_linear.RowParallelLinear(
            comm, d["inp"], d["out"], input_is_parallel=par, sequence_parallel=sp, **kw
        )
        return m, m
    if case.layer == "mlp":
        m = r_mlp.ParallelMLP(comm, d["hidden"], d["ffn"], sequence_parallel=sp, **kw)
        return m, m
    if case.layer == "attention":
        m = r_attention.ParallelAttention(
            comm,
            d["hidden"],
            d["heads"],
            sequence_parallel=sp,
            attention_dropout=o.get("attention_dropout", 0.0),
            **kw,
        )
        return m, m
    if case.layer in ("embedding", "logits"):
        m = r_embedding.VocabParallelEmbedding(
            comm,
            d["vocab"],
            d["hidden"],
            sequence_parallel=sp,
            pad_to_multiple_of=o.get("pad_to_multiple_of"),
            **kw,
        )
        return (m, m) if case.layer == "embedding" else (r_embedding.VocabParallelLogits(m), m)
    if case.layer == "loss":
        v, padded = _vocab(case, comm.size)
        m = r_loss.VocabParallelCrossEntropy(
            comm,
            label_smoothing=o.get("label_smoothing", 0.0),
            vocab_size=v,
            padded_vocab_size=padded,
            device=device,
        )
        return m, m
    if case.layer == "layernorm":
        m = r_norm.LayerNorm(comm, d["hidden"], sequence_parallel=sp, **kw)
        return m, m
    if case.layer == "dropout":
        stream = MODEL_PARALLEL if sp else DEFAULT
        tracker = r_dropout.RNGTracker(case.seed, comm.rank)
        m = r_dropout.Dropout(comm, o["p"], tracker=tracker, stream=stream, device=device)
        return m, m
    if case.layer == "block":
        m = r_block.TransformerBlock(
            comm, d["hidden"], d["heads"], d["ffn"], dropout=o.get("dropout", 0.0), sequence_parallel=sp, **kw
        )
        return m, m
    if case.layer == "gpt":
        m = r_gpt.GPT(comm, _gpt_config(case), device=device, **_gpt_options(case))
        return m, m
    if case.layer in llama_cases.LAYERS:
        return llama_cases.build_reference(case, comm, device)
    raise ArgumentError(f"unknown layer {case.layer!r}; valid: {', '.join(LAYERS)}")
