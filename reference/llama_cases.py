"""The equivalence check's cases for the Llama layers (RMSNorm, SwiGLU, GQA with RoPE, block, model).

GQA runs with its KV heads split (g = t) and replicated (g = 1, multi-query: all t ranks share the one
KV head, so backward all-reduces its grads over them; and, where t is even and above 2, g = t/2: each KV
head on 2 ranks, its grads all-reduced in t/2 sub-groups), with and without SP on an uneven sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reference import gqa as r_gqa
from reference import llama as r_llama
from reference import rmsnorm as r_rmsnorm
from reference import swiglu as r_swiglu
from tpsim import Replicate, Shard
from tpsim.nn.gqa import GroupedQueryAttention
from tpsim.nn.llama import Llama, LlamaBlock
from tpsim.nn.llama_config import LlamaConfig
from tpsim.nn.rmsnorm import RMSNorm
from tpsim.nn.swiglu import SwiGLUMLP

if TYPE_CHECKING:
    from reference.cases import Case

LAYERS = ("rmsnorm", "swiglu", "gqa", "llama_block", "llama")


def default_cases(t: int) -> list:
    from reference.cases import Case

    s, b, heads = 5, 2, 2 * t
    attn = dict(s=s, b=b, hidden=2 * heads, heads=heads)  # head_dim 2: RoPE's one pair
    out = []
    for sp in (False, True):
        out += [
            Case("rmsnorm", dict(s=s, b=b, hidden=6), dict(sequence_parallel=sp)),
            Case("swiglu", dict(s=s, b=b, hidden=6, ffn=2 * t), dict(sequence_parallel=sp)),
            Case("gqa", dict(attn, kv=t), dict(sequence_parallel=sp)),
            Case("gqa", dict(attn, kv=1), dict(sequence_parallel=sp, qkv_bias=True)),
            Case("llama_block", dict(attn, kv=1, ffn=2 * t), dict(sequence_parallel=sp)),
        ]
    if t > 2 and t % 2 == 0:  # each KV head on 2 of the t ranks: the grads' all-reduce over sub-groups
        out += [Case("gqa", dict(attn, kv=t // 2), dict(sequence_parallel=sp)) for sp in (False, True)]
    model = dict(s=s, b=b, vocab=11, hidden=2 * heads, heads=heads, kv=1, ffn=2 * t, layers=2)
    out += [
        Case("llama", model, {}),
        Case("llama", model, dict(sequence_parallel=True, pad_to_multiple_of=4)),
    ]
    return out


def _kw(case: Case) -> dict:
    return dict(seed=case.seed, init=case.init, dtype=case.dtype)


def config(case: Case) -> LlamaConfig:
    d = case.dims
    return LlamaConfig(
        d["vocab"],
        d["hidden"],
        d["layers"],
        d["heads"],
        d["kv"],
        d["ffn"],
        d["s"],
        dtype=case.dtype,
        qkv_bias=case.options.get("qkv_bias", False),
    )


def build_tpsim(case: Case, mesh):
    d, o, kw, sp = case.dims, case.options, _kw(case), case.sp
    x = ("x", (d["s"], d["b"], d["hidden"]), Shard(0) if sp else Replicate())
    if case.layer == "rmsnorm":
        m = RMSNorm(mesh, d["hidden"], sequence_parallel=sp, **kw)
    elif case.layer == "swiglu":
        m = SwiGLUMLP(mesh, d["hidden"], d["ffn"], sequence_parallel=sp, **kw)
    elif case.layer == "gqa":
        m = GroupedQueryAttention(
            mesh,
            d["hidden"],
            d["heads"],
            d["kv"],
            qkv_bias=o.get("qkv_bias", False),
            sequence_parallel=sp,
            **kw,
        )
    elif case.layer == "llama_block":
        m = LlamaBlock(mesh, d["hidden"], d["heads"], d["kv"], d["ffn"], sequence_parallel=sp, **kw)
    else:
        m = Llama(
            mesh,
            config(case),
            sequence_parallel=sp,
            pad_to_multiple_of=o.get("pad_to_multiple_of"),
            seed=case.seed,
            init=case.init,
        )
        return m, m, ("ids+targets", (d["s"], d["b"]), Replicate())
    return m, m, x


def build_reference(case: Case, comm, device):
    d, o, kw, sp = case.dims, case.options, dict(_kw(case), device=device), case.sp
    if case.layer == "rmsnorm":
        m = r_rmsnorm.RMSNorm(comm, d["hidden"], sequence_parallel=sp, **kw)
    elif case.layer == "swiglu":
        m = r_swiglu.SwiGLUMLP(comm, d["hidden"], d["ffn"], sequence_parallel=sp, **kw)
    elif case.layer == "gqa":
        m = r_gqa.GroupedQueryAttention(
            comm,
            d["hidden"],
            d["heads"],
            d["kv"],
            qkv_bias=o.get("qkv_bias", False),
            sequence_parallel=sp,
            **kw,
        )
    elif case.layer == "llama_block":
        m = r_llama.LlamaBlock(comm, d["hidden"], d["heads"], d["kv"], d["ffn"], sequence_parallel=sp, **kw)
    else:
        m = r_llama.Llama(
            comm,
            config(case),
            sequence_parallel=sp,
            pad_to_multiple_of=o.get("pad_to_multiple_of"),
            seed=case.seed,
            init=case.init,
            device=device,
        )
    return m, m
