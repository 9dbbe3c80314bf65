"""tpsim's prediction of the collectives a DTensor plan issues, and a static look for unplanned norms.

Each plan entry tpsim can model becomes its tpsim layer, run once on a `tpsim.Mesh(t)`; the trace's
collectives are tallied by kind over forward, backward and the grad reduction:

    ColwiseParallel   on nn.Linear, input R or S(0)     -> ColumnParallelLinear (SP when S(0))
    RowwiseParallel   on nn.Linear, output R or S(0)    -> RowParallelLinear (SP when S(0))
    SequenceParallel  on nn.LayerNorm, sequence dim 0   -> LayerNorm(sequence_parallel=True)

DTensor then differs from tpsim by what reference/dtensor_compare.py derives and names: under SP
tpsim all-gathers each column-parallel input again for dW [regather], and fuses a norm's [dw; db]
into one all-reduce where DTensor reduces each Partial grad alone [ln-fused, ln-partial].  The
prediction below is DTensor's count, those differences applied.  Any other entry is "not modelled".
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from torch import nn
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

import tpsim
from reference.compat import dtensor_names
from tpsim.nn import ColumnParallelLinear, LayerNorm, RowParallelLinear

_, Shard, Replicate, _ = dtensor_names()
NORMS = (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))


def _layer(name: str, style, sub, mesh, s: int, b: int):
    """(tpsim layer, its input placement, input shape), or None where tpsim has no model."""
    kw = dict(init="zeros", dtype="float32")
    if isinstance(style, ColwiseParallel) and isinstance(sub, nn.Linear):
        lay = style.input_layouts[0]
        if lay not in (Replicate(), Shard(0)) or style.output_layouts[0] != Shard(-1):
            return None
        sp = lay == Shard(0)
        m = ColumnParallelLinear(mesh, sub.in_features, sub.out_features, bias=sub.bias is not None,
                                 sequence_parallel=sp, name=name, **kw)
        return m, tpsim.Shard(0) if sp else tpsim.Replicate(), (s, b, sub.in_features)
    if isinstance(style, RowwiseParallel) and isinstance(sub, nn.Linear):
        lay = style.output_layouts[0]
        if lay not in (Replicate(), Shard(0)) or style.input_layouts[0] != Shard(-1):
            return None
        m = RowParallelLinear(mesh, sub.in_features, sub.out_features, bias=sub.bias is not None,
                              sequence_parallel=lay == Shard(0), name=name, **kw)
        return m, tpsim.Shard(2), (s, b, sub.in_features)
    if isinstance(style, SequenceParallel) and isinstance(sub, nn.LayerNorm):
        if style.sequence_sharding[0] != Shard(0):
            return None
        (h,) = sub.normalized_shape
        return LayerNorm(mesh, h, sequence_parallel=True, name=name, **kw), tpsim.Shard(0), (s, b, h)
    return None


def predict(module: nn.Module, plan: dict, world_size: int, s: int, b: int) -> tuple[Counter, list[str]]:
    """(DTensor's collectives by kind, as tpsim predicts them; the plan entries not modelled)."""
    mesh = tpsim.Mesh(world_size)
    counts, skipped = Counter(), []
    for name, style in plan.items():
        made = _layer(name, style, module.get_submodule(name), mesh, s, b)
        if made is None:
            skipped.append(name)
            continue
        layer, placement, shape = made
        since = len(mesh.trace.collectives)
        y = layer(tpsim.distribute(np.zeros(shape, np.float32), mesh, [placement]))
        layer.backprop(tpsim.distribute(np.zeros(y.shape, np.float32), mesh, list(y.placements)))
        counts.update(c.collective for c in mesh.trace.collectives[since:])
        if world_size > 1 and isinstance(layer, ColumnParallelLinear) and layer.sequence_parallel:
            counts["all_gather"] -= 1  # [regather]
        if world_size > 1 and isinstance(layer, LayerNorm):
            counts["all_reduce"] += 1  # [ln-fused] one, [ln-partial] two
    if world_size == 1:
        counts = Counter()  # a group of one: DTensor issues nothing
    return +counts, skipped


def unplanned_norms(module: nn.Module, plan: dict) -> list[str]:
    """Norms left out of a plan that shards the sequence (some layout S(0)): under SP each rank would
    normalize only its own rows and keep its partial dw, db (NVIDIA/Megatron-LM#1446)."""
    layouts = [lay for st in plan.values() for lay in (*getattr(st, "input_layouts", ()),
                                                          *getattr(st, "output_layouts", ()))]
    if Shard(0) not in layouts:
        return []
    return [n for n, m in module.named_modules() if isinstance(m, NORMS) and n not in plan]
