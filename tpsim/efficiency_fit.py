"""Fit a device's GEMM efficiency (efficiency.py) to a measured table of GEMM times.

The model's compute time is linear in three unknowns once the tile quantization q is fixed:

    t = launch + 2 m n k / (q peak) * (1 / gemm_fraction) * (1 + k_half / k)
      = launch * 1 + x * (1 / gemm_fraction) + (x / k) * (k_half / gemm_fraction),   x = 2mnk / (q peak)

so a least-squares fit on the relative error (rows scaled by 1 / t, as cli/fit.py does for alpha
and beta) gives them; negative solutions are clipped to 0 and the rest refitted.

    measure_numpy(shapes)       this machine's NumPy GEMMs: [{m, n, k, dtype, seconds}]
    gpu_report_table(path)      the GEMM records of a GPU report's compute section (reference.gpu_check)
    fit(table, base, peak)      an Efficiency with gemm_fraction, k_half, launch fitted; and the errors
    load(path)                  the Efficiency a `tpsim fit-gemm --out FILE` wrote, for --efficiency FILE
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tpsim.efficiency import Efficiency
from tpsim.errors import FitError

NUMPY_SHAPES = (
    (64, 64, 64),
    (128, 128, 128),
    (256, 256, 64),
    (256, 256, 256),
    (512, 512, 32),
    (512, 512, 128),
    (512, 512, 512),
    (1024, 256, 1024),
    (256, 1024, 512),
    (768, 768, 768),
    (1024, 1024, 256),
    (1024, 1024, 1024),
)


def measure_numpy(
    shapes=NUMPY_SHAPES, dtype: str = "float32", reps: int = 3, min_s: float = 0.01
) -> list[dict]:
    """Seconds of (m, k) @ (k, n) in NumPy per shape: each sample repeats the call for >= min_s and
    averages; the minimum of `reps` samples (on a crowded machine the minimum is the least disturbed)."""
    rng = np.random.default_rng(0)
    rows = []
    for m, n, k in shapes:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        a @ b  # warm-up: page in, pick the BLAS kernel
        best = np.inf
        for _ in range(reps):
            calls, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < min_s or calls == 0:
                a @ b
                calls += 1
            best = min(best, elapsed / calls)
        rows.append(dict(m=m, n=n, k=k, dtype=dtype, seconds=best))
    return rows


def measure_numpy_threads(threads: int = 1, shapes=NUMPY_SHAPES) -> list[dict]:
    """measure_numpy in a fresh process whose BLAS runs `threads` threads (fixed before NumPy loads:
    on a shared machine, an oversubscribed multithreaded BLAS measures the neighbours, not the GEMM)."""
    n = str(threads)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    code = "import json, sys; from tpsim.efficiency_fit import measure_numpy; "
    code += f"print(json.dumps(measure_numpy({[tuple(s) for s in shapes]!r})))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return [dict(r, threads=threads) for r in json.loads(out.stdout)]


def gpu_report_table(path, dtype: str = "bfloat16") -> list[dict]:
    """The GEMM and square-matmul records of `dtype` (TF32 off) in a reference.gpu_check report."""
    from tpsim.cli.gpu_report import read

    sections = {x["name"]: x for x in read(path)["sections"]}
    records = sections.get("compute", {}).get("records", [])
    rows = [
        dict(m=r["m"], n=r["n"], k=r["k"], dtype=r["dtype"], seconds=r["seconds"])
        for r in records
        if r.get("kind") in ("gemm", "square") and r.get("dtype") == dtype and not r.get("tf32")
    ]
    if not rows:
        raise FitError(f"GPU report {path}: no {dtype} GEMM records in its compute section")
    return rows


def fit(table: list[dict], base: Efficiency, peak: float) -> tuple[Efficiency, dict]:
    """base with gemm_fraction, k_half and launch fitted to `table`; per row measured/predicted/error.

    `peak` is the datasheet FLOP/s the fraction is of; base's sms and tile stay as they are.
    """
    if len(table) < 3:
        raise FitError(f"need at least 3 GEMMs to fit 3 parameters; got {len(table)}")
    t = np.array([r["seconds"] for r in table], dtype=np.float64)
    if not (np.isfinite(t).all() and (t > 0).all()):
        raise FitError(f"measured times must be finite and > 0; got {t.tolist()}")
    shapes = [(r["m"], r["n"], r["k"]) for r in table]
    x = np.array([2 * m * n * k / (base.quantization(m, n, 1, k) * peak) for m, n, k in shapes])
    k = np.array([k / base.splits(m, n, k) for m, n, k in shapes], dtype=np.float64)  # k per split-K slice
    A = np.stack([np.ones_like(t), x, x / k], axis=1) / t[:, None]  # residuals: relative errors
    coef = _nonnegative_lstsq(A, np.ones_like(t))
    if coef[1] <= 0:
        raise FitError("the fit found no compute term (1 / gemm_fraction = 0): the table is all overhead")
    launch, inv_frac, kh_over_frac = (float(v) for v in coef)
    fitted = base.with_(gemm_fraction=1 / inv_frac, k_half=kh_over_frac / inv_frac, launch=launch)
    pred = launch + x * inv_frac + x / k * kh_over_frac
    err = (pred - t) / t
    rows = [
        dict(r, predicted=float(p), error=float(e), tflops=2 * r["m"] * r["n"] * r["k"] / r["seconds"] / 1e12)
        for r, p, e in zip(table, pred, err, strict=True)
    ]
    return fitted, {
        "rows": rows,
        "median_abs_error": float(np.median(np.abs(err))),
        "max_abs_error": float(np.abs(err).max()),
    }


def _nonnegative_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: drop the most negative one and refit.  Column 1 (the
    compute term) is kept: if it alone goes negative (a table dominated by overhead), the others go."""
    keep = list(range(A.shape[1]))
    while True:
        sol = np.zeros(A.shape[1])
        sol[keep], *_ = np.linalg.lstsq(A[:, keep], y, rcond=None)
        negative = [i for i in keep if sol[i] < 0]
        if not negative:
            return sol
        others = [i for i in negative if i != 1] or [i for i in keep if i != 1]
        keep.remove(min(others, key=lambda i: sol[i]))


def load(path) -> Efficiency:
    """The fitted Efficiency in a file `tpsim fit-gemm --out` wrote."""
    try:
        doc = json.loads(Path(path).read_text())["fitted"]
        return Efficiency(**dict(doc, tile=tuple(doc["tile"])))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FitError(f"{path}: not a `tpsim fit-gemm --out` file ({e})") from None
