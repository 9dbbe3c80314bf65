"""The catalogue on real ranks: every mutation, mirrored in the reference, caught on gloo.

    python -m reference.bugs.check --world-size 2

One spawn runs every mutation and its correct layer on `world_size` ranks, fed the very pieces
tpsim's devices held (the pipelined GPT's entry: two stages of world_size / 2 ranks, fed the whole ids
and targets, reference/bugs/pipeline.py).  For each name three things must hold:
  caught    the reference's buggy layer, judged against the unsharded truth (tpsim.bugs.compare:
            the piece each placement claims, on every rank), is flagged on every tensor the
            catalogue names;
  mirror    its tensors equal tpsim's buggy layer's, rank for rank, within the detector's rel_tol;
  correct   the reference's correct layer passes the same comparison.
The exit code is 1 when any fails.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from reference.bugs import pipeline
from reference.launch import RankContext, spawn
from reference.module import to_numpy, to_torch
from tpsim.bugs import BY_NAME, CATALOGUE, Mutation, compare, run
from tpsim.bugs.detect import rel_tol
from tpsim.darray import distribute, from_local
from tpsim.mesh import Mesh
from tpsim.placement import Partial, Replicate


def rank_main(ctx: RankContext, jobs: list[dict]) -> list[dict]:
    """One rank: each job's layer (buggy or correct) forward and backward on this rank's pieces."""
    from reference.bugs.catalogue import MIRROR
    from reference.bugs.grad_norm import grad_norm
    from reference.comm import Comm

    out = []
    for job in jobs:
        bug, correct, double = MIRROR[job["name"]]
        if job.get("pipelined"):  # a whole GPT over pp = 2 stages: its own groups and sends
            out.append(pipeline.rank_run(ctx, job, bug if job["which"] == "bug" else correct))
            continue
        comm = Comm(backend=ctx.backend)
        module = (bug if job["which"] == "bug" else correct)(comm)
        x = to_torch(job["x"][ctx.rank]).requires_grad_(True)
        if "targets" in job:
            y, mean = module(x, torch.from_numpy(job["targets"]))
        else:
            y, mean = module(x), None
        y.backward(to_torch(job["dy"][ctx.rank]))
        res = {"out": to_numpy(y), "dx": to_numpy(x.grad)}
        if mean is not None:
            res["mean"] = to_numpy(mean)
        for name, p in module.named_parameters():
            res["grad." + name] = to_numpy(p.grad if p.grad is not None else torch.zeros_like(p))
        double_count = double and job["which"] == "bug"
        res["grad_norm"] = grad_norm(module, comm, job["replicated"], double_count=double_count)
        out.append(res)
    return out


def _jobs(m: Mutation, t: int) -> tuple[list[dict], dict]:
    """The bug's and the truth's jobs, and what the parent needs to judge them."""
    got, feed = run(m.build, Mesh(t), m.inputs, norm=m.norm)
    sharded_truth, _ = run(m.truth, Mesh(t), m.inputs)
    want, _ = run(m.truth, Mesh(t if m.truth_on_same_mesh else 1), m.inputs)
    mesh = Mesh(t)
    x = distribute(feed[m.inputs.kind], mesh, [m.inputs.placement]).shards
    jobs = []
    for which, named in (("bug", got), ("truth", sharded_truth)):
        out_pl = [Replicate() if isinstance(p, Partial) else p for p in named["out"].placements]
        replicated = {k.removeprefix("grad.") for k, g in named.items()
                      if k.startswith("grad.") and all(isinstance(p, Replicate) for p in g.placements)}
        job = dict(name=m.name, which=which, x=x, dy=distribute(feed["dy"], mesh, out_pl).shards,
                   replicated=replicated)
        if "targets" in feed:
            job["targets"] = feed["targets"]
        jobs.append(job)
    return jobs, dict(got=got, sharded_truth=sharded_truth, want=want, tol=rel_tol(got, m.inputs))


def _as_tpsim(ranks: list[dict], like: dict) -> dict:
    """The ranks' tensors as DArrays with the placements tpsim's twin claimed (grad_norm: rank 0's)."""
    mesh = Mesh(len(ranks))
    out = {"grad_norm": ranks[0]["grad_norm"]}
    for name, g in like.items():
        if name != "grad_norm":
            pieces = [r[name] for r in ranks]  # a bug's "R" may differ across ranks: that is what is checked
            out[name] = from_local(pieces, mesh, list(g.placements), shape=g.shape, run_check=False)
    return out


def _mirror_error(ref: dict, tp: dict) -> float:
    """Worst relative difference between the reference and tpsim, shard by shard, over every tensor."""
    worst = 0.0
    for name, g in tp.items():
        if name == "grad_norm":
            worst = max(worst, abs(ref[name] - g) / max(abs(g), 1e-300))
            continue
        scale = max((float(np.max(np.abs(s), initial=0.0)) for s in g.shards), default=0.0) or 1.0
        for a, b in zip(ref[name].shards, g.shards, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0.0)) / scale)
    return worst


def check(world_size: int = 2, names: list[str] | None = None, timeout: float = 180.0) -> list[dict]:
    """One row per mutation: flagged tensors, caught, mirror error, correct layer ok."""
    chosen = [BY_NAME[n] for n in names] if names else list(CATALOGUE)
    jobs, ctxs = [], []
    for m in chosen:
        j, c = pipeline.jobs(m, world_size) if m.pipelined else _jobs(m, world_size)
        jobs += j
        ctxs.append(c)
    per_rank = spawn(rank_main, world_size, jobs, device="cpu", backend="gloo", timeout=timeout)
    rows = []
    for i, (m, c) in enumerate(zip(chosen, ctxs, strict=True)):
        convert = pipeline.as_tpsim if m.pipelined else _as_tpsim
        bug = convert([r[2 * i] for r in per_rank], c["got"])
        good = convert([r[2 * i + 1] for r in per_rank], c["sharded_truth"])
        view = m.view or (lambda named: named)
        want = view(c["want"])
        report, report_good = compare(view(bug), want, c["tol"]), compare(view(good), want, c["tol"])
        mirror = max(_mirror_error(bug, c["got"]), _mirror_error(good, c["sharded_truth"]))
        caught = set(m.caught_by) <= set(report.flagged)
        rows.append(dict(name=m.name, flagged=report.flagged, errors=report.errors, caught=caught,
                         mirror_error=mirror, mirror_ok=mirror <= c["tol"], correct_ok=report_good.ok,
                         ok=caught and mirror <= c["tol"] and report_good.ok))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference.bugs.check", description=__doc__.splitlines()[0])
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--names", default=None, help="comma-separated mutation names (default: all)")
    a = p.parse_args(argv)
    rows = check(a.world_size, a.names.split(",") if a.names else None)
    print(f"{'mutation':<36} {'caught':>6} {'mirror':>8} {'correct':>7}  flagged (worst rel. error)")
    for r in rows:
        flagged = ", ".join(f"{k} {r['errors'][k]:.3g}" for k in r["flagged"])
        line = f"{r['name']:<36} {r['caught']!s:>6} {r['mirror_error']:>8.1e} {r['correct_ok']!s:>7}"
        print(f"{line}  {flagged}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
