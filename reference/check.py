"""The equivalence check: every layer, forward and backward, in tpsim and in the reference, compared.

    python -m reference.check --world-size 2                      # gloo on CPU, native collectives
    python -m reference.check --world-size 3 --comm schedule      # tpsim's schedules over isend/irecv
    torchrun --nproc-per-node 4 -m reference.check                # the same under torchrun

tpsim runs each case on a `tpsim.Mesh(N)` in this process; the reference runs the mirror layers on
N ranks (one spawn for all cases), fed the very shards tpsim's devices held.  Shard d of every
output, input gradient and parameter gradient is compared with rank d's tensor.  What is claimed:

  exact data (small integers in inputs and weights, `--data exact`):
      layers whose local math is exact on integers (linear, embedding, logits, dropout): bitwise
      equal across the engines, every TP degree, uneven splits included;
      layers that evaluate tanh, exp, log or sqrt (MLP, attention, LayerNorm, loss, block): NumPy's
      and torch's float32 libms round those differently in the last bit on a large share of inputs
      (`--libm` measures it), so bitwise is not claimed; integers make large activations and
      ill-conditioned gradients, so elementwise tolerances do not fit either.  The claim: the
      engines differ by at most 8x the dtype's own rounding error, measured as tpsim in this dtype
      against tpsim in a wider one on the same integers (float64; for float64, NumPy's 80-bit long
      double where the platform has one), or by 4 ULPs of the tensor's scale.
  float data (normal floats, `--data float`): within torch.testing.assert_close's defaults for the
      dtype (bfloat16: rtol 1.6e-2, atol 1e-5), whatever --comm.

bfloat16 and float16 follow one rule in both engines (tpsim/nn/ops.py): each kernel computes in
float32 and rounds once to the input's dtype (matmuls and sums accumulate in float32; GeLU, softmax,
LayerNorm and the cross-entropy's kernels run in float32), which is what torch's CPU kernels do for
matmul, sum, GeLU and softmax; the reference's LayerNorm and cross-entropy apply it explicitly
(reference/norm.py, loss.py).  The claims stay the ones above: half precision's float data are
claimed close, not bitwise, since a float32 accumulation in another order (oneDNN's blocking, NCCL)
may round the other way; the table reports how many tensors came out bitwise equal anyway.
  --comm schedule: every collective a rank issued, replayed in tpsim's engine on the same operands,
      is bitwise equal on every rank, and the bytes the ranks sent equal tpsim's wire bytes.
  always: the same collectives in the same order, with the same op, size and dtype, as tpsim's
      trace (reference.record.compare_with_trace), and every rank that holds a replicated result
      (R on TP) holds the same bits.

The table is printed with rich and written as JSON (`--json`); the exit code is 1 on any mismatch.
`--inject-mismatch` flips the last bit of one reference element, to show that the check can fail.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np
import torch
import torch.distributed as dist

from reference.cases import EXACT_MATH, LAYERS, Case, default_cases, run_reference, run_tpsim
from reference.compare import NO_DIFF, Diff, Tap, diff, replay, same_bits
from reference.launch import RankContext, RankFailed, run, under_torchrun
from reference.record import compare_with_trace
from tpsim.report import fmt_bytes

DTYPES = ("float32", "bfloat16", "float16", "float64")


def rank_main(
    ctx: RankContext,
    cases: list[Case],
    inputs: list[list[dict]],
    mode: str,
    algorithm: str | None,
    inject: bool,
) -> list[dict]:
    """One rank: every case through the mirror layers, on this rank's inputs."""
    from reference.comm import Comm

    out = []
    for i, case in enumerate(cases):
        comm = Comm(mode=mode, algorithm=algorithm, backend=ctx.backend)
        tap = Tap(comm)
        tensors = run_reference(case, tap, inputs[i][ctx.rank], ctx.device)
        if inject and i == 0 and ctx.rank == 0 and tensors["out"].size:
            flat = tensors["out"].reshape(-1).view(np.uint8)
            flat[0] ^= 1  # the lowest bit of the first element (little-endian): one ULP
        out.append(dict(tensors=tensors, calls=tap.calls, record=list(comm.record)))
    if under_torchrun():  # no parent: every rank gets every rank's results
        gathered = [None] * ctx.world_size
        dist.all_gather_object(gathered, out)
        return gathered
    return out


def check(
    world_size: int | None,
    cases: list[Case],
    *,
    comm: str = "native",
    algorithm: str | None = None,
    device: str = "cpu",
    inject: bool = False,
    timeout: float = 300.0,
) -> dict:
    """Run `cases` in both engines and compare; returns {"rows", "cases", "ok", ...} (see `summary`)."""
    size = world_size or int(os.environ["WORLD_SIZE"])
    sims = [run_tpsim(c, size) for c in cases]
    inputs = [s.inputs for s in sims]
    got = run(rank_main, world_size, cases, inputs, comm, algorithm, inject, device=device, timeout=timeout)
    per_rank = got  # spawn: [rank 0's, ...]; torchrun: rank_main gathered every rank's
    rows, case_rows = [], []
    for i, sim in enumerate(sims):
        ranks = [per_rank[r][i] for r in range(size)]
        case_rows.append(_case_row(sim, ranks, comm, algorithm, size))
        rows += _tensor_rows(sim, ranks, case_rows[-1])
    ok = all(r["ok"] for r in rows) and all(c["ok"] for c in case_rows)
    return dict(
        world_size=size,
        comm=comm,
        algorithm=algorithm,
        device=device,
        ok=ok,
        rows=rows,
        cases=case_rows,
        claims=summary(rows, case_rows, comm),
    )


