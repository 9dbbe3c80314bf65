"""Models and plans to try `python -m reference.audit` on: two correct, one with a catalogue bug.

    mlp / mlp_plan                       fc1 ColwiseParallel, fc2 RowwiseParallel: correct
    mlp / mlp_own_tp                     the same, in the form of a function (module, mesh) -> TP module
    block / block_sp_plan                a pre-LN GPT layer under sequence parallelism: correct
    block / block_sp_plan_missing_norm   the same plan without SequenceParallel on
                                         post_attention_layernorm: tpsim.bugs' sp_norm_grad_unreduced
                                         (NVIDIA/Megatron-LM#1446) written as a DTensor plan
    grad_norm_double_counted             a grad-norm function (--grad-norm) that sums every rank's local
                                         squares: tpsim.bugs' grad_norm_double_counted (NVIDIA-NeMo/RL#3788)

    python -m reference.audit --builder reference.audit_examples:block \\
        --plan reference.audit_examples:block_sp_plan_missing_norm \\
        --input-layout shard0 --output-layout shard0
"""

from __future__ import annotations

from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

from reference import dtensor_plan


def mlp():
    return dtensor_plan.MLP(8, 16)


def mlp_plan() -> dict:
    return {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()}


def block():
    return dtensor_plan.Block(8, 2, 16)


def block_sp_plan() -> dict:
    return dtensor_plan.plan("block", sp=True)


def block_sp_plan_missing_norm() -> dict:
    plan = dtensor_plan.plan("block", sp=True)
    del plan["post_attention_layernorm"]
    return plan


def mlp_own_tp(module, mesh):
    """The form for a user's own TP code: take the unsharded module and the mesh, return the TP module.
    (Here it is the DTensor plan again; its collectives are then not predicted, as tpsim cannot see
    inside arbitrary code.)"""
    from torch.distributed.tensor.parallel import parallelize_module

    return parallelize_module(module, mesh, mlp_plan())


def grad_norm_double_counted(module) -> float:
    """sqrt(all_reduce(sum of each rank's local squares)): right for sharded grads, but a replicated
    grad (a Rowwise bias) is added once per rank, t times in all."""
    import torch
    import torch.distributed as dist

    from reference.compat import dtensor_names

    dtensor = dtensor_names()[0]
    sq = torch.zeros(1, dtype=torch.float64)
    for p in module.parameters():
        g = p.grad.to_local() if isinstance(p.grad, dtensor) else p.grad
        sq += g.double().square().sum()
    dist.all_reduce(sq)
    return float(sq.sqrt())
