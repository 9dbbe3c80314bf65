"""`tpsim fit-gemm`: fit a device's GEMM efficiency (tpsim/efficiency.py) to measured GEMM times.

    tpsim fit-gemm --numpy [--threads 1]         time this machine's NumPy float32 GEMMs, then fit
    tpsim fit-gemm --gpu-report FILE --device h100
                                                 the bf16 GEMMs of a reference.gpu_check report
    tpsim fit-gemm --table gemms.json --device a100 --dtype bfloat16
                                                 a JSON list of {m, n, k, seconds}

Fitted: gemm_fraction (of the datasheet peak), k_half and launch; the tile and SM count stay the
device preset's.  For NumPy there is no datasheet: the peak is the best rate measured, so the
fraction is relative to it, and the SM/tile quantization is off (1 x 1 tiles on one "SM").  The
output gives, per GEMM, the measured and predicted time and the error; --out writes the fit as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from tpsim.cli.args import add_command, add_output_flags, device_name, positive_int
from tpsim.efficiency import EFFICIENCIES, Efficiency
from tpsim.efficiency_fit import fit, gpu_report_table, measure_numpy_threads
from tpsim.hardware import device_spec
from tpsim.report import table


def register(sub) -> None:
    p = add_command(
        sub,
        "fit-gemm",
        "fit GEMM efficiency (fraction of peak, k-loop, launch) to measured GEMM times",
        __doc__,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--numpy", action="store_true", help="measure this machine's NumPy float32 GEMMs")
    src.add_argument("--gpu-report", type=Path, help="a reference.gpu_check report (.json)")
    src.add_argument("--table", type=Path, help="a JSON list of {m, n, k, seconds}")
    p.add_argument("--device", type=device_name, default="h100", help="the preset fitted (default h100)")
    p.add_argument("--dtype", default="bfloat16", help="the dtype of the GEMMs (default bfloat16)")
    p.add_argument("--threads", type=positive_int, default=1, help="BLAS threads for --numpy (default 1)")
    p.add_argument("--out", type=Path, help="write the fitted parameters here (.json)")
    add_output_flags(p)
    p.set_defaults(func=run)


def run(args) -> tuple[dict, str]:
    if args.numpy:
        rows = measure_numpy_threads(args.threads)
        peak = max(2 * r["m"] * r["n"] * r["k"] / r["seconds"] for r in rows)
        base = Efficiency("numpy-cpu", 1.0, 1, (1, 1), 0.0, 1.0, 0.0, "", "")
        what = f"NumPy float32 on this machine, {args.threads} BLAS thread(s); peak = the best rate measured"
    else:
        rows = gpu_report_table(args.gpu_report, args.dtype) if args.gpu_report else _read(args.table)
        key = str(args.device).lower()
        base = EFFICIENCIES.get(key) or Efficiency(key, 1.0, 1, (1, 1), 0.0, 1.0, 0.0, "", "")
        peak = device_spec(args.device).peak(args.dtype)
        what = f"{args.gpu_report or args.table}, {args.dtype}, peak {peak / 1e12:.4g} TFLOP/s (datasheet)"
    fitted, rep = fit(rows, base, peak)
    fitted = fitted.with_(source=f"fitted by tpsim fit-gemm to {what}", date="")
    result = {"fitted": dataclasses.asdict(fitted), "peak": peak, **rep}
    if args.numpy:
        from tpsim.machine import describe_machine

        result["machine"] = dict(describe_machine(), load_average=os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result, text(result, what)


def _read(path: Path) -> list[dict]:
    return [dict(r, dtype=r.get("dtype", "")) for r in json.loads(path.read_text())]


def text(r: dict, what: str) -> str:
    f = r["fitted"]
    head = (
        f"GEMM efficiency fitted to {what}:\n"
        f"  gemm_fraction {f['gemm_fraction']:.3f} (= {f['gemm_fraction'] * r['peak'] / 1e12:.4g} TFLOP/s), "
        f"k_half {f['k_half']:.1f}, launch {f['launch'] * 1e6:.2f} us; tiles {f['tile']} on {f['sms']} SMs\n"
        f"  error: median {r['median_abs_error']:.1%}, worst {r['max_abs_error']:.1%}"
    )
    body = [
        (
            x["m"],
            x["n"],
            x["k"],
            f"{x['seconds'] * 1e6:.1f}",
            f"{x['predicted'] * 1e6:.1f}",
            f"{x['error']:+.1%}",
        )
        for x in r["rows"]
    ]
    return head + "\n\n" + table(body, ("m", "n", "k", "measured us", "predicted us", "error"), "Per GEMM")
