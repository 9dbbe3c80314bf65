"""Models and plans to try `python -m reference.audit` on: two correct, one with a catalogue bug.

    mlp / mlp_plan                       fc1 ColwiseParallel, fc2 RowwiseParallel: correct
    mlp / mlp_own_tp                     the same, in the form of a function (module, mesh) -> TP module
    block / block_sp_plan                a pre-LN GPT layer under sequence parallelism: correct
    block / block_sp_plan_missing_norm   the same plan without SequenceParallel on
                                         post_attention_layernorm: tpsim.bugs' sp_norm_grad_unreduced
                                         (NVIDIA/Megatron-LM#1446) written as a DTensor plan
    llama_block / llama_plan             a Llama layer (RMSNorm, GQA with 4 heads on 2 KV heads, RoPE,
                                         SwiGLU; reference/audit_llama.py): q/k/v/gate/up Colwise,
                                         o/down Rowwise: correct at t = 2
    llama_mqa_block / llama_plan_kv_replicated
                                         one KV head at t = 2: k_proj and v_proj left out of the plan,
                                         so every rank holds the whole KV head; forward is right, but
                                         each rank's k/v weight grads sum only its own query heads and
                                         are never all-reduced: tpsim.bugs' gqa_kv_head_grads_unreduced
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


def llama_block():
    from reference.audit_llama import LlamaBlock

    return LlamaBlock(8, 4, 2, 16)


def llama_mqa_block():
    from reference.audit_llama import LlamaBlock

    return LlamaBlock(8, 4, 1, 16)


def llama_plan() -> dict:
    col = ("q_proj", "k_proj", "v_proj")
    plan = {f"self_attn.{n}": ColwiseParallel() for n in col}
    plan |= {"self_attn.o_proj": RowwiseParallel(), "mlp.down_proj": RowwiseParallel()}
    return plan | {"mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel()}


def llama_plan_kv_replicated() -> dict:
    plan = llama_plan()
    del plan["self_attn.k_proj"], plan["self_attn.v_proj"]  # the one KV head kept whole on every rank
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
