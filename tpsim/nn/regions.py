"""Megatron's communication regions: conjugate pairs, each a forward and its backward.

On the tensor-parallel mesh dim (t devices), with the placement each one expects:

    copy_to        forward: identity           R -> R    backward: all-reduce       P -> R
    reduce_from    forward: all-reduce         P -> R    backward: identity         R -> R
    gather_from    forward: all-gather         S(-1) -> R  backward: split (local)  R -> S(-1)
    scatter_to     forward: split (local)      R -> S(-1)  backward: all-gather     S(-1) -> R
    sequence_gather        (SP) forward: all-gather S(s) -> R,   backward: reduce-scatter P -> S(s)
    sequence_reduce_scatter (SP) forward: reduce-scatter P -> S(s), backward: all-gather S(s) -> R
    sequence_scatter       (SP) forward: split (local) R -> S(s), backward: all-gather S(s) -> R

A layer whose replicated params see only a sequence shard (LayerNorm under SP) gets partial grads:
it stacks them and runs copy_to_backward once on the stack, as the reference's copy_to on
torch.stack does.

Megatron calls copy_to "f" and reduce_from "g".  Each forward function has a
`*_backward` twin; layers call the twin in their explicit backward.  Every
collective is recorded under the calling module and its direction.
"""

from __future__ import annotations

from tpsim.darray import DArray
from tpsim.errors import PlacementError
from tpsim.nn.layout import on_tp
from tpsim.placement import Partial, Replicate, Shard


def _expect(x: DArray, tp: int, what: str, ok) -> None:
    if not ok(x.placements[tp]):
        raise PlacementError(
            f"{what}: got {x.placements[tp]!r} on the TP mesh dim {x.mesh.names[tp]} "
            f"(placements {x.placements})"
        )


def copy_to(x: DArray, tp: int) -> DArray:
    """f: the input enters the parallel region; every TP rank already holds all of it."""
    _expect(x, tp, "copy_to (R)", lambda p: isinstance(p, Replicate))
    return x


def copy_to_backward(dy: DArray, tp: int) -> DArray:
    """f backward: each rank's input gradient is a partial sum; all-reduce it."""
    _expect(dy, tp, "copy_to backward (P)", lambda p: isinstance(p, Partial))
    return dy.redistribute(on_tp(dy, tp, Replicate()))


def reduce_from(x: DArray, tp: int) -> DArray:
    """g: partial sums leave the parallel region through an all-reduce."""
    _expect(x, tp, "reduce_from (P)", lambda p: isinstance(p, Partial))
    return x.redistribute(on_tp(x, tp, Replicate()))


def reduce_from_backward(dy: DArray, tp: int) -> DArray:
    """g backward: the gradient is replicated already."""
    _expect(dy, tp, "reduce_from backward (R)", lambda p: isinstance(p, Replicate))
    return dy


def gather_from(x: DArray, tp: int) -> DArray:
    """Gather the last dim, which the TP ranks hold in pieces."""
    _expect(x, tp, "gather_from (S(-1))", lambda p: isinstance(p, Shard) and p.dim == x.ndim - 1)
    return x.redistribute(on_tp(x, tp, Replicate()))


def gather_from_backward(dy: DArray, tp: int) -> DArray:
    _expect(dy, tp, "gather_from backward (R)", lambda p: isinstance(p, Replicate))
    return dy.redistribute(on_tp(dy, tp, Shard(dy.ndim - 1)))


def scatter_to(x: DArray, tp: int) -> DArray:
    """Keep each TP rank's piece of the last dim (local: no bytes move)."""
    _expect(x, tp, "scatter_to (R)", lambda p: isinstance(p, Replicate))
    return x.redistribute(on_tp(x, tp, Shard(x.ndim - 1)))


def scatter_to_backward(dy: DArray, tp: int) -> DArray:
    _expect(dy, tp, "scatter_to backward (S(-1))", lambda p: isinstance(p, Shard) and p.dim == dy.ndim - 1)
    return dy.redistribute(on_tp(dy, tp, Replicate()))


def sequence_gather(x: DArray, tp: int, seq_dim: int) -> DArray:
    """SP: before a column-parallel layer, all-gather the sequence."""
    _expect(x, tp, f"sequence_gather (S({seq_dim}))", lambda p: p == Shard(seq_dim))
    return x.redistribute(on_tp(x, tp, Replicate()))


def sequence_gather_backward(dy: DArray, tp: int, seq_dim: int) -> DArray:
    _expect(dy, tp, "sequence_gather backward (P)", lambda p: isinstance(p, Partial))
    return dy.redistribute(on_tp(dy, tp, Shard(seq_dim)))


def sequence_reduce_scatter(x: DArray, tp: int, seq_dim: int) -> DArray:
    """SP: after a row-parallel layer, reduce-scatter the partial sums along the sequence."""
    _expect(x, tp, "sequence_reduce_scatter (P)", lambda p: isinstance(p, Partial))
    return x.redistribute(on_tp(x, tp, Shard(seq_dim)))


def sequence_reduce_scatter_backward(dy: DArray, tp: int, seq_dim: int) -> DArray:
    _expect(dy, tp, f"sequence_reduce_scatter backward (S({seq_dim}))", lambda p: p == Shard(seq_dim))
    return dy.redistribute(on_tp(dy, tp, Replicate()))


def sequence_scatter(x: DArray, tp: int, seq_dim: int) -> DArray:
    """SP: keep each TP rank's rows of a replicated sequence (local: no bytes move); GPT's embedding."""
    _expect(x, tp, "sequence_scatter (R)", lambda p: isinstance(p, Replicate))
    return x.redistribute(on_tp(x, tp, Shard(seq_dim)))


def sequence_scatter_backward(dy: DArray, tp: int, seq_dim: int) -> DArray:
    _expect(dy, tp, f"sequence_scatter backward (S({seq_dim}))", lambda p: p == Shard(seq_dim))
    return dy.redistribute(on_tp(dy, tp, Replicate()))
