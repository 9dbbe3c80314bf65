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
from reference import llama_cases
from reference.cases_bounds import Bound, RoundingDepth, rounding_bounds
from reference.cases_build import LAYERS, build_reference, build_tpsim
from reference.module import to_numpy, to_torch
from tpsim import Mesh, Replicate, distribute
from tpsim.dtypes import resolve_dtype
from tpsim.errors import PlacementError
from tpsim.placement import Partial

__all__ = ["EXACT_MATH", "LAYERS", "Case", "TpsimRun", "default_cases", "run_reference", "run_tpsim"]

# layers whose local math is exact on small integers (matmuls, lookups, scaling by a mask): both
# engines must agree bit for bit there.  The others evaluate tanh, exp, log or sqrt, where NumPy's and
# torch's float32 libms differ in the last bit (measured in check.py), so only closeness is claimed.
EXACT_MATH = ("column", "row", "embedding", "logits", "dropout")


# the wider dtype a case's exact value and tpsim's own error are taken from: float64, and for float64
# the x87 80-bit long double where NumPy has one (elsewhere float64 itself: the scale, no own error)
WIDER = {
    "float64": "longdouble" if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else None,
    "longdouble": None,
    "float128": None,
}


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
            Case(
                "block",
                dict(s=s, b=b, hidden=2 * heads, heads=heads, ffn=6),
                dict(sequence_parallel=sp, dropout=0.1),
            ),
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
    out += llama_cases.default_cases(world_size)
    return [Case(c.layer, c.dims, c.options, data, dtype, seed=i) for i, c in enumerate(out)]


def _draw(rng, shape, data: str, dtype):
    if data == "exact":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


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
    bounds: dict[str, Bound] = field(default_factory=dict)  # name -> allowed |reference - tpsim|
    owner: str = ""  # the module whose named_grads are the "grad." results


def run_tpsim(case: Case, world_size: int, nested: bool = False) -> TpsimRun:
    """tpsim's side of `case`; for the rounding tier, also the bounds from a wider run (not `nested`)."""
    mesh = Mesh(world_size)
    module, owner, (kind, shape, placement) = build_tpsim(case, mesh)
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
            raise PlacementError(f"{case.label}: tpsim's {name} is {arr.placements}, a partial sum")
    results = {k: list(v.shards) for k, v in named.items()}
    replicated = {k: v.placements[0] == Replicate() for k, v in named.items()}
    inputs = [{k: v[r] for k, v in feed.items()} for r in range(world_size)]
    colls = [
        dict(kind=c.collective, direction=c.direction, nbytes=c.nbytes, wire_bytes=c.wire_bytes)
        for c in mesh.trace.collectives
    ]
    run = TpsimRun(case, results, replicated, inputs, colls, mesh.trace, owner=owner.name)
    wider = WIDER.get(resolve_dtype(case.dtype).name, "float64")
    if case.data == "exact" and case.layer not in EXACT_MATH and not nested:
        # the same integers in a wider dtype, counting roundings: the bound, and tpsim's own error
        with RoundingDepth() as depth:
            wide_case = dataclasses.replace(case, dtype=wider or case.dtype)
            wide_run = run_tpsim(wide_case, world_size, nested=True)
            depth.finish(wide_run.trace.mesh)
        wide = wide_run.results
        run.bounds = rounding_bounds(list(results), wide, depth, owner.name, resolve_dtype(case.dtype))
        if wider is not None:
            run.rounding = {
                k: max(
                    (
                        float(np.max(np.abs(a.astype(wider) - b), initial=0.0))
                        for a, b in zip(v, wide[k], strict=True)
                    ),
                    default=0.0,
                )
                for k, v in results.items()
            }
    return run


def run_reference(case: Case, comm, inputs: dict[str, np.ndarray], device) -> dict[str, np.ndarray]:
    """One rank: build the mirror, feed it this rank's inputs, return its out, dx and grads (NumPy)."""
    module, owner = build_reference(case, comm, device)
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
