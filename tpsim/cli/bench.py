"""`tpsim bench`: every benchmark of the project in one run, one results file (benchmarks/run_all.py).

    tpsim bench            the full runs (minutes)
    tpsim bench --quick    small sizes, to check that everything runs

Runs benchmarks/bench_core.py, bench_nn.py, bench_reference.py (when present) and the CLI's own
(analysis time of GPT-3 175B), each as its own process, then writes benchmarks/results/all.json and
all.md with the machine described.  Needs a checkout: benchmarks/ is not installed with the wheel.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tpsim
from tpsim.cli.args import add_command, add_output_flags
from tpsim.errors import BenchError

RUN_ALL = Path(tpsim.__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


def register(sub) -> None:
    p = add_command(sub, "bench", "run every benchmark; one results file with the machine described", __doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, to check that every benchmark runs")
    p.add_argument("--only", help="comma list of benchmarks to run (core, nn, reference, cli)")
    p.add_argument("--out", help="results JSON (default benchmarks/results/all.json)")
    add_output_flags(p)
    p.set_defaults(func=run)


def run(args) -> tuple[dict, str]:
    if not RUN_ALL.exists():
        raise BenchError(f"{RUN_ALL} not found: `tpsim bench` runs from a checkout of the repository")
    cmd = [sys.executable, str(RUN_ALL)] + (["--quick"] if args.quick else [])
    cmd += ["--only", args.only] if args.only else []
    cmd += ["--out", args.out] if args.out else []
    cmd += ["--json"] if args.json else []
    done = subprocess.run(cmd, cwd=RUN_ALL.parents[1], stdout=subprocess.PIPE, text=True)
    if args.json:
        import json

        try:
            result = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise BenchError(f"benchmarks/run_all.py exited {done.returncode} without JSON results") from None
    else:
        result = {}
    result["exit_code"] = done.returncode
    return result, done.stdout.rstrip()
