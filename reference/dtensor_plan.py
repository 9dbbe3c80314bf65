"""Plain torch.nn modules with tpsim.nn's math, and the DTensor plans that make them tensor-parallel.

The modules know nothing of parallelism: they are the unsharded layers, with the same parameter names
as tpsim.nn (`query_key_value`, `dense`, `fc1`, `fc2`, `input_layernorm`, ...), so a state dict of
tpsim's global weights loads as it is.  `parallelize` then hands them to
torch.distributed.tensor.parallel, which shards the weights and puts the collectives in:

    MLP         fc1: ColwiseParallel   fc2: RowwiseParallel
    Attention   query_key_value: ColwiseParallel   dense: RowwiseParallel
    Block       both of the above; with SP the LayerNorms are SequenceParallel

    without SP  Colwise input R (forward: nothing, backward: all-reduce of dx)
                Rowwise output R (forward: all-reduce)
    with SP     Colwise input S(seq) -> R (forward: all-gather, backward: reduce-scatter of dx)
                Rowwise output S(seq) (forward: reduce-scatter, backward: all-gather of dy)

x is (s, b, h), sequence first, as tpsim's layers take it (seq_dim=0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from reference.compat import dtensor_names
from tpsim.errors import ArgumentError

_, Shard, Replicate, _ = dtensor_names()
SEQ_DIM = 0  # x is (s, b, h)


class MLP(nn.Module):
    """fc1 -> tanh GeLU -> fc2, as tpsim.nn.ParallelMLP."""

    def __init__(self, hidden: int, ffn_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn_hidden)
        self.fc2 = nn.Linear(ffn_hidden, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Attention(nn.Module):
    """Causal self-attention, as tpsim.nn.ParallelAttention, with its fused, per-head interleaved QKV.

    The rows of query_key_value.weight are [q_0; k_0; v_0; q_1; ...] (Megatron's layout, one (d, h)
    block each).  ColwiseParallel shards that dim contiguously, and with this layout a contiguous
    piece is whole heads, each with its own q, k and v: rank i gets heads i n/t .. (i+1) n/t - 1, as
    in tpsim.  (With a [Q; K; V] layout a contiguous cut would hand rank 0 all of Q and part of K; it
    would need its rows permuted, or three separate linears.)  So forward reads the head count from
    the local width (view(..., -1, 3d)) and works on whatever whole heads this rank holds.
    """

    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.head_dim = hidden // num_heads
        self.query_key_value = nn.Linear(hidden, 3 * hidden)
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, x):
        d = self.head_dim
        qkv = self.query_key_value(x)  # (s, b, n_local 3d): a plain local tensor (use_local_output)
        s, b = qkv.shape[:2]
        per_head = qkv.view(s, b, -1, 3 * d).permute(1, 2, 0, 3)  # (b, n_local, s, 3d)
        q, k, v = per_head.split(d, dim=-1)  # each (b, n_local, s, d)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))  # (b, n_local, s, s)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        probs = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
        ctx = (probs @ v).permute(2, 0, 1, 3).reshape(s, b, -1)  # (s, b, n_local d): S(-1) for dense
        return self.dense(ctx)


class Block(nn.Module):
    """Pre-LN GPT layer, as tpsim.nn.TransformerBlock without dropout."""

    def __init__(self, hidden: int, num_heads: int, ffn_hidden: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hidden, eps=1e-5)
        self.self_attention = Attention(hidden, num_heads)
        self.post_attention_layernorm = nn.LayerNorm(hidden, eps=1e-5)
        self.mlp = MLP(hidden, ffn_hidden)

    def forward(self, x):
        r = x + self.self_attention(self.input_layernorm(x))
        return r + self.mlp(self.post_attention_layernorm(r))


def build(layer: str, hidden: int, num_heads: int, ffn_hidden: int) -> nn.Module:
    if layer == "mlp":
        return MLP(hidden, ffn_hidden)
    if layer == "attention":
        return Attention(hidden, num_heads)
    if layer == "block":
        return Block(hidden, num_heads, ffn_hidden)
    raise ArgumentError(f"layer {layer!r} is unknown; valid: mlp, attention, block")


def pair_plan(column: str, row: str, sp: bool) -> dict:
    """A column-parallel linear feeding a row-parallel one.

    Colwise's input is a plain tensor (from the caller, a residual) or a DTensor (a SequenceParallel
    LayerNorm's output); either way it is declared R, or S(seq) under SP, and made R for the matmul.
    Both outputs are handed back as plain local tensors (use_local_output, the default).
    """
    layout = Shard(SEQ_DIM) if sp else Replicate()
    return {column: ColwiseParallel(input_layouts=layout), row: RowwiseParallel(output_layouts=layout)}


def plan(layer: str, sp: bool) -> dict:
    """parallelize_module's plan for a layer built by `build`."""
    if layer == "mlp":
        return pair_plan("fc1", "fc2", sp)
    if layer == "attention":
        return pair_plan("query_key_value", "dense", sp)
    if layer != "block":
        raise ArgumentError(f"layer {layer!r} is unknown; valid: mlp, attention, block")
    out = {
        **pair_plan("self_attention.query_key_value", "self_attention.dense", sp),
        **pair_plan("mlp.fc1", "mlp.fc2", sp),
    }
    if sp:  # each rank normalizes its own rows; weight and bias R, their grads left P(sum)
        for name in ("input_layernorm", "post_attention_layernorm"):
            out[name] = SequenceParallel(sequence_dim=SEQ_DIM)
    return out  # without SP the LayerNorms stay plain modules: every rank does the same work


def parallelize(module: nn.Module, layer: str, mesh, sp: bool) -> nn.Module:
    return parallelize_module(module, mesh, plan(layer, sp))
