"""Vocab-parallel embedding (Megatron): the table split by rows, i.e. by token id.

    E = [E_1; E_2; ...; E_t]      (V', h); rank i holds rows [lo_i, hi_i)

Rank i looks up the ids that fall in its rows and writes zeros for the others, so
its (s, b, h) output is one term of a sum (P); the sum is the lookup on the whole table.
    forward:  all-reduce of y, P -> R (reduce_from)     [SP: reduce-scatter, P -> S(0), the sequence]
    backward: identity, then dE_i = dy scatter-added into rank i's rows (np.add.at): no communication
              [SP: all-gather of dy, S(0) -> R, first]

Padding, as Megatron's `make_vocab_size_divisible_by` x t: with `pad_to_multiple_of=m`
the table has V' = the smallest multiple of m*t >= V rows, V'/t per rank (GPT-2:
V = 50257, m = 128, t = 8 gives V' = 51200).  The padded rows V..V'-1 are initialised
like the others but never looked up: an id >= V is rejected.  Their logits are not
zero, so the loss must mask them (loss.py).  Without padding V' = V and the rows split
by the torch.chunk rule (V = 10 over t = 4: 3, 3, 3, 1).  The weight is drawn row by
row, so the real rows are the same numbers whatever the padding, hence whatever t.

VocabParallelLogits ties the output layer to the table: logits = x E^T, split by
vocab (S(-1)), as a ColumnParallelLinear(h, V', bias=False) whose weight is E.
"""

from __future__ import annotations

import math

import numpy as np

from tpsim.darray import DArray, distribute, from_local
from tpsim.errors import DTypeError, PlacementError, ShapeError, TokenIdError
from tpsim.meta import MetaArray, asarray, is_meta
from tpsim.nn import ops, regions
from tpsim.nn.init import global_weight
from tpsim.nn.layout import grad_placements, on_tp
from tpsim.nn.module import Module
from tpsim.placement import Partial, Replicate, Shard, local_slices


