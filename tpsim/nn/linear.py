"""Column- and row-parallel linear layers (Megatron), in the global view.

The weight is stored as torch.nn.Linear stores it, (out, in), and y = x W^T + b.

ColumnParallelLinear: W = [W_1; ...; W_t] split along out (rows of W), so rank i
computes y_i = x W_i^T, its slice of the output features.
    forward:  copy_to (identity)        [SP: all-gather the sequence]
              optional gather_output: all-gather of y
    backward: all-reduce of dx          [SP: reduce-scatter of dx, after re-gathering x]

RowParallelLinear: W = [W_1 ... W_t] split along in (columns of W), so rank i
computes the partial sum x_i W_i^T; the bias is added once, after the reduction.
    forward:  all-reduce of y (reduce_from)   [SP: reduce-scatter along the sequence]
    backward: identity                        [SP: all-gather of dy]

x is (..., in); under SP its `seq_dim` is sharded across TP ranks.
"""

from __future__ import annotations

import math

from tpsim import validate
from tpsim.darray import DArray, distribute
from tpsim.errors import PlacementError, ShapeError
from tpsim.nn import ops, regions
from tpsim.nn.init import global_weight
from tpsim.nn.layout import grad_placements, on_tp
from tpsim.nn.module import Module
from tpsim.placement import Partial, Replicate, Shard


class _Linear(Module):
    def __init__(
        self,
        mesh,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        tp_dim=None,
        name: str | None = None,
        weight_split: int = 0,
    ):
        who = name or type(self).__name__
        validate.positive_int(who, "in_features", in_features)
        validate.positive_int(who, "out_features", out_features)
        super().__init__(mesh, name, tp_dim)
        self.in_features, self.out_features = in_features, out_features
        self.sequence_parallel, self.seq_dim = sequence_parallel, seq_dim
        w = global_weight((out_features, in_features), seed, init, dtype)
        self.param("weight", distribute(w, mesh, self.placements(Shard(weight_split))))
        if bias:
            b = global_weight((out_features,), seed + 1, "zeros" if init == "normal" else init, dtype)
            self.param(
                "bias", distribute(b, mesh, self.placements(Shard(0) if weight_split == 0 else Replicate()))
            )
        self.has_bias = bias

    def check_input(self, x: DArray, want) -> None:
        """Refuse a wrong input before anything is saved or computed."""
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"{self.name}: input has {x.shape[-1]} features in its last dim "
                             f"(shape {x.shape}); this layer takes in_features = {self.in_features}")
        if x.placements[self.tp] != want and self.tp_size > 1:
            raise PlacementError(f"{self.name}: input placement {x.placements[self.tp]!r} on the TP mesh dim "
                                 f"{self.mesh.names[self.tp]}; this layer takes {want!r}")

    def weight_grads(self, x: DArray, dy: DArray) -> None:
        """dW = dy^T x over all leading dims; db = sum of dy over them.  Each takes its parameter's
        split: dW S(0) or S(1) on TP; db S(0) (column) or R (row).

        A row-parallel db under SP sums the whole dy, all-gathered for dx anyway, so it needs no
        all-reduce (Megatron sums each rank's own rows and all-reduces db with the other SP grads).
        """

        def dw(g, a):
            rows = math.prod(g.shape[:-1])  # explicit: a rank may hold zero features
            g2, a2 = g.reshape(rows, g.shape[-1]), a.reshape(rows, a.shape[-1])
            return ops.matmul(ops.transpose(g2)[0], a2)

        w = self.params["weight"]
        self.accumulate("weight", self.local("linear_dweight", dw, dy, x, placements=grad_placements(x, w)))
        if self.has_bias:
            db = self.local(
                "linear_dbias",
                lambda g: ops.sum_to(g, g.shape[-1:]),
                dy,
                placements=grad_placements(dy, self.params["bias"]),
            )
            self.accumulate("bias", db)


