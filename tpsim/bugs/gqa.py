"""GQA whose replicated KV heads' weight gradients are never all-reduced (tpsim/nn/gqa_qkv.py).

When t exceeds the g KV heads, r = t/g ranks hold copies of one KV head, and each copy's gradient
sums only that rank's query heads.  The correct layer all-reduces those rows in groups of r
(`GroupedQKVLinear._reduce_replicated`); this mutation swaps that call out, so each rank keeps its
own partial and the copies of one KV projection step apart.

The stored QKV weight holds the r copies (t * rows_per_rank rows), a layout with no unsharded twin,
so the detector compares with the correct layer on the same mesh and also looks at the KV rows
alone (`kv_rows`): claimed R over the ranks that share them, they must hold the same bits.
"""

from __future__ import annotations

from tpsim.bugs.patch import swap
from tpsim.darray import DArray, from_local
from tpsim.nn.gqa import GroupedQueryAttention
from tpsim.nn.gqa_qkv import GroupedQKVLinear
from tpsim.placement import Replicate

QKV = "grad.query_key_value.weight"


class KVHeadGradsUnreduced(GroupedQueryAttention):
    """backward with the replicated KV rows' all-reduce swapped for nothing: each copy keeps its partial."""

    def backward(self, dy: DArray) -> DArray:
        with swap(GroupedQKVLinear, "_reduce_replicated", lambda qkv: None):
            return super().backward(dy)


def kv_rows(head_dim: int):
    """A view for the detector: each rank's K and V rows of the QKV weight grad, claimed R.

    Valid for one KV head (g = 1, multi-query), which every rank holds: the last 2 d rows of each
    rank's (rows_per_rank, h) piece are its copy of the head's (2d, h) K and V rows.
    """

    def view(named: dict) -> dict:
        g = named[QKV]
        pieces = [s[-2 * head_dim :] for s in g.shards]  # (2d, h) per rank
        kv = from_local(pieces, g.mesh, [Replicate()] * g.mesh.ndim, shape=pieces[0].shape, run_check=False)
        return {**named, QKV + "[kv]": kv}

    return view