def padded_vocab_size(vocab_size: int, tp_size: int, pad_to_multiple_of: int | None = None) -> int:
    """V' = V rounded up to a multiple of pad_to_multiple_of * tp_size (V itself when None)."""
    for what, v, ok in (("vocab_size", vocab_size, False), ("pad_to_multiple_of", pad_to_multiple_of, True)):
        if not (ok and v is None) and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ShapeError(f"{what} = {v!r} must be an int >= 1" + (" or None (no padding)" if ok else ""))
    if pad_to_multiple_of is None:
        return vocab_size
    step = pad_to_multiple_of * tp_size
    return -(-vocab_size // step) * step


class VocabParallelEmbedding(Module):
    """y = E[ids] with E (V', h) split by rows across TP: one all-reduce forward, none backward."""

    def __init__(
        self,
        mesh,
        vocab_size: int,
        hidden: int,
        *,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        pad_to_multiple_of: int | None = None,
        sequence_parallel: bool = False,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ShapeError(f"{self.name}: hidden = {hidden!r} must be an int >= 1")
        self.vocab_size, self.hidden, self.sequence_parallel = vocab_size, hidden, sequence_parallel
        self.padded_vocab_size = padded_vocab_size(vocab_size, self.tp_size, pad_to_multiple_of)
        w = global_weight((self.padded_vocab_size, hidden), seed, init, dtype)  # (V', h)
        self.param("weight", distribute(w, mesh, self.placements(Shard(0))))

    def forward(self, ids) -> DArray:
        ids = token_ids(self, ids, self.vocab_size, "token id")
        table = self.params["weight"]
        self.save(ids=ids)
        y = vocab_local(  # (s, b) -> (s, b, h), a partial sum over the TP ranks
            self,
            "embedding_lookup",
            _lookup,
            vocab_ranges(table, 0),
            ids,
            table,
            placements=on_tp(ids, self.tp, Partial()),
            shape=(*ids.shape, self.hidden),
        )
        if self.sequence_parallel:
            return regions.sequence_reduce_scatter(y, self.tp, 0)
        return regions.reduce_from(y, self.tp)

    def backward(self, dy: DArray) -> None:
        """Accumulates dE into grads["weight"]; token ids have no gradient, so it returns None."""
        (ids,) = self.saved("ids")
        if self.sequence_parallel:
            dy = regions.sequence_reduce_scatter_backward(dy, self.tp, 0)
        else:
            dy = regions.reduce_from_backward(dy, self.tp)
        table = self.params["weight"]
        dw = vocab_local(
            self,
            "embedding_dweight",
            _lookup_grad,
            vocab_ranges(table, 0),
            ids,
            dy,
            placements=grad_placements(ids, table),
            shape=table.shape,
        )
        self.accumulate("weight", dw)
        return None


class VocabParallelLogits(Module):
    """Output layer tied to a VocabParallelEmbedding: logits = x E^T, (s, b, h) -> (s, b, V') S(-1).

    forward:  copy_to (identity)   [SP: all-gather of the sequence]
    backward: all-reduce of dx     [SP: reduce-scatter of dx]; dE_i = dlogits_i^T x, added to the
              embedding's grads["weight"] (the tied weight gets both gradients)
    """

    def __init__(self, embedding: VocabParallelEmbedding, *, name: str | None = None):
        super().__init__(embedding.mesh, name, embedding.tp)
        self.embedding = embedding  # not a child: the table belongs to the embedding
        self.sequence_parallel = embedding.sequence_parallel

    def forward(self, x: DArray) -> DArray:
        if x.shape[-1] != self.embedding.hidden:
            raise ShapeError(
                f"{self.name}: x has hidden size {x.shape[-1]} (shape {x.shape}) but the tied table "
                f"{self.embedding.name} has hidden = {self.embedding.hidden}"
            )
        full = (
            regions.sequence_gather(x, self.tp, 0) if self.sequence_parallel else regions.copy_to(x, self.tp)
        )
        self.save(x=x if self.sequence_parallel else full)
        return self.local(
            "logits",
            lambda a, e: ops.matmul(a, ops.transpose(e)[0]),  # (s, b, h) @ (h, V'/t)
            full,
            self.embedding.params["weight"],
            placements=on_tp(full, self.tp, Shard(full.ndim - 1)),
        )

    def backward(self, dlogits: DArray) -> DArray:
        (x,) = self.saved("x")
        full = regions.sequence_gather(x, self.tp, 0) if self.sequence_parallel else x

        def dweight(g, a):  # (V'/t, s*b) @ (s*b, h); explicit sizes: a rank may hold 0 columns
            n = math.prod(g.shape[:-1])
            return ops.matmul(ops.transpose(g.reshape(n, g.shape[-1]))[0], a.reshape(n, a.shape[-1]))

        grad = grad_placements(full, self.embedding.params["weight"])
        dw = self.local("logits_dweight", dweight, dlogits, full, placements=grad)
        self.embedding.accumulate("weight", dw)
        dx = self.local(
            "logits_dinput",
            lambda g, e: ops.matmul(g, e),  # (s, b, V'/t) @ (V'/t, h), a partial sum
            dlogits,
            self.embedding.params["weight"],
            placements=on_tp(full, self.tp, Partial()),
        )
        if self.sequence_parallel:
            return regions.sequence_gather_backward(dx, self.tp, 0)
        return regions.copy_to_backward(dx, self.tp)


def token_ids(module: Module, ids, vocab_size: int, what: str, placements=None) -> DArray:
    """Integer ids as a DArray replicated on TP, each checked to lie in [0, vocab_size)."""
    ids = ids if isinstance(ids, DArray) else asarray(ids)
    if ids.dtype.kind not in "iu":
        raise DTypeError(f"{module.name}: {what}s need an integer dtype, got {ids.dtype}")
    if not isinstance(ids, DArray):
        _check_range(module, ids, vocab_size, what)
        return distribute(ids, module.mesh, placements or [Replicate()] * module.mesh.ndim)
    if not isinstance(ids.placements[module.tp], Replicate):
        raise PlacementError(
            f"{module.name}: {what}s must be replicated (R) on the TP mesh dim {module.mesh.names[module.tp]}"
            f"; got placements {ids.placements}"
        )
    _check_range(module, ids.full(), vocab_size, what)
    return ids


def _check_range(module, ids, vocab_size: int, what: str) -> None:
    if is_meta(ids):  # shape-only ids have no values to check
        return
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if len(bad):
        pos = tuple(int(i) for i in bad[0])
        raise TokenIdError(
            f"{module.name}: {what} {int(ids[pos])} at position {pos} is out of range; valid ids are "
            f"0..{vocab_size - 1} (vocab_size {vocab_size}; padded rows are never looked up); "
            f"{len(bad)} id(s) out of range in all"
        )


def vocab_ranges(x: DArray, dim: int) -> list[tuple[int, int]]:
    """Per device, the [lo, hi) of tensor dim `dim` (the vocab) that its shard of x holds."""
    slices = (local_slices(x.shape, x.mesh, x.placements, d)[dim] for d in range(x.mesh.size))
    return [(sl.start, sl.stop) for sl in slices]


def vocab_local(module: Module, name: str, fn, ranges, *args, placements, shape=None) -> DArray:
    """Module.local where fn(lo, hi, *shards) is also told the vocab range [lo, hi) of its device."""
    mesh, shards = module.mesh, []
    for d in range(mesh.size):
        result = fn(*ranges[d], *(a.shards[d] if isinstance(a, DArray) else a for a in args))
        out, flops, nbytes = result
        mesh.compute(d, name, flops, nbytes, out.dtype, ops.gemm_of(result))
        shards.append(out)
    return from_local(shards, mesh, placements, shape=shape, run_check=False)


def _lookup(lo: int, hi: int, ids, table):
    """Rows lo..hi-1 of the table for the ids among them, zeros for the others (a gather: no FLOPs)."""
    shape = (*ids.shape, table.shape[-1])
    out: MetaArray | np.ndarray
    if is_meta(ids) or is_meta(table):  # which rows the ids pick is data
        out = MetaArray(shape, table.dtype)
    else:
        mine = (ids >= lo) & (ids < hi)
        out = np.zeros(shape, table.dtype)
        out[mine] = table[ids[mine] - lo]
    return out, 0, ids.nbytes + 2 * out.nbytes  # read the ids and the rows, write the rows


def _lookup_grad(lo: int, hi: int, ids, dy):
    """dE rows lo..hi-1: each dy row added into the row of its id, in token order (np.add.at)."""
    shape = (hi - lo, dy.shape[-1])
    out: MetaArray | np.ndarray
    if is_meta(ids) or is_meta(dy):  # which rows the ids pick is data
        out = MetaArray(shape, dy.dtype)
    else:
        mine = (ids >= lo) & (ids < hi)
        out = np.zeros(shape, dy.dtype)
        np.add.at(out, ids[mine] - lo, dy[mine])
    return out, dy.size, ids.nbytes + dy.nbytes + out.nbytes  # counts every dy element: shapes only
