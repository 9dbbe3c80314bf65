"""The global gradient norm of a TP module, and the mutation that counts replicated grads t times.

    ||g||^2 = sum over params of ||g_p||^2, each parameter once

A TP-sharded parameter's squares are split across the ranks: each adds its own shard's, and an
all-reduce sums them.  A replicated parameter (a LayerNorm weight, a row-parallel bias) has the
same gradient on every rank: it must enter once, from TP rank 0 (Megatron's
`param_is_not_tensor_parallel_duplicate`).  So must the rows a layer holds as copies inside a sharded
parameter (a KV head replicated over r ranks: `Module.duplicated_rows`).  `double_count=True` lets
every rank add it, so it is counted t times: ROCm/TransformerEngine#715 measured the reported norm
1.36-1.52x too large at TP = 8 (replicated weights marked tensor-parallel); NVIDIA-NeMo/RL#3788
fixes the same in a DTensor get_grad_norm.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import from_local
from tpsim.placement import Partial, Placement, Replicate, Shard


def grad_norm(module, *, double_count: bool = False) -> float:
    """sqrt(sum of squares of every gradient): one all-reduce on the TP mesh dim (1-D meshes)."""
    mesh, tp = module.mesh, module.tp
    per_device = [np.zeros((), np.float64) for _ in range(mesh.size)]
    for owner, key, g in _grads(module):
        sharded = isinstance(g.placements[tp], Shard)
        for d in range(mesh.size):
            if sharded or double_count or mesh.group_rank(d, tp) == 0:
                mine = np.asarray(g.shards[d], np.float64)
                copy = None if double_count else owner.duplicated_rows(key, mesh.group_rank(d, tp))
                if copy is not None:  # a replicated KV head's rows: counted on its first rank only
                    mine = np.delete(mine, np.arange(mine.shape[0])[copy], axis=0)
                per_device[d] = per_device[d] + np.square(mine).sum()
    placements: list[Placement] = [Replicate()] * mesh.ndim
    placements[tp] = Partial()
    squares = from_local(per_device, mesh, placements, shape=(), run_check=False)
    total = squares.redistribute([Replicate()] * mesh.ndim, label="grad_norm")  # the all-reduce
    return float(np.sqrt(total.shards[0]))


def _grads(module):
    """(module that owns it, key, grad) for every gradient in the tree."""
    for key, g in module.grads.items():
        yield module, key, g
    for child in module.children.values():
        yield from _grads(child)


def double_counted_grad_norm(module) -> float:
    """grad_norm with every rank adding the replicated grads (the mutation)."""
    return grad_norm(module, double_count=True)
