"""Every benchmark of the project in one run, and one results file with the machine described.

    python benchmarks/run_all.py [--quick] [--only core,nn,reference,cli] [--out benchmarks/results/all.json]
    tpsim bench [--quick]                                  (the same)

Runs, each as its own process so that one cannot slow the next through leftover memory:

    core       benchmarks/bench_core.py       the simulator's engine against memcpy; 1024-device rings
    nn         benchmarks/bench_nn.py         a TP MLP against NumPy and PyTorch; GPT-3 analysed
    reference  benchmarks/bench_reference.py  tpsim against gloo (when the file exists)
    cli        this file                      `tpsim model gpt3-175b --tp 8` and `tpsim compare
                                              --model gpt3-175b --devices 64`: end to end (a fresh
                                              interpreter, imports included) and the analysis alone

Full runs write each benchmark's own results (benchmarks/results/<name>.json and .md) and then
all.json / all.md, which hold them all.  --quick runs write into a temporary directory unless --out
is given, so the kept results are never replaced by quick ones.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = {"core": "bench_core.py", "nn": "bench_nn.py", "reference": "bench_reference.py"}
CLI_CASES = {
    "model gpt3-175b --tp 8": ["model", "gpt3-175b", "--tp", "8", "--json"],
    "compare --model gpt3-175b --devices 64": [
        "compare",
        "--model",
        "gpt3-175b",
        "--devices",
        "64",
        "--json",
    ],
}


def run_script(name: str, out_dir: Path, quick: bool) -> dict:
    script = HERE / SCRIPTS[name]
    if not script.exists():
        return {"status": "absent", "detail": f"{script.name} does not exist yet"}
    out = out_dir / f"{name}.json"
    cmd = [sys.executable, str(script), "--out", str(out)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    entry = {"command": " ".join(cmd[1:]), "exit_code": done.returncode, "wall_s": wall}
    if done.returncode or not out.exists():
        return {**entry, "status": "failed", "detail": (done.stderr or done.stdout)[-2000:]}
    md = out.with_suffix(".md")
    return {
        **entry,
        "status": "ok",
        "results": json.loads(out.read_text()),
        "markdown": md.read_text() if md.exists() else "",
    }


def cli_benchmark(repeats: int) -> dict:
    """Wall time of the CLI on GPT-3 175B: a fresh interpreter each time, and in this process."""
    from tpsim.cli import main

    cases = {}
    for label, argv in CLI_CASES.items():
        fresh = []
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "tpsim.cli", *argv], cwd=ROOT, capture_output=True, text=True
            )
            fresh.append(time.perf_counter() - start)
            if done.returncode:
                raise RuntimeError(f"tpsim {' '.join(argv)} failed: {done.stderr[-1000:]}")
        warm, result = [], None
        for _ in range(repeats):
            buf = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                main(argv)
            warm.append(time.perf_counter() - start)
            result = json.loads(buf.getvalue())
        cases[label] = {
            "fresh_process_s": fresh,
            "fresh_process_median_s": statistics.median(fresh),
            "in_process_s": warm,
            "in_process_median_s": statistics.median(warm),
            "summary": _summary(result),
        }
    return {"status": "ok", "repeats": repeats, "results": cases, "markdown": _cli_markdown(cases)}


def _summary(r: dict) -> str:
    if "rows" in r:
        best = r["rows"][0]
        return (
            f"{len(r['rows'])} layouts ranked, {len(r['skipped'])} skipped; first: {best['layout']}, "
            f"step {best['time']['step']:.3g} s, {best['memory_per_device']['total'] / 2**30:.1f} GiB"
        )
    return (
        f"step {r['time']['step']:.3g} s, TP sent {r['traffic_per_device']['tp'] / 2**30:.1f} GiB, "
        f"memory {r['memory_per_device']['total'] / 2**30:.1f} GiB per device"
    )


def _cli_markdown(cases: dict) -> str:
    lines = [
        "# tpsim CLI on GPT-3 175B",
        "",
        "| command | fresh interpreter (median) | in process (median) | result |",
        "|---|---|---|---|",
    ]
    for label, c in cases.items():
        lines.append(
            f"| `tpsim {label}` | {c['fresh_process_median_s']:.2f} s | {c['in_process_median_s']:.2f} s "
            f"| {c['summary']} |"
        )
    return "\n".join(lines) + "\n"


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# All benchmarks",
        "",
        f"Machine: {m['summary']}",
        f"Date: {doc['date']}",
        f"Load average before: {doc['load_before']}, after: {doc['load_after']}",
        "",
        "| benchmark | status | wall |",
        "|---|---|---|",
    ]
    for name, b in doc["benchmarks"].items():
        wall = f"{b['wall_s']:.1f} s" if "wall_s" in b else ""
        lines.append(
            f"| {name} | {b['status']}{': ' + b['detail'].splitlines()[-1] if b.get('detail') else ''} "
            f"| {wall} |"
        )
    for b in doc["benchmarks"].values():
        if b.get("markdown"):  # each benchmark's own report, its headings one level down
            lines += [""] + [("#" + ln if ln.startswith("#") else ln) for ln in b["markdown"].splitlines()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    ap.add_argument("--only", default="core,nn,reference,cli", help="comma list of: core, nn, reference, cli")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/all.json)")
    ap.add_argument("--json", action="store_true", help="print the results JSON instead of the Markdown")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in names if n not in (*SCRIPTS, "cli")]
    if bad:
        ap.error(f"--only: unknown benchmark {bad[0]!r}; valid: {', '.join([*SCRIPTS, 'cli'])}")
    sys.path.insert(0, str(ROOT))
    from tpsim.machine import describe_machine, write_results

    tmp = tempfile.TemporaryDirectory() if args.quick and not args.out else None
    out = Path(args.out) if args.out else (Path(tmp.name) if tmp else HERE / "results") / "all.json"
    each_dir = out.parent

    doc = {
        "machine": describe_machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "quick": args.quick,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "benchmarks": {},
    }
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if name == "cli":
            start = time.perf_counter()
            doc["benchmarks"][name] = {**cli_benchmark(1 if args.quick else 5), "wall_s": 0.0}
            doc["benchmarks"][name]["wall_s"] = time.perf_counter() - start
        else:
            doc["benchmarks"][name] = run_script(name, each_dir, args.quick)
    doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    text = markdown(doc)
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        write_results(out, doc, text)  # all.json, all.md beside it, and the Markdown on stdout
    if args.json:
        print(json.dumps(doc, indent=2))
    failed = [n for n, b in doc["benchmarks"].items() if b["status"] == "failed"]
    if tmp:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
