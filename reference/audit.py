"""Audit the user's own tensor-parallel model against its unsharded self, on real gloo ranks.

    python -m reference.audit --builder mypkg.model:build --plan mypkg.model:tp_plan [--world-size 2]
        [--grad-norm mypkg.train:grad_norm]
        [--input-layout replicate|shard0] [--output-layout replicate|shard0] [--dtype float64]

`builder()` returns the unsharded torch module; `plan()` returns a `parallelize_module` plan (a dict of
ColwiseParallel / RowwiseParallel / SequenceParallel), or `plan(module, mesh)` returns the user's own
TP module.  The audit builds the module once here (its weights go to every rank), runs it unsharded
on x and dy, then on `world_size` gloo ranks through the plan (reference/audit_rank.py), and compares:

  out, dx        every rank's piece (by the layouts) with the unsharded result;
  grad.<param>   every rank's full gradient (a sharded DTensor gathered, a Partial one reduced as an
                 optimizer step would; a plain tensor as it is) with the unsharded gradient, and the
                 ranks with each other;
  grad_norm      each rank's sqrt(sum of squares) of those gradients with the unsharded norm, and
                 with --grad-norm module:function, the norm your own code computes on each rank;
  collectives    CommDebugMode's counts by kind with tpsim's prediction for the plan
                 (reference/audit_predict.py), where tpsim models every entry; and norms the plan
                 leaves out of a sequence-sharded region, named before anything runs.

Tolerance, derived: a tensor is compared relative to max|truth|, within 2 d n u, where u is the dtype's
unit roundoff, n the longest reduction in the model (the widest Linear, the widest norm, or the tokens
s b a weight gradient sums) and d the number of Linear and norm layers the error can pass through
(Higham's gamma_n per layer, summed over the chain).  The exit code is 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from reference.audit_predict import NORMS, predict, unplanned_norms
from reference.audit_rank import audit_rank, load
from reference.launch import spawn

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def tolerance(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> float:
    """2 d n u: see the module docstring."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, *NORMS))]
    widths = [w for m in layers for w in ((m.in_features, m.out_features) if isinstance(m, nn.Linear)
                                          else tuple(m.normalized_shape))]
    n = max([*widths, shape[0] * shape[1]])
    return 2 * max(len(layers), 1) * n * torch.finfo(dtype).eps / 2


def _width(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, NORMS):
            return m.normalized_shape[0]
    raise ValueError("no nn.Linear or norm to read the input width from: pass --shape")


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    if got.shape != want.shape:
        return float("inf")
    scale = max(float(want.abs().max()) if want.numel() else 0.0, torch.finfo(torch.float64).tiny)
    return float((got.double() - want.double()).abs().max()) / scale if want.numel() else 0.0


def _row(tensor: str, errs: list[float], tol: float, note: str = "") -> dict:
    worst = max(range(len(errs)), key=lambda r: errs[r])
    return dict(tensor=tensor, rel_error=errs[worst], rank=worst, ok=errs[worst] <= tol, note=note)


def compare(truth: dict, ranks: list[dict], tol: float, input_layout: str) -> list[dict]:
    """One row per tensor: worst relative error over the ranks, and whether the ranks agree."""
    rows = []
    for name, layout in (("out", ranks[0]["out_layout"]), ("dx", input_layout)):
        if layout == "shard0":
            whole = torch.cat([r[name] for r in ranks], dim=0)
            rows.append(_row(name, [_rel(whole, truth[name])], tol, "pieces of dim 0 joined"))
        else:
            rows.append(_row(name, [_rel(r[name], truth[name]) for r in ranks], tol))
    for name, want in truth["grads"].items():
        got = [r["grads"].get(name) for r in ranks]
        if any(g is None for g in got):
            rows.append(dict(tensor=f"grad.{name}", rel_error=float("inf"), rank=0, ok=False, note="missing"))
            continue
        row = _row(f"grad.{name}", [_rel(g, want) for g in got], tol, ranks[0]["placements"][name])
        spread = max(_rel(g, got[0]) for g in got)
        if spread > 0 and row["ok"] is False:
            row["note"] += "; ranks differ"
        rows.append(row)
    norm = truth["grad_norm"]
    rows.append(_row("grad_norm", [abs(r["grad_norm"] - norm) / max(norm, 1e-300) for r in ranks], tol,
                     f"truth {norm:.6g}, rank 0 {ranks[0]['grad_norm']:.6g}"))
    if ranks[0].get("your_grad_norm") is not None:
        yours = ranks[0]["your_grad_norm"]
        errs = [abs(r["your_grad_norm"] - norm) / max(norm, 1e-300) for r in ranks]
        note = f"truth {norm:.6g}, rank 0 {yours:.6g} (x{yours / norm:.4g})"
        rows.append(_row("grad_norm (yours)", errs, tol, note))
    return rows


