"""The checker's rows: per tensor, the tier claimed and whether it held; per case, the collectives.

    tensor_rows(sim, ranks, case_row)   one row per output / gradient: worst diff over the shards
    case_row(sim, ranks, comm, ...)     one row per case: counts, replay, bytes, trace agreement

A tensor's tier (`claim_for`): bitwise for exact data through exact-math layers; rounding (within the
forward error bound of reference/cases_bounds.py) for exact data through tanh, exp, log or sqrt;
close (assert_close's defaults) for float data.  reference.check runs the engines and gathers these
rows; reference/check_report.py turns them into claims and the table.
"""

from __future__ import annotations

from reference.cases import EXACT_MATH, Case
from reference.compare import NO_DIFF, Diff, diff, replay, same_bits
from reference.record import compare_with_trace


def claim_for(case: Case) -> str:
    """bitwise (exact data, exact math); rounding (exact data through the libm functions: within the
    forward error bound of reference/cases_bounds.py); close (float data: assert_close's defaults)."""
    if case.data == "exact":
        return "bitwise" if case.layer in EXACT_MATH else "rounding"
    return "close"


def holds(claim: str, d: Diff, bound: float = 0.0) -> bool:
    if claim == "rounding":
        return d.max_abs <= bound
    return {"bitwise": d.bitwise, "close": d.close}[claim]


def tensor_rows(sim, ranks: list[dict], case_row: dict) -> list[dict]:
    claim, rows = claim_for(sim.case), []
    for name, shards in sim.results.items():
        d: Diff = NO_DIFF
        for r, want in enumerate(shards):
            d = d.worst(diff(ranks[r]["tensors"][name], want))
        agree = None
        if sim.replicated[name]:
            first = ranks[0]["tensors"][name]
            agree = all(same_bits(first, rk["tensors"][name]) for rk in ranks[1:])
        b = sim.bounds.get(name)
        bound = b.value if b is not None else 0.0
        ok = holds(claim, d, bound) and agree is not False
        ratio = d.max_abs / bound if bound else (0.0 if d.max_abs == 0 else float("inf"))
        rows.append(
            dict(
                case=sim.case.label,
                layer=sim.case.layer,
                data=sim.case.data,
                dtype=sim.case.dtype,
                tensor=name,
                claim=claim,
                bitwise=d.bitwise,
                close=d.close,
                max_abs=d.max_abs,
                max_rel=d.max_rel,
                ulps=d.ulps,
                rounding=sim.rounding.get(name, 0.0),
                bound=bound if claim == "rounding" else None,
                bound_ratio=ratio if claim == "rounding" else None,
                bound_terms=b.describe() if b is not None and claim == "rounding" else None,
                ranks_agree=agree,
                ok=ok,
            )
        )
    return rows


def case_row(sim, ranks: list[dict], comm: str, algorithm: str | None, size: int) -> dict:
    calls = [rk["calls"] for rk in ranks]
    rep = replay(calls, algorithm)
    counts_equal = rep.calls == len(sim.collectives) and all(len(rk["record"]) == rep.calls for rk in ranks)
    # the same collectives in the same order, op, size S and dtype (schedule mode: algorithm and bytes too)
    problems = [p for r, rk in enumerate(ranks) for p in compare_with_trace(rk["record"], sim.trace, r)]
    ok = counts_equal and not problems and (comm != "schedule" or (rep.bitwise and rep.bytes_equal))
    return dict(
        case=sim.case.label,
        layer=sim.case.layer,
        data=sim.case.data,
        tpsim_collectives=len(sim.collectives),
        tpsim_bytes=sum(c["wire_bytes"] for c in sim.collectives),
        tpsim_kinds=[c["kind"] for c in sim.collectives],
        ref_collectives=rep.calls,
        ref_bytes=rep.ref_bytes,
        replay_bitwise=rep.bitwise,
        replay_ulps=rep.max_ulps,
        replay_bytes_equal=rep.bytes_equal,
        counts_equal=counts_equal,
        record_problems=problems,
        ok=ok,
    )
