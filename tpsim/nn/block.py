"""One GPT transformer layer (pre-LN), as Megatron builds it, in the global view.

    r = x + dropout(self_attention(input_layernorm(x)))
    y = r + dropout(mlp(post_attention_layernorm(r)))

x and y are (s, b, h): R on the TP mesh dim, or S(seq_dim) with sequence parallelism (SP).
The residual adds and the hidden dropouts are local: each rank holds whole rows of x.

    without SP   forward: 2 all-reduces (attention's dense, the MLP's fc2), of s b h elements each
                 backward: 2 all-reduces (the dx of query_key_value and of fc1)
    with SP      forward: all-gather + reduce-scatter around attention, the same around the MLP
                 backward: per linear pair, all-gather dy, all-gather x again (for dW), reduce-scatter
                 dx; and one all-reduce per LayerNorm of its [dw; db] (the SP params' grads)

Dropout streams (dropout.py): the hidden dropouts draw from "default" without SP (every TP rank
drops the same elements of its replica) and from "model-parallel" with SP (Megatron runs the layer
inside `tracker.fork()`, so the sequence shards get independent masks); attention dropout always
draws from "model-parallel".  One tracker serves the whole layer (and model), so the draws advance
in the order Megatron's generators would.

Backward is explicit: each residual branch's gradient is added locally to the one that skips it.
"""

from __future__ import annotations

from tpsim.darray import DArray
from tpsim.nn import ops
from tpsim.nn.attention import ParallelAttention
from tpsim.nn.dropout import Dropout, RNGTracker, hidden_stream
from tpsim.nn.mlp import ParallelMLP
from tpsim.nn.module import Module
from tpsim.nn.norm import LayerNorm


class TransformerBlock(Module):
    """x (s, b, h) -> y (s, b, h): pre-LN self-attention and GeLU MLP, each with a residual."""

    def __init__(
        self,
        mesh,
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
        init: str | None = "normal",
        dtype="float32",
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        if tracker is None:
            tracker = RNGTracker(seed)
        self.tracker, self.sequence_parallel = tracker, sequence_parallel
        kw = dict(init=init, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=seq_dim, tp_dim=tp_dim)
        # each child draws its weights from its own seeds: seed, seed + 10, ... (each uses up to +3)
        self.input_layernorm = self.child("input_layernorm", LayerNorm(mesh, hidden, seed=seed, **kw))
        self.self_attention = self.child(
            "self_attention",
            ParallelAttention(
                mesh,
                hidden,
                num_heads,
                bias=bias,
                seed=seed + 10,
                attention_dropout=attention_dropout,
                tracker=tracker,
                **kw,
            ),
        )
        self.post_attention_dropout = self._dropout("post_attention_dropout", dropout, tp_dim)
        self.post_attention_layernorm = self.child(
            "post_attention_layernorm", LayerNorm(mesh, hidden, seed=seed + 20, **kw)
        )
        self.mlp = self.child("mlp", ParallelMLP(mesh, hidden, ffn_hidden, bias=bias, seed=seed + 30, **kw))
        self.post_mlp_dropout = self._dropout("post_mlp_dropout", dropout, tp_dim)

    def _dropout(self, name: str, p: float, tp_dim) -> Dropout:
        stream = hidden_stream(self.sequence_parallel)
        return self.child(name, Dropout(self.mesh, p, tracker=self.tracker, stream=stream, tp_dim=tp_dim))

    def forward(self, x: DArray) -> DArray:
        a = self.self_attention(self.input_layernorm(x))
        r = self._add("residual_add", x, self.post_attention_dropout(a))  # x + dropout(attention)
        del a
        m = self.mlp(self.post_attention_layernorm(r))
        return self._add("residual_add", r, self.post_mlp_dropout(m))  # r + dropout(mlp)

    def backward(self, dy: DArray) -> DArray:
        dm = self.post_mlp_dropout.backprop(dy)
        dr = self.post_attention_layernorm.backprop(self.mlp.backprop(dm))
        dr = self._add("residual_add_backward", dr, dy)  # the MLP branch and the skip
        del dm, dy
        da = self.post_attention_dropout.backprop(dr)
        dx = self.input_layernorm.backprop(self.self_attention.backprop(da))
        return self._add("residual_add_backward", dx, dr)

    def _add(self, name: str, a: DArray, b: DArray) -> DArray:
        return self.local(
            name, lambda u, v: ops.elementwise(lambda p, q: p + q, u, v), a, b, placements=a.placements
        )
