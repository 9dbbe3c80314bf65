"""The global grad norm on one rank, and the double-counting mutation: mirrors tpsim/bugs/grad_norm.py.

`replicated` names the params whose gradient is the same on every TP rank (Megatron marks the others
`tensor_model_parallel`); they enter once, from rank 0, unless `double_count`.
"""

from __future__ import annotations

import torch


def grad_norm(module: torch.nn.Module, comm, replicated: set[str], *, double_count: bool = False) -> float:
    sq = torch.zeros(1, dtype=torch.float64)
    for name, p in module.named_parameters():
        if p.grad is not None and (name not in replicated or double_count or comm.rank == 0):
            sq = sq + p.grad.double().square().sum()
    return float(comm.all_reduce(sq).sqrt())
