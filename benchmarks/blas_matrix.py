"""`python -m reference.check` under other BLAS kernels and thread counts: does it pass on each?

    python benchmarks/blas_matrix.py [--quick] [--out benchmarks/results/blas_matrix.json]

The two engines reach BLAS differently: NumPy (tpsim) through OpenBLAS, torch's CPU wheel (the
reference) through MKL for float32 GEMMs and oneDNN (mkldnn) for bfloat16 ones and some others.
Each picks its kernel at run time for the CPU it finds, which is why a check tuned on one CPU can fail
on another.  Every variant below runs the whole checker at world size 2 in a fresh subprocess (the
spawned ranks inherit its environment):

  OPENBLAS_CORETYPE    OpenBLAS's kernel family; the one it really used is read back
                       (scipy_openblas_get_corename64_), since it falls back silently
  OPENBLAS/OMP_NUM_THREADS, MKL_ENABLE_INSTRUCTIONS, MKL_CBWR, DNNL_MAX_CPU_ISA, ATEN_CPU_CAPABILITY
  torch.backends.mkldnn.enabled = False, torch.set_num_threads: set in every process by a
                       sitecustomize written to a temporary directory put first on PYTHONPATH

Only kernels this CPU can execute are listed (AVX-512 ones only where /proc/cpuinfo has avx512f).
Per variant: pass/fail, and the worst error/bound of the rounding tier (reference/cases_bounds.py)
and the worst ULPs of scale of the float tier.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tpsim.machine import describe_machine, write_results  # noqa: E402

SITECUSTOMIZE = """import json, os
_s = json.loads(os.environ.get("BLAS_MATRIX_TORCH", "{}"))
if _s:
    import torch
    if "mkldnn" in _s:
        torch.backends.mkldnn.enabled = _s["mkldnn"]
    if "threads" in _s:
        torch.set_num_threads(_s["threads"])
"""

PROBE = r"""
import ctypes, glob, json, os, numpy, torch
libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), "..", "numpy.libs", "*openblas*"))
core = None
for lib in libs:
    try:
        f = ctypes.CDLL(lib).scipy_openblas_get_corename64_
        f.restype = ctypes.c_char_p
        core = f().decode()
    except (OSError, AttributeError):
        pass
