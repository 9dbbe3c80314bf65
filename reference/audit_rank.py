"""One rank of `python -m reference.audit`: the user's module, parallelized by their plan, forward and
backward on this rank's piece, each phase under CommDebugMode."""

from __future__ import annotations

import importlib
import inspect
from collections import Counter

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import parallelize_module

from reference.compat import comm_debug_mode, dtensor_names

DTensor, Shard, Replicate, Partial = dtensor_names()
CommDebugMode = comm_debug_mode()
KINDS = {"all_reduce": "all_reduce", "allreduce_": "all_reduce", "all_gather_into_tensor": "all_gather",
         "_allgather_base_": "all_gather", "allgather_": "all_gather",
         "reduce_scatter_tensor": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter",
         "reduce_scatter_": "reduce_scatter"}


def load(spec: str):
    """'package.module:function' -> the function."""
    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError(f"{spec!r}: expected module:function")
    return getattr(importlib.import_module(mod), fn)


def parallelize(module, plan_spec: str, mesh):
    """The plan function returns a parallelize_module plan (a dict), or takes (module, mesh) and returns
    the user's own TP module."""
    fn = load(plan_spec)
    if len(inspect.signature(fn).parameters) == 2:
        return fn(module, mesh), None
    plan = fn()
    return parallelize_module(module, mesh, plan), plan


def piece(t: torch.Tensor, layout: str, rank: int, size: int) -> torch.Tensor:
    """This rank's piece: all of t ("replicate") or its torch.chunk piece of dim 0 ("shard0")."""
    return t.chunk(size, dim=0)[rank].clone() if layout == "shard0" else t.clone()


def _kinds(mode) -> Counter:
    out = Counter()
    for op, n in mode.get_comm_counts().items():
        out[KINDS.get(str(op).rsplit(".", 1)[-1], str(op))] += n
    return out


def audit_rank(ctx, job: dict) -> dict:
    """Forward, backward and the grad reduction (Partial -> Replicate, as an optimizer step) on one rank."""
    mesh = init_device_mesh("cpu", (ctx.world_size,))
    module = load(job["builder"])().to(job["dtype"])
    module.load_state_dict(job["state"])
    module, _ = parallelize(module, job["plan"], mesh)
    r, t = ctx.rank, ctx.world_size
    x = piece(job["x"], job["input_layout"], r, t).requires_grad_(True)
    with CommDebugMode() as fwd:
        y = module(x)
    out_layout = job["output_layout"]
    if isinstance(y, DTensor):
        out_layout = "shard0" if y.placements[0] == Shard(0) else "replicate"
        y = y.to_local()
    with CommDebugMode() as bwd:
        y.backward(piece(job["dy"], out_layout, r, t))
    grads, placements = {}, {}
    with CommDebugMode() as red:
        for name, p in module.named_parameters():
            g = p.grad
            placements[name] = "".join(map(str, g.placements)) if isinstance(g, DTensor) else "plain tensor"
            if isinstance(g, DTensor) and any(isinstance(q, Partial) for q in g.placements):
                whole = [Replicate() if isinstance(q, Partial) else q for q in g.placements]
                g = g.redistribute(placements=whole)
            grads[name] = g
    full = {n: (g.full_tensor() if isinstance(g, DTensor) else g).detach().clone()
            for n, g in grads.items()}
    norm = float(torch.sqrt(sum(g.double().square().sum() for g in full.values())))
    yours = float(load(job["grad_norm"])(module)) if job.get("grad_norm") else None
    return dict(out=y.detach(), out_layout=out_layout, dx=x.grad.detach(), grads=full, placements=placements,
                grad_norm=norm, your_grad_norm=yours, comm=_kinds(fwd) + _kinds(bwd) + _kinds(red))
