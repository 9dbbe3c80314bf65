"""Layer cases for the equivalence check: one spec, built in both engines on the same inputs.

A `Case` names a layer, its dims and options, the data ("exact": small integers in inputs and
weights; "float": normal floats) and the dtype.  `run_tpsim` builds the tpsim module on a
`tpsim.Mesh(t)`, runs forward and backward, and returns every device's shard of the output, the
input gradient and each parameter gradient, plus the per-device inputs it used.  `run_reference`
builds the mirror module on one rank from the same spec, feeds it that rank's inputs, and returns
the same names for that rank.  Shard d of tpsim and rank d of the reference must then agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

import reference as ref_pkg  # noqa: F401 -- the package docstring lists what the mirror holds
from reference import attention as r_attention
from reference import block as r_block
from reference import dropout as r_dropout
from reference import embedding as r_embedding
from reference import gpt as r_gpt
from reference import linear as r_linear
from reference import loss as r_loss
from reference import mlp as r_mlp
from reference import norm as r_norm
from reference.module import to_numpy, to_torch
from tpsim import Mesh, Replicate, Shard, distribute
from tpsim import nn as t_nn
from tpsim.dtypes import resolve_dtype
from tpsim.errors import TpsimError
from tpsim.nn.dropout import DEFAULT, MODEL_PARALLEL
from tpsim.placement import Partial

LAYERS = ("column", "row", "mlp", "attention", "embedding", "logits", "loss", "layernorm", "dropout", "block",
          "gpt")
# layers whose local math is exact on small integers (matmuls, lookups, scaling by a mask): both
# engines must agree bit for bit there.  The others evaluate tanh, exp, log or sqrt, where NumPy's and
# torch's float32 libms differ in the last bit (measured in check.py), so only closeness is claimed.
EXACT_MATH = ("column", "row", "embedding", "logits", "dropout")


# what a dtype's own rounding error is measured against: float64, and for float64 the x87 80-bit long
# double where NumPy has one (elsewhere longdouble is float64: no measure, only the ULP floor applies)
WIDER = {"float64": "longdouble" if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else None,
         "longdouble": None, "float128": None}


@dataclass(frozen=True)
class Case:
    layer: str
    dims: dict  # s, b and the layer's own sizes
    options: dict = field(default_factory=dict)  # constructor options shared by both engines
    data: str = "exact"
    dtype: str = "float32"
    seed: int = 0

    @property
    def label(self) -> str:
        dims = ",".join(f"{k}={v}" for k, v in self.dims.items())
        opts = ",".join(f"{k}={v}" for k, v in self.options.items() if v not in (False, None))
        return f"{self.layer}({dims}{';' + opts if opts else ''})"

    @property
    def init(self) -> str:
        return "exact" if self.data == "exact" else "normal"

    @property
    def sp(self) -> bool:
        return bool(self.options.get("sequence_parallel"))


def default_cases(world_size: int, data: str, dtype: str) -> list[Case]:
    """A fixed set covering every layer and option, with dims uneven over `world_size` where allowed."""
    t, s, b = world_size, 5, 2
    heads = 2 * t  # attention needs whole heads per rank
    out = []
    for sp in (False, True):
        out += [
            Case("column", dict(s=s, b=b, inp=7, out=5), dict(sequence_parallel=sp)),
            Case("row", dict(s=s, b=b, inp=7, out=5), dict(sequence_parallel=sp)),
            Case("mlp", dict(s=s, b=b, hidden=6, ffn=10), dict(sequence_parallel=sp)),
            Case("attention", dict(s=s, b=b, hidden=2 * heads, heads=heads), dict(sequence_parallel=sp)),
            Case("embedding", dict(s=s, b=b, vocab=11, hidden=6), dict(sequence_parallel=sp)),
            Case("logits", dict(s=s, b=b, vocab=11, hidden=6), dict(sequence_parallel=sp)),
            Case("layernorm", dict(s=s, b=b, hidden=6), dict(sequence_parallel=sp)),
            Case("dropout", dict(s=s, b=b, hidden=6), dict(p=0.25, sequence_parallel=sp)),
            Case("block", dict(s=s, b=b, hidden=2 * heads, heads=heads, ffn=6), dict(sequence_parallel=sp,
                                                                                  dropout=0.1)),
        ]
    out += [
        Case("column", dict(s=s, b=b, inp=7, out=5), dict(gather_output=True, bias=False)),
        Case("row", dict(s=s, b=b, inp=7, out=5), dict(input_is_parallel=False)),
        Case("attention", dict(s=s, b=b, hidden=2 * heads, heads=heads), dict(attention_dropout=0.2)),
        Case("embedding", dict(s=s, b=b, vocab=11, hidden=6), dict(pad_to_multiple_of=4)),
        Case("loss", dict(s=s, b=b, vocab=11), {}),
        Case("loss", dict(s=s, b=b, vocab=11), dict(pad_to_multiple_of=4, label_smoothing=0.1)),
    ]
    # a whole GPT: 2 layers, vocab 11 (uneven over t unless padded), seq_len > s (unused position rows)
    gpt = dict(s=s, b=b, vocab=11, hidden=4 * heads, heads=heads, ffn=6 * t, layers=2, seq_len=s + 1)
    out += [
        Case("gpt", gpt, dict(dropout=0.1)),
        Case("gpt", gpt, dict(sequence_parallel=True, pad_to_multiple_of=4, dropout=0.1)),
        Case("gpt", gpt, dict(untied=True, pad_to_multiple_of=4)),
    ]
    return [Case(c.layer, c.dims, c.options, data, dtype, seed=i) for i, c in enumerate(out)]


def _draw(rng, shape, data: str, dtype):
    if data == "exact":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _common(case: Case) -> dict:
    return dict(seed=case.seed, init=case.init, dtype=case.dtype)


def _vocab(case: Case, t: int) -> tuple[int, int]:
    """(real vocab, padded vocab) of an embedding, logits or loss case."""
    v, m = case.dims["vocab"], case.options.get("pad_to_multiple_of")
    return v, t_nn.padded_vocab_size(v, t, m)


def _build_tpsim(case: Case, mesh):
    """(module that owns the grads, forward(inputs) -> y, input kind, input placement)."""
    d, o, kw = case.dims, case.options, _common(case)
    sp = case.sp
    seq = Shard(0) if sp else Replicate()
    if case.layer == "column":
        m = t_nn.ColumnParallelLinear(mesh, d["inp"], d["out"], bias=o.get("bias", True),
                                      gather_output=o.get("gather_output", False), sequence_parallel=sp, **kw)
        return m, m, ("x", (d["s"], d["b"], d["inp"]), seq)
    if case.layer == "row":
        par = o.get("input_is_parallel", True)
        m = t_nn.RowParallelLinear(mesh, d["inp"], d["out"], input_is_parallel=par, sequence_parallel=sp,
                                   **kw)
        return m, m, ("x", (d["s"], d["b"], d["inp"]), Shard(2) if par else seq)
    if case.layer == "mlp":
        m = t_nn.ParallelMLP(mesh, d["hidden"], d["ffn"], sequence_parallel=sp, **kw)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "attention":
        m = t_nn.ParallelAttention(mesh, d["hidden"], d["heads"], sequence_parallel=sp,
                                   attention_dropout=o.get("attention_dropout", 0.0), **kw)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer in ("embedding", "logits"):
        m = t_nn.VocabParallelEmbedding(mesh, d["vocab"], d["hidden"], sequence_parallel=sp,
                                        pad_to_multiple_of=o.get("pad_to_multiple_of"), **kw)
        if case.layer == "embedding":
            return m, m, ("ids", (d["s"], d["b"]), Replicate())
        return t_nn.VocabParallelLogits(m), m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "loss":
        v, padded = _vocab(case, mesh.size)
        m = t_nn.VocabParallelCrossEntropy(mesh, label_smoothing=o.get("label_smoothing", 0.0), vocab_size=v)
        return m, m, ("logits", (d["s"], d["b"], padded), Shard(2))
    if case.layer == "layernorm":
        m = t_nn.LayerNorm(mesh, d["hidden"], sequence_parallel=sp, **kw)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "dropout":
        stream = MODEL_PARALLEL if sp else DEFAULT  # SP: the shards draw independent masks
        m = t_nn.Dropout(mesh, o["p"], tracker=t_nn.RNGTracker(case.seed), stream=stream)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "block":
        m = t_nn.TransformerBlock(mesh, d["hidden"], d["heads"], d["ffn"], dropout=o.get("dropout", 0.0),
                                  sequence_parallel=sp, **kw)
        return m, m, ("x", (d["s"], d["b"], d["hidden"]), seq)
    if case.layer == "gpt":
        m = t_nn.GPT(mesh, _gpt_config(case), **_gpt_options(case))
        return m, m, ("ids+targets", (d["s"], d["b"]), Replicate())
    raise TpsimError(f"unknown layer {case.layer!r}; valid: {', '.join(LAYERS)}")


def _gpt_config(case: Case) -> t_nn.GPTConfig:
    d = case.dims
    return t_nn.GPTConfig(vocab_size=d["vocab"], hidden=d["hidden"], num_layers=d["layers"],
                          num_heads=d["heads"], seq_len=d["seq_len"], ffn_hidden=d["ffn"], micro_batch=d["b"],
                          dtype=case.dtype, dropout=case.options.get("dropout", 0.0), name="gpt")


def _gpt_options(case: Case) -> dict:
    o = case.options
    return dict(sequence_parallel=case.sp, tied_embeddings=not o.get("untied", False),
                pad_to_multiple_of=o.get("pad_to_multiple_of"), seed=case.seed, init=case.init)


def _build_reference(case: Case, comm, device):
    """The mirror of _build_tpsim on one rank: (module, module that owns the params)."""
    d, o, kw = case.dims, case.options, dict(_common(case), device=device)
    sp = case.sp
    if case.layer == "column":
        m = r_linear.ColumnParallelLinear(comm, d["inp"], d["out"], bias=o.get("bias", True),
                                          gather_output=o.get("gather_output", False), sequence_parallel=sp,
                                          **kw)
        return m, m
    if case.layer == "row":
        par = o.get("input_is_parallel", True)
        m = r_linear.RowParallelLinear(comm, d["inp"], d["out"], input_is_parallel=par, sequence_parallel=sp,
                                       **kw)
        return m, m
    if case.layer == "mlp":
        m = r_mlp.ParallelMLP(comm, d["hidden"], d["ffn"], sequence_parallel=sp, **kw)
        return m, m
    if case.layer == "attention":
        m = r_attention.ParallelAttention(comm, d["hidden"], d["heads"], sequence_parallel=sp,
                                          attention_dropout=o.get("attention_dropout", 0.0), **kw)
        return m, m
    if case.layer in ("embedding", "logits"):
        m = r_embedding.VocabParallelEmbedding(comm, d["vocab"], d["hidden"], sequence_parallel=sp,
                                               pad_to_multiple_of=o.get("pad_to_multiple_of"), **kw)
        return (m, m) if case.layer == "embedding" else (r_embedding.VocabParallelLogits(m), m)
    if case.layer == "loss":
        v, padded = _vocab(case, comm.size)
        m = r_loss.VocabParallelCrossEntropy(comm, label_smoothing=o.get("label_smoothing", 0.0),
                                             vocab_size=v, padded_vocab_size=padded, device=device)
        return m, m
    if case.layer == "layernorm":
        m = r_norm.LayerNorm(comm, d["hidden"], sequence_parallel=sp, **kw)
        return m, m
    if case.layer == "dropout":
        stream = MODEL_PARALLEL if sp else DEFAULT
        tracker = r_dropout.RNGTracker(case.seed, comm.rank)
        m = r_dropout.Dropout(comm, o["p"], tracker=tracker, stream=stream, device=device)
        return m, m
    if case.layer == "block":
        m = r_block.TransformerBlock(comm, d["hidden"], d["heads"], d["ffn"], dropout=o.get("dropout", 0.0),
                                     sequence_parallel=sp, **kw)
        return m, m
    if case.layer == "gpt":
        m = r_gpt.GPT(comm, _gpt_config(case), device=device, **_gpt_options(case))
        return m, m
    raise TpsimError(f"unknown layer {case.layer!r}; valid: {', '.join(LAYERS)}")


@dataclass
class TpsimRun:
    """tpsim's side of one case: per-device results and the inputs every rank must be fed."""

    case: Case
    results: dict[str, list[np.ndarray]]  # name -> one shard per device
    replicated: dict[str, bool]  # name -> R on the TP mesh dim (every rank must hold the same bits)
    inputs: list[dict[str, np.ndarray]]  # per rank: "x" | "ids" | "logits" (+ "targets"), "dy"
    collectives: list[dict]  # kind, direction, nbytes (S), wire_bytes
    trace: object = None  # the mesh's tpsim.trace.Trace, for reference.record.compare_with_trace
    rounding: dict[str, float] = field(default_factory=dict)  # name -> max |this run - a float64 run|