def _claim(case: Case) -> str:
    """bitwise (exact data, exact math); rounding (exact data through the libm functions: within the
    forward error bound of reference/cases_bounds.py); close (float data: assert_close's defaults)."""
    if case.data == "exact":
        return "bitwise" if case.layer in EXACT_MATH else "rounding"
    return "close"


def _holds(claim: str, d: Diff, bound: float = 0.0) -> bool:
    if claim == "rounding":
        return d.max_abs <= bound
    return {"bitwise": d.bitwise, "close": d.close}[claim]


def _tensor_rows(sim, ranks: list[dict], case_row: dict) -> list[dict]:
    claim, rows = _claim(sim.case), []
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
        ok = _holds(claim, d, bound) and agree is not False
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


def _case_row(sim, ranks: list[dict], comm: str, algorithm: str | None, size: int) -> dict:
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


def summary(rows: list[dict], cases: list[dict], comm: str) -> list[str]:
    """The closing claims, each computed from the rows (nothing here is a constant)."""
    out = []
    for claim, what in (
        ("bitwise", "exact data, exact-math layers"),
        ("rounding", "exact data, layers through tanh/exp/log/sqrt"),
        ("close", "float data, every layer"),
    ):
        mine = [r for r in rows if r["claim"] == claim]
        if not mine:
            continue
        layers = ", ".join(sorted({r["layer"] for r in mine}))
        n_bit = sum(r["bitwise"] for r in mine)
        if claim == "bitwise":
            out.append(f"{what} ({layers}): {n_bit}/{len(mine)} tensors bitwise equal across the engines")
            continue
        if claim == "rounding":
            n_ok = sum(r["max_abs"] <= r["bound"] for r in mine)
            worst = max(mine, key=lambda r: r["bound_ratio"])
            own = max((r["max_abs"] / r["rounding"] for r in mine if r["rounding"]), default=0.0)
            out.append(
                f"{what} ({layers}): {n_ok}/{len(mine)} tensors within the forward error bound "
                "2(n_acc u_acc + n_store u_store) max|T| (reference/cases_bounds.py); worst "
                f"error/bound {worst['bound_ratio']:.3g} ({worst['case']} {worst['tensor']}); "
                f"error / tpsim's own error vs float64 up to {own:.2f}; {n_bit} bitwise"
            )
        else:
            n_ok = sum(r["close"] for r in mine)
            out.append(
                f"{what} ({layers}): {n_ok}/{len(mine)} tensors within assert_close, {n_bit} bitwise; "
                f"worst {max(r['ulps'] for r in mine):.3g} ULPs of scale"
            )
    rep = [r for r in rows if r["ranks_agree"] is not None]
    out.append(
        f"replicated results: {sum(r['ranks_agree'] for r in rep)}/{len(rep)} hold the same bits "
        "on every rank"
    )
    n_coll = sum(c["ref_collectives"] for c in cases)
    out.append(
        f"collectives: {sum(c['counts_equal'] for c in cases)}/{len(cases)} cases issue as many "
        "as tpsim "
        f"({n_coll} in all); bytes: reference {sum(c['ref_bytes'] for c in cases)}, "
        f"tpsim {sum(c['tpsim_bytes'] for c in cases)}"
    )
    worst = max((c["replay_ulps"] for c in cases), default=0)
    out.append(
        f"{comm} collectives replayed in tpsim on the same operands: "
        f"{sum(c['replay_bitwise'] for c in cases)}/{len(cases)} cases bitwise "
        f"(worst {worst:.3g} ULPs), "
        f"{sum(c['replay_bytes_equal'] for c in cases)}/{len(cases)} with equal bytes"
        + ("" if comm == "schedule" else " (native: bits and bytes are reported, not required)")
    )
    return out


