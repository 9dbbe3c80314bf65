"""The fused QKV projection of grouped-query attention on one rank: the mirror of tpsim/nn/gqa_qkv.py.

This rank holds [q heads of KV head k; k_k; v_k] for each KV head k it reads (tpsim's KVLayout, the
same rows cut from the same seeded matrices).  When t exceeds the KV heads, r = t/g ranks hold copies
of one KV head, and each copy's gradient is only its rank's share, so backward all-reduces those rows
over the r ranks (a sub-group Comm, its calls entered in the TP Comm's record; the whole group when r = t):

    forward:  copy_to (identity)                   [SP: all-gather of x]
    backward: all-reduce of this KV head's (2d, h [+1]) grads over its r ranks, when replicated;
              all-reduce of dx                     [SP: all-gather x again first; reduce-scatter dx]
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist

from reference.comm import Comm
from reference.module import Module, rank_piece, to_numpy, to_torch
from tpsim.nn.gqa_qkv import KVLayout
from tpsim.nn.init import global_weight


class GroupedQKVLinear(Module):
    def __init__(
        self,
        comm,
        hidden: int,
        layout: KVLayout,
        *,
        bias: bool = False,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        self.layout, self.sequence_parallel, self.seq_dim = layout, sequence_parallel, seq_dim
        n, g, d, t = layout.num_heads, layout.num_kv_heads, layout.head_dim, comm.size
        w = [global_weight((m * d, hidden), seed + i, init, dtype) for i, m in enumerate((n, g, g))]
        self.weight = torch.nn.Parameter(to_torch(rank_piece(layout.fuse(*w), 0, comm.rank, t), self.device))
        self.bias = None
        if bias:
            b_init = "zeros" if init == "normal" else init
            b = [global_weight((m * d,), seed + 3 + i, b_init, dtype) for i, m in enumerate((n, g, g))]
            self.bias = torch.nn.Parameter(
                to_torch(rank_piece(layout.fuse(*b), 0, comm.rank, t), self.device)
            )
        self.kv_comm = _kv_comm(comm, layout.replicas)

    def duplicated_rows(self, key: str) -> slice | None:
        """Mirror of tpsim's: this rank's copy of a replicated KV head (all but the first of r ranks)."""
        lay = self.layout
        if key not in ("weight", "bias") or lay.replicas == 1 or self.comm.rank % lay.replicas == 0:
            return None
        return slice(lay.n_local * lay.head_dim, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GroupedQKV.apply(x, self.weight, self.bias, self)


def _kv_comm(comm, r: int):
    """The Comm over the r ranks sharing this rank's KV head (every rank creates every group)."""
    if r == 1:
        return None
    if r == comm.size:
        return comm
    base = getattr(comm, "comm", comm)  # the Comm under the checker's recording Tap
    mine = None
    for start in range(0, comm.size, r):
        group = dist.new_group([base.ranks[i] for i in range(start, start + r)])
        if comm.rank in range(start, start + r):
            mine = Comm(group, mode=base.mode, algorithm=base.algorithms, backend=base.backend)
    return mine


def _kv_all_reduce(mod, buf: torch.Tensor) -> torch.Tensor:
    """The replicated KV grads' all-reduce.  Over a sub-group, the call is also entered in the TP Comm's
    record (and the checker's Tap), so the collectives this rank issued are listed in one place."""
    kv, comm = mod.kv_comm, mod.comm
    if kv is comm:
        return comm.all_reduce(buf)
    out = kv.all_reduce(buf)
    base = getattr(comm, "comm", comm)
    call = dataclasses.replace(kv.record[-1], seq=len(base.record))
    base.record.append(call)
    if comm is not base:  # the Tap keeps operands for its replay: say which groups reduced them
        kw = dict(op="sum", group_size=mod.layout.replicas)
        comm.calls.append(
            dict(op="all_reduce", kw=kw, x=to_numpy(buf), out=to_numpy(out), bytes_sent=call.bytes_sent)
        )
    return out


class _GroupedQKV(torch.autograd.Function):
    """y = x W^T (+ b); backward: dW, db, the replicated KV rows' all-reduce, then dx's collective."""

    @staticmethod
    def forward(ctx, x, weight, bias, mod):
        c = mod.comm
        total = c.all_gather(x.contiguous(), dim=mod.seq_dim) if mod.sequence_parallel else x
        ctx.save_for_backward(x, weight)
        ctx.mod, ctx.full, ctx.has_bias = mod, total.shape[mod.seq_dim], bias is not None
        y = torch.matmul(total, weight.t())  # (s, b, h) @ (h, rows/t)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        mod = ctx.mod
        c = mod.comm
        total = x
        if mod.sequence_parallel:
            from tpsim.placement import chunk_sizes

            total = c.all_gather(x.contiguous(), dim=mod.seq_dim, sizes=chunk_sizes(ctx.full, c.size))
        rows = math.prod(dy.shape[:-1])
        g2 = dy.reshape(rows, dy.shape[-1])
        dw = g2.t().matmul(total.reshape(rows, total.shape[-1]))  # (rows/t, h)
        db = g2.sum(dim=0) if ctx.has_bias else None
        if mod.kv_comm is not None:
            kv = 2 * mod.layout.head_dim  # one KV head per rank: its k and v rows last
            buf = dw[-kv:] if db is None else torch.cat([dw[-kv:], db[-kv:, None]], dim=1)
            buf = _kv_all_reduce(mod, buf.contiguous())
            dw = torch.cat([dw[:-kv], buf[:, : dw.shape[1]]])
            db = None if db is None else torch.cat([db[:-kv], buf[:, -1]])
        dx = torch.matmul(dy, weight)  # a partial sum over the TP ranks
        dx = c.reduce_scatter(dx.contiguous(), dim=mod.seq_dim) if mod.sequence_parallel else c.all_reduce(dx)
        return dx, dw, db, None