def run_tpsim(case: Case, world_size: int) -> TpsimRun:
    mesh = Mesh(world_size)
    module, owner, (kind, shape, placement) = _build_tpsim(case, mesh)
    rng = np.random.default_rng(10_000 + case.seed)
    dtype = resolve_dtype(case.dtype)
    feed: dict[str, object] = {}
    if kind == "ids+targets":  # a whole model: the mean loss out, d(mean) = 1 in, no input gradient
        ids, targets = (rng.integers(0, case.dims["vocab"], size=shape) for _ in range(2))
        y = module(ids, targets)
        feed.update(ids=[ids] * world_size, targets=[targets] * world_size)
        x = None
    elif kind == "ids":
        ids = rng.integers(0, case.dims["vocab"], size=shape)
        y = module(ids)
        feed["ids"] = [ids] * world_size
        x = None
    else:
        x = distribute(_draw(rng, shape, case.data, dtype), mesh, [placement])
        feed[kind] = x.shards
        if kind == "logits":
            targets = rng.integers(0, case.dims["vocab"], size=shape[:-1])
            y, _ = module(x, targets)
            feed["targets"] = [targets] * world_size
        else:
            y = module(x)
    if kind == "ids+targets":
        dx = module.backprop()
    else:
        dy = distribute(_draw(rng, y.shape, case.data, dtype), mesh, list(y.placements))
        feed["dy"] = dy.shards
        dx = module.backprop(dy)
    named = {"out": y}
    if dx is not None:
        named["dx"] = dx
    root = owner.name + "."
    for name, g in owner.named_grads():
        named["grad." + name.removeprefix(root)] = g
    for name, arr in named.items():
        if any(isinstance(p, Partial) for p in arr.placements):
            raise TpsimError(f"{case.label}: tpsim's {name} is {arr.placements}, a partial sum")
    results = {k: list(v.shards) for k, v in named.items()}
    replicated = {k: v.placements[0] == Replicate() for k, v in named.items()}
    inputs = [{k: v[r] for k, v in feed.items()} for r in range(world_size)]
    colls = [dict(kind=c.collective, direction=c.direction, nbytes=c.nbytes, wire_bytes=c.wire_bytes)
             for c in mesh.trace.collectives]
    run = TpsimRun(case, results, replicated, inputs, colls, mesh.trace)
    wider = WIDER.get(resolve_dtype(case.dtype).name, "float64")
    if case.data == "exact" and case.layer not in EXACT_MATH and wider is not None:
        # the same integers in a wider dtype: how far this dtype's own rounding moves each result
        wide = run_tpsim(dataclasses.replace(case, dtype=wider), world_size).results
        run.rounding = {k: max((float(np.max(np.abs(a.astype(wider) - b), initial=0.0))
                                for a, b in zip(v, wide[k], strict=True)), default=0.0)
                        for k, v in results.items()}
    return run


def run_reference(case: Case, comm, inputs: dict[str, np.ndarray], device) -> dict[str, np.ndarray]:
    """One rank: build the mirror, feed it this rank's inputs, return its out, dx and grads (NumPy)."""
    module, owner = _build_reference(case, comm, device)
    if "ids" in inputs and "targets" in inputs:  # a whole model: mean loss, backward from d(mean) = 1
        x = None
        y = module(torch.from_numpy(inputs["ids"]).to(device), torch.from_numpy(inputs["targets"]).to(device))
    elif "ids" in inputs:
        x = None
        y = module(torch.from_numpy(inputs["ids"]).to(device))
    else:
        key = "logits" if "logits" in inputs else "x"
        x = to_torch(inputs[key], device).requires_grad_(True)
        if key == "logits":
            y, _ = module(x, torch.from_numpy(inputs["targets"]).to(device))
        else:
            y = module(x)
    y.backward(to_torch(inputs["dy"], device) if "dy" in inputs else None)
    out = {"out": to_numpy(y)}
    if x is not None:
        out["dx"] = to_numpy(x.grad)
    for name, p in owner.named_parameters():
        out["grad." + name] = to_numpy(p.grad if p.grad is not None else torch.zeros_like(p))
    return out
