"""Column- and row-parallel linear layers (Megatron) on one rank: the mirror of tpsim/nn/linear.py.

The weight is stored as torch.nn.Linear stores it, (out, in), and y = x W^T + b.

ColumnParallelLinear: W = [W_1; ...; W_t] split along out, rank i holds W_i and computes y_i = x W_i^T.
    forward:  copy_to (identity)        [SP: all-gather the sequence]
              optional gather_output: all-gather of y
    backward: all-reduce of dx          [SP: all-gather x again (for dW), reduce-scatter of dx]

RowParallelLinear: W = [W_1 ... W_t] split along in, rank i computes the partial sum x_i W_i^T;
the bias is added once, after the reduction.
    forward:  all-reduce of y (reduce_from)   [SP: reduce-scatter along the sequence]
    backward: identity                        [SP: all-gather of dy; db from the whole dy]

The matmul and the bias add are two ops, as in tpsim (not a fused addmm), so both engines round alike.
"""

from __future__ import annotations

import math

import torch

from reference import regions, scope
from reference.module import Module, torch_dtype
from tpsim import validate
from tpsim.errors import ArgumentError, ShapeError
from tpsim.placement import chunk_sizes


class _Linear(Module):
    def __init__(
        self,
        comm,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        name: str | None = None,
        device=None,
        weight_split: int = 0,
    ):
        who = name or type(self).__name__
        validate.positive_int(who, "in_features", in_features)
        validate.positive_int(who, "out_features", out_features)
        super().__init__(comm, name, device)
        if init is None:
            raise ArgumentError(
                f"{self.name}: the reference runs on real numbers; init=None (shape-only) is for tpsim"
            )
        self.in_features, self.out_features = in_features, out_features
        self.sequence_parallel, self.seq_dim = sequence_parallel, seq_dim
        self.dtype = torch_dtype(dtype)
        self.weight = self.seeded((out_features, in_features), seed, init, dtype, weight_split)
        self.has_bias = bias
        if bias:
            b_init = "zeros" if init == "normal" else init
            split = 0 if weight_split == 0 else None  # column: cut with W; row: whole on every rank
            self.bias = self.seeded((out_features,), seed + 1, b_init, dtype, split)
        else:
            self.bias = None

    def check_features(self, x: torch.Tensor, want: int, what: str) -> None:
        if x.shape[-1] != want:
            raise ShapeError(
                f"{self.name} (rank {self.tp_rank} of {self.tp_size}): input has {x.shape[-1]} features in "
                f"its last dim (shape {tuple(x.shape)}); this rank takes {what} = {want}"
            )


class _SequenceGatherLinear(torch.autograd.Function):
    """SP: y = all_gather(x) W^T, keeping only x's shard; backward re-gathers it for dW (as Megatron)."""

    @staticmethod
    def forward(ctx, x, weight, comm, dim):
        total = comm.all_gather(x.contiguous(), dim=dim)  # (s, b, in): the whole sequence
        ctx.save_for_backward(x, weight)
        ctx.comm, ctx.dim, ctx.full = comm, dim, total.shape[dim]
        return torch.matmul(total, weight.t())  # (s, b, in) @ (in, out/t)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        c = ctx.comm
        total = c.all_gather(x.contiguous(), dim=ctx.dim, sizes=chunk_sizes(ctx.full, c.size))
        rows = math.prod(dy.shape[:-1])  # explicit: this rank may hold zero output features
        dw = dy.reshape(rows, dy.shape[-1]).t().matmul(total.reshape(rows, total.shape[-1]))  # (out/t, in)
        dx = torch.matmul(dy, weight)  # (s, b, in), a partial sum over the TP ranks
        return c.reduce_scatter(dx.contiguous(), dim=ctx.dim), dw, None, None


class ColumnParallelLinear(_Linear):
    """y = x W^T + b with W split by output features.  Returns this rank's y_i (S(-1)) or, with
    gather_output, the whole y; with skip_bias_add, (y, bias) for a later fused add."""

    def __init__(
        self,
        comm,
        in_features: int,
        out_features: int,
        *,
        gather_output: bool = False,
        skip_bias_add: bool = False,
        **kw,
    ):
        who = kw.get("name") or type(self).__name__
        validate.exclusive(who, gather_output=gather_output, sequence_parallel=kw.get("sequence_parallel"))
        super().__init__(comm, in_features, out_features, weight_split=0, **kw)
        self.gather_output, self.skip_bias_add = gather_output, skip_bias_add

    def forward(self, x: torch.Tensor):
        self.check_features(x, self.in_features, "in_features")
        if self.sequence_parallel:
            y = scope.mark(_SequenceGatherLinear.apply(x, self.weight, self.comm, self.seq_dim))
        else:
            y = torch.matmul(regions.copy_to(x, self.comm), self.weight.t())  # (..., in) @ (in, out/t)
        if self.bias is not None and not self.skip_bias_add:
            y = y + self.bias
        if self.gather_output:
            y = regions.gather_from(y, self.comm)
        return (y, self.bias) if self.skip_bias_add else y


class RowParallelLinear(_Linear):
    """y = x W^T + b with W split by input features; x arrives split by features (input_is_parallel)
    or whole (then this rank keeps its piece first)."""

    def __init__(self, comm, in_features: int, out_features: int, *, input_is_parallel: bool = True, **kw):
        super().__init__(comm, in_features, out_features, weight_split=1, **kw)
        self.input_is_parallel = input_is_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_is_parallel:
            self.check_features(x, self.weight.shape[1], "its piece of in_features")
        else:
            self.check_features(x, self.in_features, "in_features")
            x = regions.scatter_to(x, self.comm)
        partial = torch.matmul(x, self.weight.t())  # (..., in/t) @ (in/t, out): a partial sum
        if self.sequence_parallel and self.bias is not None:
            return scope.mark(_ReduceScatterAddBias.apply(partial, self.bias, self.comm, self.seq_dim))
        if self.sequence_parallel:
            return regions.sequence_reduce_scatter(partial, self.comm, self.seq_dim)
        y = regions.reduce_from(partial, self.comm)
        return y if self.bias is None else y + self.bias


class _ReduceScatterAddBias(torch.autograd.Function):
    """SP row-parallel output: y = reduce_scatter(partial) + b.  Backward all-gathers dy once and takes
    db from the whole of it, as tpsim does, so db needs no all-reduce (Megatron instead sums its own
    rows and all-reduces db with the other sequence-parallel grads)."""

    @staticmethod
    def forward(ctx, partial, bias, comm, dim):
        ctx.comm, ctx.dim, ctx.full = comm, dim, partial.shape[dim]
        return comm.reduce_scatter(partial.contiguous(), dim=dim) + bias

    @staticmethod
    def backward(ctx, dy):
        c = ctx.comm
        full = c.all_gather(dy.contiguous(), dim=ctx.dim, sizes=chunk_sizes(ctx.full, c.size))
        return full, full.reshape(math.prod(full.shape[:-1]), full.shape[-1]).sum(dim=0), None, None
