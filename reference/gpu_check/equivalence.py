"""b. Equivalence on the device: reference.check, run once per (world size, comm, dtype), its JSON kept.

No second checker: each run is `reference.check.check` on the checker's own default cases (exact and
float data), on the device the check runs on.  The backend is the launcher's choice
(`reference.backend.choose_backend`): world size 1 on NCCL; 2 and 4 over gloo with CUDA tensors
when they share one GPU; NCCL with one rank per GPU when there are as many.  The three tiers are
the checker's claims: exact data bitwise, schedule mode bitwise with equal bytes, native within
assert_close with replicated ranks bit-identical.  fp32 runs with TF32 off: the ranks are fresh
processes on torch's default (`torch.backends.cuda.matmul` TF32 off), which facts records.
"""

from __future__ import annotations

from reference.gpu_check.report import table

PER_RUN_FLOOR_S = 20.0  # a run not started with less than this left: a spawn alone takes seconds


def cases_for(world_size: int, dtype: str, one_per_layer: bool) -> list:
    from reference.cases import default_cases

    cases = [c for data in ("exact", "float") for c in default_cases(world_size, data, dtype)]
    if not one_per_layer:
        return cases
    seen, out = set(), []
    for c in cases:
        if (c.layer, c.data) not in seen:
            seen.add((c.layer, c.data))
            out.append(c)
    return out


def summarise(result: dict, backend) -> dict:
    """One record per checker run: the counts behind each tier, and the checker's own claims."""
    rows, cases = result["rows"], result["cases"]

    def count(claim):
        mine = [r for r in rows if r["claim"] == claim]
        return dict(n=len(mine), ok=sum(r["ok"] for r in mine), bitwise=sum(r["bitwise"] for r in mine))

    rep = [r for r in rows if r["ranks_agree"] is not None]
    return dict(
        kind="equivalence",
        world_size=result["world_size"],
        comm=result["comm"],
        device=result["device"],
        backend=backend.name,
        staged=backend.staged,
        dtype=rows[0]["dtype"] if rows else None,
        layers=sorted({c["layer"] for c in cases}),
        cases=len(cases),
        tensors=len(rows),
        exact_bitwise=count("bitwise"),
        exact_rounding=count("rounding"),
        float_close=count("close"),
        replicated_agree=f"{sum(r['ranks_agree'] for r in rep)}/{len(rep)}",
        replay_bitwise=f"{sum(c['replay_bitwise'] for c in cases)}/{len(cases)}",
        bytes_equal=f"{sum(c['replay_bytes_equal'] for c in cases)}/{len(cases)}",
        worst_ulps=max((r["ulps"] for r in rows), default=0.0),
        claims=result["claims"],
        ok=result["ok"],
        failed=[f"{r['case']} {r['tensor']}" for r in rows if not r["ok"]][:20],
    )


def section(budget, records: list, ctx) -> bool | None:
    from reference.backend import choose_backend
    from reference.check import check

    for world_size, comm, dtype in ctx.sizes.equivalence:
        if budget.left() < min(PER_RUN_FLOOR_S, budget.seconds / 4):
            return True
        backend = choose_backend(world_size, ctx.device)
        cases = cases_for(world_size, dtype, ctx.sizes.one_case_per_layer)
        result = check(world_size, cases, comm=comm, device=ctx.device, timeout=max(budget.left(), 1.0))
        records.append(summarise(result, backend))
    return None


def render(records: list[dict]) -> list[str]:
    rows = [
        dict(
            r,
            exact=f"{r['exact_bitwise']['bitwise']}/{r['exact_bitwise']['n']}",
            rounding=f"{r['exact_rounding']['ok']}/{r['exact_rounding']['n']}",
            close=f"{r['float_close']['ok']}/{r['float_close']['n']}",
            backend_=r["backend"] + (" (staged)" if r["staged"] else ""),
            verdict="ok" if r["ok"] else "MISMATCH",
        )
        for r in records
    ]
    out = table(
        rows,
        [
            ("world size", "world_size"),
            ("comm", "comm"),
            ("dtype", "dtype"),
            ("backend", "backend_"),
            ("cases", "cases"),
            ("exact: bitwise", "exact"),
            ("exact via libm: within rounding", "rounding"),
            ("float: assert_close", "close"),
            ("replicated ranks same bits", "replicated_agree"),
            ("replayed in tpsim bitwise", "replay_bitwise"),
            ("bytes equal", "bytes_equal"),
            ("worst ULPs", "worst_ulps"),
            ("verdict", "verdict"),
        ],
    )
    layers = sorted({x for r in records for x in r["layers"]})
    out += ["", f"layers covered: {', '.join(layers) or '-'}"]
    for r in records:
        if r["failed"]:
            what = f"world size {r['world_size']} {r['comm']} {r['dtype']}"
            out.append(f"- {what} failed: {', '.join(r['failed'])}")
    return out
