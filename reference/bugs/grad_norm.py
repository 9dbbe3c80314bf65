"""The global grad norm on one rank, and the double-counting mutation: mirrors tpsim/bugs/grad_norm.py.

`replicated` names the params whose gradient is the same on every TP rank (Megatron marks the others
`tensor_model_parallel`); they enter once, from rank 0, unless `double_count`.  So do the rows a
module holds as copies (`duplicated_rows`: a KV head replicated over r ranks).
"""

from __future__ import annotations

import torch


def grad_norm(module: torch.nn.Module, comm, replicated: set[str], *, double_count: bool = False) -> float:
    sq = torch.zeros(1, dtype=torch.float64)
    for prefix, owner in module.named_modules():
        for key, p in owner.named_parameters(recurse=False):
            name = f"{prefix}.{key}" if prefix else key
            if p.grad is None or (name in replicated and not double_count and comm.rank != 0):
                continue
            g = p.grad.double()
            copy = None if double_count else getattr(owner, "duplicated_rows", lambda _: None)(key)
            if copy is not None:  # a replicated KV head's rows: counted on its first rank only
                g = g[: copy.start]
            sq = sq + g.square().sum()
    return float(comm.all_reduce(sq).sqrt())
