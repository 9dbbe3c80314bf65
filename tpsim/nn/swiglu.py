"""The gated MLP of Llama, Mistral and Qwen (SwiGLU; Shazeer 2020), as Megatron shards it.

    [g, u] = x [W_gate; W_up]^T     linear_fc1: gate and up fused, column-parallel (no communication)
    a = silu(g) * u                 local: each rank holds its ffn / t features of g and of u
    y = a W_down^T                  linear_fc2: row-parallel, one all-reduce

The fused weight (2 ffn, h) is laid out per rank, [gate_0; up_0; gate_1; up_1; ...] (fused.py), so
Shard(0) hands rank i the gate rows and the up rows of the same ffn / t features: ffn must divide by t.

    forward:  copy_to (identity), then one all-reduce of y     [SP: all-gather x, reduce-scatter y]
    backward: identity for dy, then one all-reduce of dx       [SP: all-gather dy, x again, reduce-scatter dx]

No biases (none of these models has them).  Saved for backward: x (fc1's input), [g, u], and a.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray
from tpsim.meta import MetaArray, is_meta
from tpsim.nn import ops
from tpsim.nn.fused import fuse_rows, install
from tpsim.nn.init import global_weight
from tpsim.nn.linear import ColumnParallelLinear, RowParallelLinear
from tpsim.nn.module import Module


class SwiGLUMLP(Module):
    """x (s, b, h) -> y (s, b, h) through silu(x W_gate^T) * (x W_up^T), then W_down."""

    def __init__(
        self,
        mesh,
        hidden: int,
        ffn_hidden: int,
        *,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        self.check_divides("ffn_hidden (gate and up are fused per rank)", ffn_hidden)
        self.hidden, self.ffn_hidden = hidden, ffn_hidden
        kw = dict(
            bias=False, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=seq_dim, tp_dim=tp_dim
        )
        fc1 = ColumnParallelLinear(mesh, hidden, 2 * ffn_hidden, seed=seed, init=None, **kw)
        self.linear_fc1 = self.child("linear_fc1", fc1)
        gate, up = (global_weight((ffn_hidden, hidden), seed + i, init, dtype) for i in (0, 1))
        install(fc1, "weight", fuse_rows([gate, up], self.tp_size))
        self.linear_fc2 = self.child(
            "linear_fc2", RowParallelLinear(mesh, ffn_hidden, hidden, seed=seed + 2, init=init, **kw)
        )

    def forward(self, x: DArray) -> DArray:
        gu = self.linear_fc1(x)  # (s, b, 2 ffn/t) S(-1): [g_i, u_i] on rank i
        a = self.local(
            "swiglu", _swiglu, gu, placements=gu.placements, shape=(*gu.shape[:-1], self.ffn_hidden)
        )
        self.save(gu=gu)
        return self.linear_fc2(a)

    def backward(self, dy: DArray) -> DArray:
        da = self.linear_fc2.backprop(dy)
        (gu,) = self.saved("gu")
        dgu = self.local("swiglu_backward", _swiglu_grad, gu, da, placements=gu.placements)
        return self.linear_fc1.backprop(dgu)


def _split(gu):
    f = gu.shape[-1] // 2
    return gu[..., :f], gu[..., f:]


def _swiglu(gu):
    """a = silu(g) * u = g sigmoid(g) u: ~6 FLOPs per output (exp, add, divide, two products)."""
    shape = (*gu.shape[:-1], gu.shape[-1] // 2)
    if is_meta(gu):
        out = MetaArray(shape, gu.dtype)
    else:
        g, u = (ops.widen(p) for p in _split(gu))
        out = ops.narrow(g / (1 + np.exp(-g)) * u, gu.dtype)
    return out, 6 * out.size, gu.nbytes + out.nbytes


def _swiglu_grad(gu, da):
    """dg = da u sigmoid(g) (1 + g (1 - sigmoid(g))), du = da silu(g): ~10 FLOPs per output."""
    if is_meta(gu):
        out = MetaArray(gu.shape, gu.dtype)
    else:
        g, u = (ops.widen(p) for p in _split(gu))
        d = ops.widen(da)
        sig = 1 / (1 + np.exp(-g))
        out = ops.narrow(np.concatenate([d * u * sig * (1 + g * (1 - sig)), d * g * sig], axis=-1), gu.dtype)
    return out, 10 * da.size, gu.nbytes + da.nbytes + out.nbytes
