"""The checker's report: the closing claims, computed from the rows, and the rich table.

Every figure printed here is computed from the rows `reference.check` compared; the table says, per
tensor, which comparison it applied ("tier") and what it allowed ("allowed": 0 for bitwise, the
forward error bound of reference/cases_bounds.py with error/bound for rounding, assert_close's
defaults for close).
"""

from __future__ import annotations

import numpy as np
import torch

from tpsim.report import fmt_bytes


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