class ColumnParallelLinear(_Linear):
    """y = x W^T + b with W split by output features.  Returns y (S(-1) on TP) or, with
    gather_output, y replicated; with skip_bias_add, (y, bias) for a later fused add."""

    def __init__(
        self,
        mesh,
        in_features: int,
        out_features: int,
        *,
        gather_output: bool = False,
        skip_bias_add: bool = False,
        **kw,
    ):
        who = kw.get("name") or type(self).__name__
        validate.exclusive(who, gather_output=gather_output, sequence_parallel=kw.get("sequence_parallel"))
        super().__init__(mesh, in_features, out_features, weight_split=0, **kw)
        self.gather_output, self.skip_bias_add = gather_output, skip_bias_add

    def forward(self, x: DArray):
        self.check_input(x, Shard(self.seq_dim) if self.sequence_parallel else Replicate())
        w = self.params["weight"]
        full = (
            regions.sequence_gather(x, self.tp, self.seq_dim)
            if self.sequence_parallel
            else regions.copy_to(x, self.tp)
        )
        self.save(x=x if self.sequence_parallel else full)  # SP keeps only the shard, re-gathered in backward
        y = self.local(
            "linear",
            lambda a, wl: ops.matmul(a, ops.transpose(wl)[0]),
            full,
            w,
            placements=on_tp(full, self.tp, Shard(full.ndim - 1)),
        )
        bias = self.params.get("bias")
        if bias is not None and not self.skip_bias_add:
            y = self.local(
                "bias_add",
                lambda a, b: ops.elementwise(lambda u, v: u + v, a, b),
                y,
                bias,
                placements=y.placements,
            )
        if self.gather_output:
            y = regions.gather_from(y, self.tp)
        return (y, bias) if self.skip_bias_add else y

    def backward(self, dy: DArray) -> DArray:
        (x,) = self.saved("x")
        if self.gather_output:
            dy = regions.gather_from_backward(dy, self.tp)
        full = regions.sequence_gather(x, self.tp, self.seq_dim) if self.sequence_parallel else x
        self.weight_grads(full, dy)
        dx = self.local(
            "linear_dinput",
            lambda g, wl: ops.matmul(g, wl),
            dy,
            self.params["weight"],
            placements=on_tp(full, self.tp, Partial()),
        )
        if self.sequence_parallel:
            return regions.sequence_gather_backward(dx, self.tp, self.seq_dim)
        return regions.copy_to_backward(dx, self.tp)


class RowParallelLinear(_Linear):
    """y = x W^T + b with W split by input features; x arrives split by features (input_is_parallel)
    or replicated (then it is split locally first)."""

    def __init__(self, mesh, in_features: int, out_features: int, *, input_is_parallel: bool = True, **kw):
        super().__init__(mesh, in_features, out_features, weight_split=1, **kw)
        self.input_is_parallel = input_is_parallel

    def forward(self, x: DArray) -> DArray:
        self.check_input(x, Shard(x.ndim - 1) if self.input_is_parallel else Replicate())
        if not self.input_is_parallel:
            x = regions.scatter_to(x, self.tp)
        self.save(x=x)
        partial = self.local(
            "linear",
            lambda a, wl: ops.matmul(a, ops.transpose(wl)[0]),
            x,
            self.params["weight"],
            placements=on_tp(x, self.tp, Partial()),
        )
        if self.sequence_parallel:
            y = regions.sequence_reduce_scatter(partial, self.tp, self.seq_dim)
        else:
            y = regions.reduce_from(partial, self.tp)
        if self.has_bias:
            y = self.local(
                "bias_add",
                lambda a, b: ops.elementwise(lambda u, v: u + v, a, b),
                y,
                self.params["bias"],
                placements=y.placements,
            )
        return y

    def backward(self, dy: DArray) -> DArray:
        (x,) = self.saved("x")
        if self.sequence_parallel:
            dy_full = regions.sequence_reduce_scatter_backward(dy, self.tp, self.seq_dim)
        else:
            dy_full = regions.reduce_from_backward(dy, self.tp)
        self.weight_grads(x, dy_full)
        dx = self.local(
            "linear_dinput",
            lambda g, wl: ops.matmul(g, wl),
            dy_full,
            self.params["weight"],
            placements=on_tp(x, self.tp, Shard(x.ndim - 1)),
        )
        if not self.input_is_parallel:
            dx = regions.scatter_to_backward(dx, self.tp)
        return dx
