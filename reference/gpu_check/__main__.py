"""python -m reference.gpu_check: the GPU proof, one command, each section time-boxed, the report after each.

    python -m reference.gpu_check                  # on a GPU: benchmarks/results/gpu/<gpu>-<date>.{md,json}
    python -m reference.gpu_check --quick          # on CPU, smallest sizes, < 60 s, into a temp folder
    python -m reference.gpu_check --quick --out DIR --budget-scale 0.01   # every section cut short

Sections, in order: a. facts; b. equivalence (reference.check per world size, comm, dtype);
c. memory (measured peak against tpsim's); d. compute (TP MLP GEMMs, square matmul, copy);
e. prediction against measurement (one block).  Each has a budget in seconds (reference/gpu_check/
sizes.py; the full run's add up to under 8 minutes); one past it stops and is recorded "cut short".
The JSON and the markdown are rewritten after every section, so a run that is killed leaves every
section it finished.  Exit code 0 when every section is "ok".
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from reference.gpu_check import compute, equivalence, facts, memory, predict
from reference.gpu_check.report import Report
from reference.gpu_check.sizes import FULL, QUICK, SECTION_ORDER, TOTAL_BUDGET_S, Sizes
from reference.gpu_check.timebox import run_section

SECTIONS = dict(facts=facts, equivalence=equivalence, memory=memory, compute=compute, predict=predict)


@dataclass
class Context:
    """What every section reads: the sizes, the device, section a's facts, earlier sections' records."""

    sizes: Sizes
    device: str  # "cuda" | "cpu"
    facts: dict
    quick: bool
    done: dict = field(default_factory=dict)  # section name -> its records

    @property
    def torch_device(self):
        import torch

        return torch.device("cuda", 0) if self.device == "cuda" else torch.device("cpu")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m reference.gpu_check",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smallest sizes, on CPU (gloo), under 60 s")
    p.add_argument(
        "--out",
        default=None,
        help="folder for the report (default: benchmarks/results/gpu/ "
        "for a full run on a GPU, a temp folder otherwise)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTION_ORDER),
        help=f"comma-separated, from {', '.join(SECTION_ORDER)} (facts always runs)",
    )
    p.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="multiply every section's budget (a test cuts sections short with 0.01)",
    )
    return p.parse_args(argv)


def default_out(quick: bool, device: str) -> Path:
    if not quick and device == "cuda":
        return Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu"
    return Path(tempfile.gettempdir()) / "tpsim-gpu-check"  # a CPU run never poses as a GPU result


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    import torch

    from tpsim.cli.gpu_report import slug

    a = parse(argv)
    names = ["facts"] + [n.strip() for n in a.sections.split(",") if n.strip() and n.strip() != "facts"]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not a.budget_scale > 0:
        print(
            f"error: unknown section(s) {unknown} (valid: {', '.join(SECTION_ORDER)}) or --budget-scale "
            f"{a.budget_scale} not > 0",
            file=sys.stderr,
        )
        return 2
    device = "cpu" if a.quick else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "error: the full check needs a CUDA device and torch sees none; run --quick on CPU",
            file=sys.stderr,
        )
        return 2
    ctx = Context(QUICK if a.quick else FULL, device, facts.collect(), a.quick)
    folder = Path(a.out) if a.out else default_out(a.quick, device)
    stem = f"{slug(ctx.facts['device_name'])}-{ctx.facts['date']}" + ("-quick" if a.quick else "")
    if (folder / f"{stem}.json").exists():
        stem += "-" + datetime.datetime.now(datetime.UTC).strftime("%H%M%S")
    budgets = {n: ctx.sizes.budgets[n] * a.budget_scale for n in names}
    meta = dict(
        ctx.facts,
        quick=a.quick,
        sections=names,
        budgets=budgets,
        full_run_budget_s=TOTAL_BUDGET_S,
        command=" ".join(["python -m reference.gpu_check", *sys.argv[1:]]),
    )
    report = run_all(ctx, names, budgets, Report(folder, stem, meta))
    return 0 if all(s["status"] == "ok" for s in report.doc["sections"]) else 1


def run_all(ctx: Context, names: list[str], budgets: dict, report: Report) -> Report:
    """Each section in turn under its budget; the report rewritten after each (and on SIGTERM)."""
    print(f"report: {report.md_path}", flush=True)
    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        for name in names:
            records: list = []
            start = time.monotonic()
            try:
                result = run_section(SECTIONS[name].section, budgets[name], records, ctx)
            except (SystemExit, KeyboardInterrupt):
                report.add(
                    name,
                    budgets[name],
                    dict(status="cut short", error="the run was terminated", wall_s=time.monotonic() - start),
                    records,
                )
                raise
            report.add(name, budgets[name], result, records)
            ctx.done[name] = records
            print(
                f"{name}: {result['status']} in {result['wall_s']:.1f} s"
                + (f" ({result['error']})" if result.get("error") else ""),
                flush=True,
            )
    finally:
        signal.signal(signal.SIGTERM, old)
    print(f"wrote {report.json_path} and {report.md_path}")
    return report


if __name__ == "__main__":
    raise SystemExit(main())
