"""Comparing DTensor's run with tpsim's: tensors, collective counts per phase, and the known differences.

tpsim's counts come from its communication table (forward, backward); DTensor's from CommDebugMode,
one per phase: forward, backward, and "grads P->R" (Partial grads made Replicate, as an optimizer
step on Replicate params would).  A count may differ from tpsim's only by what `known_differences`
derives from the module's structure, each with its reason:

  [regather]   SP backward, all_gather: tpsim (as Megatron) keeps only the sequence shard of each
               column-parallel linear's input and all-gathers it again for dW; DTensor's autograd
               saved the gathered input in forward.  tpsim: one more per column-parallel linear.
  [ln-fused]   SP backward, all_reduce: tpsim all-reduces each SequenceParallel LayerNorm's [dw; db]
               in backward, fused into one buffer; DTensor issues none there ...
  [ln-partial] ... its LayerNorm grads come out of backward as Partial(sum) DTensors, and making them
               Replicate costs one all-reduce for weight and one for bias (the "grads P->R" phase).
  [one-rank]   world size 1: tpsim's trace still records every collective (a group of one, 0 bytes
               moved), where DTensor skips them all.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch.testing import assert_close

from tpsim.nn import ColumnParallelLinear, LayerNorm
from tpsim.report import table

PHASES = ("forward", "backward", "grads P->R")
REASONS = {
    "regather": "tpsim re-gathers each column-parallel linear's input for dW; DTensor saved it",
    "ln-fused": "tpsim all-reduces each SP LayerNorm's [dw; db] in backward, fused",
    "ln-partial": "DTensor leaves SP LayerNorm grads P(sum): one all-reduce each for weight and bias",
    "one-rank": "one rank: tpsim records each collective (moving 0 bytes); DTensor issues none",
}


def known_differences(module, sp: bool, tpsim_counts: dict) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """(phase, kind) -> (tpsim count - DTensor count, reasons), from the module's structure."""
    if module.tp_size == 1:  # every tpsim collective is a group of one; DTensor issues none
        return {(p, k): (n, ["one-rank"]) for p, kinds in tpsim_counts.items() for k, n in kinds.items()}
    if not sp:
        return {}
    mods = list(_walk(module))
    columns = sum(isinstance(m, ColumnParallelLinear) for m in mods)
    norms = sum(isinstance(m, LayerNorm) for m in mods)
    out = {("backward", "all_gather"): (columns, ["regather"])}
    if norms:
        out[("backward", "all_reduce")] = (norms, ["ln-fused"])
        out[("grads P->R", "all_reduce")] = (-2 * norms, ["ln-partial"])
    return out


def _walk(module):
    yield module
    for child in module.children.values():
        yield from _walk(child)


def compare(tp: dict, ranks: list[dict], index: int) -> dict:
    """One case's report: every tensor against tpsim, the collective counts, the shards, rank agreement."""
    dt = ranks[0]["cases"][index]
    case = dt["case"]
    tensors = [
        _tensor_row(name, torch.from_numpy(want), dt[group][name])
        for group in ("outputs", "grads")
        for name, want in tp[group].items()
    ]
    shards_equal = all(
        torch.equal(r["cases"][index]["shards"][n], torch.from_numpy(s[r["rank"]]))
        for r in ranks
        for n, s in tp["shards"].items()
    )
    return {
        "case": asdict(case),
        "name": case.name,
        "tensors": tensors,
        "comm": comm_rows(tp["comm"], dt["comm"], tp["known"]),
        "shards_equal": shards_equal,  # DTensor's local shards are tpsim's shards, rank by rank
        "ranks_agree": all(r["ranks_agree"] for r in ranks),
        "grad_placements": dt["grad_placements"],
        "dtensor_ops": dt["ops"],  # CommDebugMode's names, e.g. c10d_functional.all_gather_into_tensor
    }


def _tensor_row(name: str, want: torch.Tensor, got: torch.Tensor) -> dict:
    try:
        assert_close(got, want)
        ok = True
    except AssertionError:
        ok = False
    err = (got - want).abs().max().item() if want.numel() else 0.0
    return {"name": name, "max_abs_err": err, "assert_close": ok, "bitwise": torch.equal(got, want)}


def comm_rows(tp: dict, dt: dict, known: dict) -> list[dict]:
    """Per phase and kind: tpsim's count, DTensor's, the known difference and whether they agree."""
    rows = []
    for phase in [*PHASES, *(p for p in {**tp, **dt} if p not in PHASES)]:
        tp_n, dt_n = tp.get(phase, {}), dt.get(phase, {})
        kinds = set(tp_n) | set(dt_n) | {k for p, k in known if p == phase}
        for kind in sorted(kinds):
            delta, reasons = known.get((phase, kind), (0, []))
            t, d = tp_n.get(kind, 0), dt_n.get(kind, 0)
            status = ("equal" if t == d else "known") if t - d == delta else "MISMATCH"
            rows.append(dict(phase=phase, kind=kind, tpsim=t, dtensor=d, expected_difference=delta,
                             reasons=reasons, status=status))
    return rows


def passed(report: dict) -> bool:
    return (
        all(t["assert_close"] for t in report["tensors"])
        and all(r["status"] != "MISMATCH" for r in report["comm"])
        and report["shards_equal"]
        and report["ranks_agree"]
    )


def format_reports(reports: list[dict], verbose: bool = False) -> str:
    rows = []
    for rep in reports:
        tensors = rep["tensors"]
        groups = [[t] for t in tensors[:2]] + ([[t] for t in tensors[2:]] if verbose else [tensors[2:]])
        for g in groups:
            label = g[0]["name"] if len(g) == 1 else f"grads ({len(g)})"
            rows.append((rep["name"], label, f"{max(t['max_abs_err'] for t in g):.2e}",
                         _yes(all(t["assert_close"] for t in g)), _yes(all(t["bitwise"] for t in g))))
    numbers = table(rows, ("case", "tensor", "max abs err", "assert_close", "bitwise"),
                    "Outputs and grads: DTensor vs tpsim")
    comm, seen = [], set()
    for rep in reports:
        key = (rep["case"]["layer"], rep["case"]["sp"])
        if key in seen and all(r["status"] != "MISMATCH" for r in rep["comm"]):
            continue  # counts do not depend on the data: shown once per layer (every case is checked)
        seen.add(key)
        for r in rep["comm"]:
            note = r["status"] + (f" [{', '.join(r['reasons'])}]" if r["reasons"] else "")
            layer = rep["case"]["layer"] + (" SP" if rep["case"]["sp"] else "")
            comm.append((layer, r["phase"], r["kind"], r["tpsim"], r["dtensor"], note))
    counts = table(comm, ("layer", "phase", "collective", "tpsim", "DTensor", "status"),
                   "Collectives: tpsim comm_table vs CommDebugMode")
    used = {k for rep in reports for r in rep["comm"] for k in r["reasons"]}
    notes = "\n".join(f"  [{k}] {v}" for k, v in REASONS.items() if k in used)
    checks = "\n".join(
        f"{rep['name']}: shards equal {_yes(rep['shards_equal'])}, ranks agree {_yes(rep['ranks_agree'])}"
        for rep in reports
    )
    ops = sorted({op for rep in reports for op in rep["dtensor_ops"]})
    return f"{numbers}\n\n{counts}\n{notes}\n  CommDebugMode's ops: {', '.join(ops)}\n\n{checks}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"
