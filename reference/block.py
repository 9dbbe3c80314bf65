"""One GPT transformer layer (pre-LN) on one rank: the mirror of tpsim/nn/block.py.

    r = x + dropout(self_attention(input_layernorm(x)))
    y = r + dropout(mlp(post_attention_layernorm(r)))

x and y are (s, b, h): whole on every rank, or this rank's sequence shard with SP.
    without SP   forward: 2 all-reduces; backward: 2 all-reduces
    with SP      forward: all-gather + reduce-scatter around attention and around the MLP;
                 backward: per linear pair, all-gather dy, all-gather x again, reduce-scatter dx;
                 and one all-reduce per LayerNorm of its [dw; db]

Hidden dropouts draw from "default" without SP and "model-parallel" with SP; attention dropout from
"model-parallel"; one tracker for the layer, drawn in the order tpsim draws (dropout.py).
"""

from __future__ import annotations

import torch

from reference.attention import ParallelAttention
from reference.dropout import Dropout, RNGTracker
from reference.mlp import ParallelMLP
from reference.module import Module
from reference.norm import LayerNorm
from tpsim.nn.dropout import hidden_stream


class TransformerBlock(Module):
    """x (s, b, h) -> y (s, b, h): pre-LN self-attention and GeLU MLP, each with a residual."""

    def __init__(
        self,
        comm,
        hidden: int,
        num_heads: int,
        ffn_hidden: int | None = None,
        *,
        dropout: float = 0.0,
        attention_dropout: float | None = None,
        tracker: RNGTracker | None = None,
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        bias: bool = True,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.tracker = tracker if tracker is not None else RNGTracker(seed, comm.rank)
        self.sequence_parallel = sequence_parallel
        kw = dict(init=init, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=seq_dim, device=device)
        n = self.name
        # the same seeds as tpsim's block: seed, seed + 10, seed + 20, seed + 30
        self.input_layernorm = LayerNorm(comm, hidden, seed=seed, name=f"{n}.input_layernorm", **kw)
        self.self_attention = ParallelAttention(
            comm, hidden, num_heads, bias=bias, seed=seed + 10, attention_dropout=attention_dropout,
            tracker=self.tracker, name=f"{n}.self_attention", **kw,
        )
        self.post_attention_dropout = self._dropout("post_attention_dropout", dropout, device)
        self.post_attention_layernorm = LayerNorm(
            comm, hidden, seed=seed + 20, name=f"{n}.post_attention_layernorm", **kw
        )
        self.mlp = ParallelMLP(comm, hidden, ffn_hidden, bias=bias, seed=seed + 30, name=f"{n}.mlp", **kw)
        self.post_mlp_dropout = self._dropout("post_mlp_dropout", dropout, device)

    def _dropout(self, name: str, p: float, device) -> Dropout:
        stream = hidden_stream(self.sequence_parallel)
        return Dropout(self.comm, p, tracker=self.tracker, stream=stream, name=f"{self.name}.{name}",
                       device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x + self.post_attention_dropout(self.self_attention(self.input_layernorm(x)))
        return r + self.post_mlp_dropout(self.mlp(self.post_attention_layernorm(r)))
