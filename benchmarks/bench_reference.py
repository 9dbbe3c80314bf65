"""Benchmark of the reference: tpsim's ring schedule over isend/irecv against gloo's own all_reduce.

    python benchmarks/bench_reference.py [--quick] [--out benchmarks/results/reference.json]

Two ranks, gloo on CPU, float32 all_reduce (sum) of 1 KiB .. 64 MiB (powers of 4). For each size,
interleaved in one run: native `dist.all_reduce`, then `Comm(mode="schedule", algorithm="ring")`.
Each measurement is barrier-synchronised, the slower rank's time is kept (max over ranks), and the
median of several repeats after warm-ups is reported. The ratio schedule / native has the goal <= 2
on large messages.

Beside them, the simulator's prediction for a ring all_reduce on a 2-device fully connected topology
whose alpha (latency) and bandwidth are fitted in this same run, by least squares, to the native
times (t = 2 alpha + S / bandwidth for p = 2): an in-sample fit, so it shows how well the alpha-beta
model's shape fits gloo, not an independent prediction (`tpsim calibrate` fits a topology for that).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `reference` runs from the checkout

import tpsim
from reference.comm import Comm
from reference.launch import spawn
from tpsim.machine import describe_machine, write_results
from tpsim.presets import fully_connected

P = 2


def _timed(fn, x) -> float:
    dist.barrier()
    t = time.perf_counter()
    fn(x)
    mine = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
    dist.all_reduce(mine, op=dist.ReduceOp.MAX)  # the collective ends when its slowest rank does
    return float(mine)


def measure(ctx, sizes: list[int], repeats: int, warmup: int) -> list[dict]:
    comm = Comm(mode="schedule", algorithm="ring")

    def native(x):
        y = x.clone()  # Comm returns a new tensor; give native the same copy to make
        dist.all_reduce(y)
        return y

    out = []
    for nbytes in sizes:
        x = torch.randn(nbytes // 4, dtype=torch.float32)
        for _ in range(warmup):
            native(x)
            comm.all_reduce(x)
        times = {"native": [], "schedule": []}
        for _ in range(repeats):  # interleaved, so both see the same load on a shared machine
            times["native"].append(_timed(native, x))
            times["schedule"].append(_timed(comm.all_reduce, x))
        last = comm.record[-1]
        out.append(
            {
                "bytes": nbytes,
                "native_s": statistics.median(times["native"]),
                "schedule_s": statistics.median(times["schedule"]),
                "schedule_bytes_sent_per_rank": last.bytes_sent,
                "native_min_s": min(times["native"]),
                "schedule_min_s": min(times["schedule"]),
            }
        )
    return out


def fit_alpha_beta(rows: list[dict]) -> tuple[float, float]:
    """Least squares of t = 2 alpha + S / bandwidth (ring, p = 2) on the native medians, in relative
    error (each row divided by its time), so that 1 KiB counts as much as 64 MiB."""
    S = np.array([r["bytes"] for r in rows], dtype=np.float64)
    t = np.array([r["native_s"] for r in rows])
    A = np.stack([np.full_like(S, 2.0), S], axis=1) / t[:, None]
    (alpha, inv_bw), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    return max(float(alpha), 0.0), 1.0 / max(float(inv_bw), 1e-30)


def predicted(nbytes: int, alpha: float, bandwidth: float) -> float:
    mesh = tpsim.Mesh(P, topology=fully_connected(P, alpha, bandwidth))
    tpsim.all_reduce([tpsim.meta(nbytes // 4, "float32")] * P, mesh, algorithm="ring")
    return mesh.trace.collectives[-1].time


def markdown(results: dict) -> str:
    f = results["fit"]
    lines = [
        "# reference benchmark: schedule-mode ring all_reduce vs gloo's all_reduce",
        "",
        f"Machine: {results['machine']['summary']}, torch {results['torch']}",
        f"Date: {results['date']}",
        f"Setup: {results['setup']}",
        f"Simulator: ring all_reduce on fully_connected({P}) with alpha = {f['alpha_s'] * 1e6:.1f} µs and "
        f"bandwidth = {f['bandwidth_Bps'] / 1e9:.2f} GB/s, fitted in this run to the native times "
        "(in-sample).",
        "",
        "| size | native gloo | schedule (ring, isend/irecv) | ratio | tpsim predicted | sent per rank |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        size = f"{r['bytes'] >> 20} MiB" if r["bytes"] >= 1 << 20 else f"{r['bytes'] >> 10} KiB"
        lines.append(
            f"| {size} | {r['native_s'] * 1e3:.3f} ms | {r['schedule_s'] * 1e3:.3f} ms "
            f"| **{r['ratio']:.2f}** | {r['predicted_s'] * 1e3:.3f} ms "
            f"| {r['schedule_bytes_sent_per_rank']:,} B |"
        )
    lines += ["", results["verdict"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--out", default="benchmarks/results/reference.json")
    args = ap.parse_args()
    top = 1 << 20 if args.quick else 64 << 20
    sizes = [1 << k for k in range(10, top.bit_length(), 2)]  # 1 KiB, 4 KiB, ..., 64 MiB
    repeats, warmup = (3, 1) if args.quick else (9, 2)
    rows = spawn(measure, P, sizes, repeats, warmup, device="cpu", timeout=1800)[0]
    alpha, bandwidth = fit_alpha_beta(rows)
    for r in rows:
        r["ratio"] = r["schedule_s"] / r["native_s"]
        r["predicted_s"] = predicted(r["bytes"], alpha, bandwidth)
    large = [r["ratio"] for r in rows if r["bytes"] >= 4 << 20]
    met = bool(large) and max(large) <= 2
    verdict = (
        f"Goal (ratio <= 2 on messages >= 4 MiB): {'met' if met else 'MISSED'}, worst ratio {max(large):.2f}."
        if large
        else "No message >= 4 MiB in this run (--quick)."
    )
    results = {
        "machine": describe_machine(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "setup": (
            f"{P} ranks, gloo on CPU, float32 sum; median of {repeats} interleaved, barrier-synchronised "
            f"repeats after {warmup} warm-ups; time = slowest rank. The 2 cores are shared with other "
            "jobs running at the same time, so absolute times are noisy; the ratio is measured side by side."
        ),
        "fit": {
            "alpha_s": alpha,
            "bandwidth_Bps": bandwidth,
            "how": "least squares (relative error) on native medians",
        },
        "rows": rows,
        "goal_met": met,
        "verdict": verdict,
    }
    write_results(args.out, results, markdown(results))


if __name__ == "__main__":
    main()