def print_table(result: dict, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, width=200)
    t = Table(
        title=f"reference vs tpsim: world size {result['world_size']}, comm {result['comm']}, "
        f"device {result['device']}",
        show_lines=False,
    )
    for col in (
        "layer",
        "tensor",
        "tier",
        "max abs",
        "allowed",
        "max rel",
        "ULPs*",
        "bitwise",
        "ranks agree",
        "coll. tpsim",
        "coll. ref",
        "replay",
        "ok",
    ):
        t.add_column(col, justify="right" if col in ("max abs", "allowed", "max rel", "ULPs*") else "left")
    by_case = {c["case"]: c for c in result["cases"]}
    seen = set()
    for r in result["rows"]:
        c = by_case[r["case"]]
        first = r["case"] not in seen
        seen.add(r["case"])
        coll = ["", "", ""]
        if first:
            coll = [
                f"{c['tpsim_collectives']} / {fmt_bytes(c['tpsim_bytes'])}",
                f"{c['ref_collectives']} / {fmt_bytes(c['ref_bytes'])}",
                ("bitwise" if c["replay_bitwise"] else f"{c['replay_ulps']:.3g} ulp")
                + ("" if c["replay_bytes_equal"] else ", bytes differ"),
            ]
        agree = "-" if r["ranks_agree"] is None else ("yes" if r["ranks_agree"] else "NO")
        ok = r["ok"] and (not first or c["ok"])
        t.add_row(
            r["case"] if first else "",
            r["tensor"],
            f"{r['data']} {r['dtype']}: {r['claim']}",
            f"{r['max_abs']:.2e}",
            _allowed(r),
            f"{r['max_rel']:.2e}",
            f"{r['ulps']:.3g}",
            "yes" if r["bitwise"] else "no",
            agree,
            *coll,
            "[green]ok[/]" if ok else "[red]MISMATCH[/]",
        )
    console.print(t)
    console.print("  * ULPs of the tensor's scale: max |ref - tpsim| over the float spacing at max |tpsim|")
    console.print(
        "  allowed: bitwise 0; rounding the bound 2(n_acc u_acc + n_store u_store) max|T| "
        "(error/bound in brackets, terms in the JSON's bound_terms); close assert_close's defaults"
    )
    for line in result["claims"]:
        console.print(f"  {line}")
    console.print("[green]all checks passed[/]" if result["ok"] else "[red]MISMATCH: see the rows marked[/]")


def _allowed(row: dict) -> str:
    """The comparison a row applied, as the table prints it."""
    if row["claim"] == "rounding":
        return f"{row['bound']:.2e} ({row['bound_ratio']:.2f})"
    return "0" if row["claim"] == "bitwise" else "assert_close"


def measure_libm(n: int = 1_000_000, seed: int = 0) -> dict[str, float]:
    """The share of float32 results where NumPy and torch (CPU) differ, per elementwise function."""
    x = (np.random.default_rng(seed).standard_normal(n) * 3).astype(np.float32)
    t = torch.from_numpy(x)
    pairs = {
        "tanh": (np.tanh(x), torch.tanh(t)),
        "exp": (np.exp(x), torch.exp(t)),
        "log": (np.log(np.abs(x)), torch.log(t.abs())),
        "sqrt": (np.sqrt(np.abs(x)), torch.sqrt(t.abs())),
    }
    return {k: float(np.mean(a != b.numpy())) for k, (a, b) in pairs.items()}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reference.check", description=__doc__.splitlines()[0])
    p.add_argument("--world-size", type=int, default=None, help="ranks to spawn (under torchrun: its own)")
    p.add_argument("--layers", default="all", help=f"comma-separated, from: {', '.join(LAYERS)}")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--comm", default="native", choices=("native", "schedule"))
    p.add_argument("--algorithm", default=None, help="schedule mode: tpsim's algorithm (default: per op)")
    p.add_argument("--data", default="exact,float", help="exact, float or both (comma-separated)")
    p.add_argument("--json", default="reference_check.json", help="where to write the table as JSON")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--inject-mismatch", action="store_true", help="flip one bit in the reference: must fail")
    p.add_argument("--libm", action="store_true", help="also measure NumPy vs torch float32 libm differences")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    layers = LAYERS if a.layers == "all" else tuple(x.strip() for x in a.layers.split(","))
    unknown = [x for x in layers if x not in LAYERS]
    datas = [x.strip() for x in a.data.split(",")]
    if unknown or any(d not in ("exact", "float") for d in datas):
        print(
            f"error: unknown layer(s) {unknown} or data {datas}; layers: {', '.join(LAYERS)}; "
            "data: exact, float",
            file=sys.stderr,
        )
        return 2
    if a.world_size is None and not under_torchrun():
        print("error: pass --world-size N (or run under torchrun)", file=sys.stderr)
        return 2
    size = a.world_size or int(os.environ["WORLD_SIZE"])
    cases = [c for d in datas for c in default_cases(size, d, a.dtype) if c.layer in layers]
    try:
        result = check(
            a.world_size,
            cases,
            comm=a.comm,
            algorithm=a.algorithm,
            device=a.device,
            inject=a.inject_mismatch,
            timeout=a.timeout,
        )
    except RankFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if under_torchrun() and int(os.environ["RANK"]) != 0:  # rank 0 prints and writes for all
        return 0 if result["ok"] else 1
    if a.libm:
        result["libm_mismatch_share"] = measure_libm()
    print_table(result)
    if a.libm:
        print(
            "NumPy vs torch float32, share of results that differ:",
            ", ".join(f"{k} {v:.1%}" for k, v in result["libm_mismatch_share"].items()),
        )
    pathlib.Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {a.json}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