print(json.dumps(dict(openblas_core=core, torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                      torch_threads=torch.get_num_threads(), mkldnn=torch.backends.mkldnn.enabled)))
"""


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def variants(flags: set[str], quick: bool) -> list[tuple[str, dict, dict]]:
    """(name, environment, torch settings) for every variant this CPU can run."""
    out = [("default", {}, {})]
    cores = ["Prescott", "Sandybridge", "Haswell", "Zen"]
    if "avx512f" in flags:
        cores += ["SkylakeX", "Cooperlake"]
    out += [(f"OPENBLAS_CORETYPE={c}", {"OPENBLAS_CORETYPE": c}, {}) for c in cores]
    for n in (1, 2):
        env = {"OPENBLAS_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        out.append((f"threads={n}", env, {"threads": n}))
    mkl = ["AVX2", "SSE4_2"] + (["AVX512"] if "avx512f" in flags else [])
    out += [(f"MKL_ENABLE_INSTRUCTIONS={m}", {"MKL_ENABLE_INSTRUCTIONS": m}, {}) for m in mkl]
    out += [("MKL_CBWR=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}, {})]
    out += [("DNNL_MAX_CPU_ISA=AVX2", {"DNNL_MAX_CPU_ISA": "AVX2"}, {})]
    out += [(f"ATEN_CPU_CAPABILITY={c}", {"ATEN_CPU_CAPABILITY": c}, {}) for c in ("default", "avx2")]
    out += [("mkldnn off", {}, {"mkldnn": False})]
    out += [
        (
            "mix: OpenBLAS Haswell, MKL AVX2, 1 thread",
            {
                "OPENBLAS_CORETYPE": "Haswell",
                "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
            },
            {"threads": 1},
        )
    ]
    return out[:4] if quick else out


def run_variant(name: str, env: dict, torch_settings: dict, site: Path, args: list[str]) -> dict:
    full = dict(
        os.environ,
        **env,
        BLAS_MATRIX_TORCH=json.dumps(torch_settings),
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    probe = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, check=True
        ).stdout
    )
    rows = {}
    t0 = time.perf_counter()
    for comm in ("native", "schedule"):
        out = site / f"check_{comm}.json"
        out.unlink(missing_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "reference.check",
                "--world-size",
                "2",
                "--comm",
                comm,
                "--json",
                str(out),
                *args,
            ],
            cwd=ROOT,
            env=full,
            capture_output=True,
            text=True,
            timeout=900,
        )
        result = json.loads(out.read_text()) if out.exists() else {"ok": False, "rows": []}
        rounding = [r["bound_ratio"] for r in result["rows"] if r["claim"] == "rounding"]
        close = [r["ulps"] for r in result["rows"] if r["claim"] == "close"]
        bad = [f"{r['case']} {r['tensor']}" for r in result["rows"] if not r["ok"]]
        rows[comm] = dict(
            ok=proc.returncode == 0 and result["ok"],
            rc=proc.returncode,
            tensors=len(result["rows"]),
            worst_bound_ratio=max(rounding, default=None),
            worst_close_ulps=max(close, default=None),
            mismatches=bad[:5],
            stderr_tail=proc.stderr[-500:] if proc.returncode not in (0, 1) else "",
        )
    return dict(
        variant=name, env=env, torch=torch_settings, probe=probe, seconds=time.perf_counter() - t0, **rows
    )


def markdown(machine: dict, results: list[dict], args: list[str]) -> str:
    lines = [
        "# reference.check under other BLAS kernels and thread counts",
        "",
        f"Machine: {machine['summary']}.  numpy BLAS: {machine['numpy_blas']}; torch: {machine['torch']}.",
        f"Checker: `{' '.join(['python -m reference.check --world-size 2 --comm native|schedule', *args])}`"
        + ("" if args else ", every case (exact and float data, float32)")
        + ".  `bound` is the worst error / derived bound of the "
        "rounding tier (must be <= 1); `ULPs` the worst error of the float tier in ULPs of scale "
        "(it must pass assert_close).  `core` is the OpenBLAS kernel family really loaded.",
        "",
        "| variant | core | torch ISA, threads, mkldnn | native | bound | ULPs | schedule | bound | ULPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    for r in results:
        n, s, p = r["native"], r["schedule"], r["probe"]
        torch_cfg = f"{p['torch_cpu_capability']}, {p['torch_threads']}, {p['mkldnn']}"
        cells = [r["variant"], p["openblas_core"], torch_cfg]
        for m in (n, s):
            cells += ["pass" if m["ok"] else "FAIL", fmt(m["worst_bound_ratio"]), fmt(m["worst_close_ulps"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    n_pass = sum(r["native"]["ok"] and r["schedule"]["ok"] for r in results)
    worst = max((r[c]["worst_bound_ratio"] or 0 for r in results for c in ("native", "schedule")), default=0)
    lines += [
        "",
        f"{n_pass}/{len(results)} variants pass in both modes; worst error/bound over all: {worst:.3g}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the first 4 variants only")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "blas_matrix.json"))
    p.add_argument(
        "--check-args", default="", help="extra arguments for reference.check, e.g. '--layers gpt'"
    )
    a = p.parse_args(argv)
    import numpy as np
    import torch

    machine = describe_machine()
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    machine["numpy_blas"] = f"{blas['name']} {blas['version']} ({blas.get('openblas configuration', '')})"
    cfg = torch.__config__.show()
    machine["torch"] = f"{torch.__version__}, " + "; ".join(
        ln.strip(" -")
        for ln in cfg.splitlines()
        if "Math Kernel" in ln or "MKL-DNN" in ln or "CPU capability" in ln
    )
    machine["avx512f"] = "avx512f" in cpu_flags()
    args = a.check_args.split()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        for name, env, ts in variants(cpu_flags(), a.quick):
            results.append(run_variant(name, env, ts, site, args))
            r = results[-1]
            print(
                f"{name}: native {r['native']['ok']} schedule {r['schedule']['ok']} ({r['seconds']:.0f} s)",
                flush=True,
            )
    write_results(
        a.out, dict(machine=machine, check_args=args, variants=results), markdown(machine, results, args)
    )
    return 0 if all(r["native"]["ok"] and r["schedule"]["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