def audit(builder: str, plan: str, world_size: int = 2, *, shape=None, input_layout: str = "replicate",
          output_layout: str = "replicate", dtype: str = "float64", seed: int = 0,
          grad_norm: str | None = None, timeout: float = 180.0) -> dict:
    """Run the audit; {"rows", "comm", "unplanned_norms", "tol", "ok"} (see the module docstring)."""
    dt = DTYPES[dtype]
    torch.manual_seed(seed)
    module = load(builder)().to(dt)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    shape = tuple(shape or (4, 2, _width(module)))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dt)
    xt = x.clone().requires_grad_(True)
    y = module(xt)
    dy = torch.randn(y.shape, generator=gen, dtype=dt)
    y.backward(dy)
    grads = {n: p.grad.detach() for n, p in module.named_parameters()}
    truth = dict(out=y.detach(), dx=xt.grad.detach(), grads=grads,
                 grad_norm=float(torch.sqrt(sum(g.double().square().sum() for g in grads.values()))))
    job = dict(builder=builder, plan=plan, dtype=dt, state=state, x=x, dy=dy, input_layout=input_layout,
               output_layout=output_layout, grad_norm=grad_norm)
    ranks = spawn(audit_rank, world_size, job, device="cpu", backend="gloo", timeout=timeout)
    tol = tolerance(module, shape, dt)
    rows = compare(truth, ranks, tol, input_layout)
    plan_fn = load(plan)
    comm, lonely = dict(dtensor=dict(ranks[0]["comm"]), tpsim=None, modelled=False, ok=True), []
    if not _takes_module(plan_fn):
        the_plan = plan_fn()
        predicted, skipped = predict(module, the_plan, world_size, shape[0], shape[1])
        lonely = unplanned_norms(module, the_plan)
        comm.update(tpsim=dict(predicted), skipped=skipped, modelled=not skipped)
        if not skipped:
            comm["ok"] = dict(predicted) == {k: v for k, v in comm["dtensor"].items() if v}
    ok = all(r["ok"] for r in rows) and comm["ok"]
    return dict(rows=rows, comm=comm, unplanned_norms=lonely, tol=tol, ok=ok)


def _takes_module(fn) -> bool:
    import inspect

    return len(inspect.signature(fn).parameters) == 2


def format_report(result: dict) -> str:
    lines = [f"{'tensor':<44} {'rel error':>10} {'rank':>4}  {'ok':<5} note"]
    for r in result["rows"]:
        err = f"{r['rel_error']:>10.3g} {r['rank']:>4}"
        lines.append(f"{r['tensor']:<44} {err}  {r['ok']!s:<5} {r['note']}")
    c = result["comm"]
    lines.append(f"tolerance (2 d n u): {result['tol']:.2e}")
    lines.append(f"collectives: DTensor {c['dtensor']}; tpsim predicts {c['tpsim']}"
                 + ("" if c["modelled"] else f" (not modelled: {c.get('skipped', 'own TP module')})")
                 + ("" if c["ok"] else "  MISMATCH"))
    for n in result["unplanned_norms"]:
        lines.append(f"warning: norm {n!r} is not in a plan that shards the sequence: its grads stay "
                     "per-rank partial sums (NVIDIA/Megatron-LM#1446)")
    bad = ", ".join(r["tensor"] for r in result["rows"] if not r["ok"]) or "collectives"
    lines.append("OK: every tensor matches" if result["ok"] else f"MISMATCH: {bad}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference.audit", description=__doc__.splitlines()[0])
    p.add_argument("--builder", required=True, help="module:function returning the unsharded torch module")
    p.add_argument("--plan", required=True, help="module:function returning a parallelize_module plan")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--shape", default=None, help="s,b,h of the input (default 4,2,<first layer's width>)")
    p.add_argument("--input-layout", default="replicate", choices=("replicate", "shard0"))
    p.add_argument("--output-layout", default="replicate", choices=("replicate", "shard0"))
    p.add_argument("--dtype", default="float64", choices=tuple(DTYPES))
    p.add_argument("--grad-norm", default=None, help="module:function(tp_module) -> float: your grad-norm "
                   "code, run on every rank after backward and compared with the unsharded norm")
    a = p.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(",")) if a.shape else None
    result = audit(a.builder, a.plan, a.world_size, shape=shape, input_layout=a.input_layout,
                   output_layout=a.output_layout, dtype=a.dtype, grad_norm=a.grad_norm)
    print(format_report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
