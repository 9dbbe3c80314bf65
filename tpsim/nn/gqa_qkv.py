"""The fused QKV projection of grouped-query attention, and how its KV heads meet the TP degree.

n query heads share g key/value heads (g = n: multi-head; g = 1: multi-query), n/g queries per KV
head; d features per head; t TP ranks.  Each rank holds n/t query heads and the KV heads they read:

    t divides g   split:      rank i holds KV heads i g/t .. (i+1) g/t - 1            (Megatron)
    g divides t   replicated: rank i holds KV head i // r, r = t/g ranks share it     (vLLM)

Other t are refused, naming the t that work.  The weight is fused per rank, per KV head:

    rank i: [q heads of KV head k on rank i; k_k; v_k] for each KV head k it holds    each block (d, h)

which for t <= g is Megatron's layout; Shard(0) of this (rows, h) array is each rank's piece.
With replication the stored array holds r copies of each KV head's rows (the expanded weight), and
each copy's gradient is one rank's share: it sums the queries of that rank only.  So after the
weight gradient, each KV head's rows (and bias) are all-reduced over the r ranks that share it
(one fused all-reduce of (2d, h [+1]) per rank, in groups of r), and the copies stay equal.

    forward:  copy_to (identity)                    [SP: all-gather of x]
    backward: all-reduce of the KV grads in groups of r (only when replicated), then the all-reduce
              of dx over all t                      [SP: all-gather x again first; reduce-scatter dx]

dx needs no special care: each rank's dq and dk, dv are its own queries' shares, so their sum over
the t ranks is the whole gradient, each KV head counted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tpsim.collectives import all_reduce
from tpsim.darray import DArray, from_local
from tpsim.errors import ShapeError
from tpsim.meta import MetaArray, is_meta
from tpsim.nn import ops, regions
from tpsim.nn.fused import install
from tpsim.nn.init import global_weight
from tpsim.nn.linear import ColumnParallelLinear
from tpsim.placement import Partial


def valid_tp(num_heads: int, num_kv_heads: int, limit: int = 64) -> list[int]:
    """TP degrees that give whole query heads per rank and whole (split or replicated) KV heads."""
    return [
        t
        for t in range(1, min(num_heads, limit) + 1)
        if num_heads % t == 0 and (num_kv_heads % t == 0 or t % num_kv_heads == 0)
    ]


@dataclass(frozen=True)
class KVLayout:
    """Heads per rank: n_local query heads, kv_local KV heads, each KV head on `replicas` ranks."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    tp: int

    def __post_init__(self):
        n, g, t = self.num_heads, self.num_kv_heads, self.tp
        if g < 1 or n % g:
            raise ShapeError(f"num_heads = {n} must be a multiple of num_kv_heads = {g} (whole query groups)")
        if t not in valid_tp(n, g, max(t, 64)):
            raise ShapeError(
                f"TP degree {t} does not fit num_heads = {n} with num_kv_heads = {g}: t must divide the "
                f"heads and divide or be a multiple of the KV heads; valid t: {valid_tp(n, g)}"
            )

    @property
    def n_local(self) -> int:
        return self.num_heads // self.tp

    @property
    def kv_local(self) -> int:
        return max(self.num_kv_heads // self.tp, 1)

    @property
    def replicas(self) -> int:
        return max(self.tp // self.num_kv_heads, 1)

    @property
    def rows_per_rank(self) -> int:
        return (self.n_local + 2 * self.kv_local) * self.head_dim

    def rank_blocks(self, rank: int) -> list[tuple[str, int]]:
        """Rank `rank`'s rows, head by head: ("q", query head) or ("k"|"v", KV head), in order."""
        per_kv = self.n_local // self.kv_local  # query heads of one KV head on this rank
        out = []
        for j in range(self.kv_local):
            kv = rank * self.kv_local + j if self.replicas == 1 else rank // self.replicas
            first = rank * self.n_local + j * per_kv
            out += [("q", first + i) for i in range(per_kv)] + [("k", kv), ("v", kv)]
        return out

    def fuse(self, q, k, v):
        """The stored (t * rows_per_rank, ...) array from the unsharded q (n d, ...), k, v (g d, ...)."""
        rows = self.tp * self.rows_per_rank
        if is_meta(q):
            return MetaArray((rows, *q.shape[1:]), q.dtype)
        d, parts = self.head_dim, dict(q=q, k=k, v=v)
        return np.concatenate(
            [parts[w][h * d : (h + 1) * d] for r in range(self.tp) for w, h in self.rank_blocks(r)], axis=0
        )


class GroupedQKVLinear(ColumnParallelLinear):
    """x (s, b, h) -> [q, k, v] of this rank's heads, (s, b, rows_per_rank) S(-1); see the module doc."""

    def __init__(
        self,
        mesh,
        hidden: int,
        layout: KVLayout,
        *,
        bias: bool = False,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        **kw,
    ):
        rows = layout.tp * layout.rows_per_rank
        super().__init__(mesh, hidden, rows, bias=bias, seed=seed, init=None, dtype=dtype, **kw)
        self.layout = layout
        n, g, d = layout.num_heads, layout.num_kv_heads, layout.head_dim
        w = [global_weight((m * d, hidden), seed + i, init, dtype) for i, m in enumerate((n, g, g))]
        install(self, "weight", layout.fuse(*w))
        if bias:
            b_init = "zeros" if init == "normal" else init
            b = [global_weight((m * d,), seed + 3 + i, b_init, dtype) for i, m in enumerate((n, g, g))]
            install(self, "bias", layout.fuse(*b))

    def duplicated_rows(self, key: str, tp_rank: int) -> slice | None:
        """A replicated KV head's K and V rows (after the rank's query rows) on all but the first of
        the r ranks that share it."""
        lay = self.layout
        if key not in self.params or lay.replicas == 1 or tp_rank % lay.replicas == 0:
            return None
        return slice(lay.n_local * lay.head_dim, None)

    def backward(self, dy: DArray) -> DArray:
        (x,) = self.saved("x")
        full = regions.sequence_gather(x, self.tp, self.seq_dim) if self.sequence_parallel else x
        earlier = {k: self.grads.pop(k) for k in list(self.grads)}  # reduce this step's grads only
        self.weight_grads(full, dy)  # dW takes the weight's own split, S(0) on TP
        if self.layout.replicas > 1:
            self._reduce_replicated()
        for key, old in earlier.items():
            new = self.grads.pop(key)
            self.grads[key] = old
            self.accumulate(key, new)
        out = list(full.placements)
        out[self.tp] = Partial()
        dx = self.local(
            "linear_dinput", lambda g, wl: ops.matmul(g, wl), dy, self.params["weight"], placements=out
        )
        if self.sequence_parallel:
            return regions.sequence_gather_backward(dx, self.tp, self.seq_dim)
        return regions.copy_to_backward(dx, self.tp)

    def _reduce_replicated(self) -> None:
        """All-reduce the KV rows' grads (and bias) over the r ranks sharing each KV head, fused."""
        rows = 2 * self.layout.head_dim  # replicated: one KV head per rank, its k and v rows last
        keys = [k for k in ("weight", "bias") if k in self.grads]
        gw = [self.grads[k] for k in keys]
        buf = self.local(
            "kv_grads_pack",
            lambda *gs: _pack(rows, *gs),
            *gw,
            placements=list(gw[0].placements),
            shape=(self.mesh.shape[self.tp] * rows, self.in_features + len(keys) - 1),
        )
        r, groups = self.layout.replicas, []
        for devs in self.mesh.groups(self.tp):
            groups += [devs[i : i + r] for i in range(0, len(devs), r)]
        summed = all_reduce(list(buf.shards), self.mesh, groups=groups)
        buf = from_local(summed, self.mesh, list(buf.placements), shape=buf.shape)
        for i, k in enumerate(keys):
            g = self.grads.pop(k)
            new = self.local(
                "kv_grads_unpack",
                lambda a, b, i=i: _unpack(rows, i, a, b),
                g,
                buf,
                placements=list(g.placements),
            )
            del g
            new.recategorize("grads")
            self.grads[k] = new


def _pack(rows: int, gw, gb=None):
    """The last `rows` rows of the weight grad, with the bias grad's as one more column: (rows, h [+1])."""
    h = gw.shape[-1] + (gb is not None)
    out: Any
    if is_meta(gw):
        out = MetaArray((rows, h), gw.dtype)
    else:
        out = gw[-rows:] if gb is None else np.concatenate([gw[-rows:], gb[-rows:, None]], axis=1)
        out = np.ascontiguousarray(out)
    return out, 0, 2 * out.nbytes


def _unpack(rows: int, which: int, g, buf):
    """g with its last `rows` rows (weight: which = 0) or entries (bias: 1) taken from the reduced buffer."""
    if is_meta(g):
        return MetaArray(g.shape, g.dtype), 0, 2 * buf.nbytes
    out = g.copy()
    out[-rows:] = buf[:, -1] if which else buf[:, : g.shape[-1]]
    return out, 0, 2 * buf.nbytes
