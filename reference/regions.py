"""Megatron's communication regions as autograd Functions: one rank's view of tpsim/nn/regions.py.

On the tensor-parallel group of t ranks (a `reference.comm.Comm`), each a conjugate pair:

    copy_to                  forward: identity         backward: all-reduce          (Megatron's f)
    reduce_from              forward: all-reduce       backward: identity            (Megatron's g)
    gather_from              forward: all-gather(-1)   backward: keep my piece of -1 (local)
    scatter_to               forward: keep my piece    backward: all-gather(-1)
    sequence_gather          forward: all-gather(seq)  backward: reduce-scatter(seq) (SP)
    sequence_reduce_scatter  forward: reduce-scatter   backward: all-gather(seq)     (SP)
    sequence_scatter         forward: keep my rows     backward: all-gather(seq)     (SP, GPT embedding)

Replicated params used on a sequence shard (LayerNorm under SP) have partial grads: the layer runs
copy_to once on torch.stack of them, so one all-reduce carries them all, as tpsim's stacked buffer.

Pieces follow the torch.chunk rule, as tpsim's placements do, so uneven splits are allowed.
"""

from __future__ import annotations

import torch

from reference import scope
from tpsim.placement import chunk_offsets, chunk_sizes


def piece(x: torch.Tensor, dim: int, rank: int, size: int) -> torch.Tensor:
    """Rank `rank`'s torch.chunk piece of x along dim (may be empty)."""
    n = x.shape[dim]
    return x.narrow(dim, chunk_offsets(n, size)[rank], chunk_sizes(n, size)[rank])


class _CopyTo(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dy):
        return ctx.comm.all_reduce(dy), None


class _ReduceFrom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        return comm.all_reduce(x)

    @staticmethod
    def backward(ctx, dy):
        return dy, None


class _GatherFrom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.all_gather(x.contiguous(), dim=x.ndim - 1)

    @staticmethod
    def backward(ctx, dy):
        c = ctx.comm
        return piece(dy, dy.ndim - 1, c.rank, c.size).contiguous(), None


class _ScatterTo(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm, ctx.full = comm, x.shape[-1]
        return piece(x, x.ndim - 1, comm.rank, comm.size).contiguous()

    @staticmethod
    def backward(ctx, dy):
        c = ctx.comm
        return c.all_gather(dy.contiguous(), dim=dy.ndim - 1, sizes=chunk_sizes(ctx.full, c.size)), None


class _SequenceGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm, dim):
        ctx.comm, ctx.dim = comm, dim
        return comm.all_gather(x.contiguous(), dim=dim)

    @staticmethod
    def backward(ctx, dy):
        return ctx.comm.reduce_scatter(dy.contiguous(), dim=ctx.dim), None, None


class _SequenceReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm, dim):
        ctx.comm, ctx.dim, ctx.full = comm, dim, x.shape[dim]
        return comm.reduce_scatter(x.contiguous(), dim=dim)

    @staticmethod
    def backward(ctx, dy):
        c = ctx.comm
        return c.all_gather(dy.contiguous(), dim=ctx.dim, sizes=chunk_sizes(ctx.full, c.size)), None, None


class _SequenceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm, dim):
        ctx.comm, ctx.dim, ctx.full = comm, dim, x.shape[dim]
        return piece(x, dim, comm.rank, comm.size).contiguous()

    @staticmethod
    def backward(ctx, dy):
        c = ctx.comm
        return c.all_gather(dy.contiguous(), dim=ctx.dim, sizes=chunk_sizes(ctx.full, c.size)), None, None


def copy_to(x: torch.Tensor, comm) -> torch.Tensor:
    """f: enter the parallel region; backward all-reduces the partial input gradients."""
    return scope.mark(_CopyTo.apply(x, comm))


def reduce_from(x: torch.Tensor, comm) -> torch.Tensor:
    """g: all-reduce the partial sums; backward passes the replicated gradient through."""
    return scope.mark(_ReduceFrom.apply(x, comm))


def gather_from(x: torch.Tensor, comm) -> torch.Tensor:
    """All-gather the last dim; backward keeps this rank's piece of the gradient."""
    return scope.mark(_GatherFrom.apply(x, comm))


def scatter_to(x: torch.Tensor, comm) -> torch.Tensor:
    """Keep this rank's piece of the last dim; backward all-gathers the gradient."""
    return scope.mark(_ScatterTo.apply(x, comm))


def sequence_gather(x: torch.Tensor, comm, dim: int = 0) -> torch.Tensor:
    """SP: all-gather the sequence dim; backward reduce-scatters the gradient along it."""
    return scope.mark(_SequenceGather.apply(x, comm, dim))


def sequence_reduce_scatter(x: torch.Tensor, comm, dim: int = 0) -> torch.Tensor:
    """SP: reduce-scatter partial sums along the sequence dim; backward all-gathers the gradient."""
    return scope.mark(_SequenceReduceScatter.apply(x, comm, dim))


def sequence_scatter(x: torch.Tensor, comm, dim: int = 0) -> torch.Tensor:
    """SP: keep this rank's rows of a replicated x along the sequence dim (no bytes); backward
    all-gathers the gradient (Megatron's scatter_to_sequence_parallel_region)."""
    return scope.mark(_SequenceScatter.apply(x, comm, dim))

