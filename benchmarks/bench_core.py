"""Benchmark of the tpsim core: how fast the simulator moves bytes, and what large meshes cost.

    python benchmarks/bench_core.py [--quick] [--out benchmarks/results/core.json]

1. Ring all-reduce of 256 MiB float32 over 8 devices: the simulator's wire bytes per
   second of wall time, divided by NumPy's memcpy bandwidth measured in the same run,
   interleaved with it (goal >= 0.5).  Medians of several repeats, after a warm-up.
2. Ring all-reduce over 1024 devices, shape-only (goal < 1 s) and with 1 MiB of float32
   per device (goal < 5 s): wall time of the first call, schedule build included.

Results go to a JSON file and a Markdown table beside it, with the machine described.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

import tpsim
from tpsim.collectives import algorithms
from tpsim.machine import describe_machine, write_results


def ring_vs_memcpy(mib: int, devices: int, repeats: int) -> dict:
    n = (mib << 20) // 4
    buffers = [np.full(n, d + 1, dtype=np.float32) for d in range(devices)]
    src, dst = buffers[0], np.empty_like(buffers[0])
    sim, copy = [], []
    tpsim.all_reduce(buffers, tpsim.Mesh(devices))  # warm-up: schedule build, first-touch of pages
    for _ in range(repeats):
        mesh = tpsim.Mesh(devices)
        gc.collect()
        t = time.perf_counter()
        out = tpsim.all_reduce(buffers, mesh, algorithm="ring")
        sim.append((time.perf_counter() - t, mesh.trace.wire_bytes))
        del out
        t = time.perf_counter()
        np.copyto(dst, src)
        copy.append(time.perf_counter() - t)
    wall = float(np.median([s for s, _ in sim]))
    wire = sim[0][1]
    memcpy_bw = src.nbytes / float(np.median(copy))
    return {
        "buffer_mib": mib,
        "devices": devices,
        "repeats": repeats,
        "wire_bytes": wire,
        "wall_s_median": wall,
        "sim_wire_bytes_per_s": wire / wall,
        "memcpy_bytes_per_s": memcpy_bw,
        "ratio": wire / wall / memcpy_bw,
        "goal": ">= 0.5",
    }


def large_ring(devices: int, mib_per_device: float | None) -> dict:
    algorithms._build.cache_clear()  # count the schedule build too
    mesh = tpsim.Mesh(devices)
    n = int(mib_per_device * (1 << 20)) // 4 if mib_per_device else 1 << 18
    if mib_per_device:
        buffers = [np.full(n, 1.0, dtype=np.float32) for _ in range(devices)]
    else:
        buffers = [tpsim.meta(n, "float32")] * devices
    gc.collect()
    t = time.perf_counter()
    tpsim.all_reduce(buffers, mesh, algorithm="ring")
    wall = time.perf_counter() - t
    return {
        "devices": devices,
        "data": bool(mib_per_device),
        "bytes_per_device": n * 4,
        "transfers": len(mesh.trace.transfers()["src"]),
        "steps": len(mesh.trace.steps),
        "wall_s": wall,
        "goal": "< 5 s" if mib_per_device else "< 1 s",
    }


def markdown(results: dict) -> str:
    r = results["ring_vs_memcpy"]
    lines = [
        "# tpsim core benchmark",
        "",
        f"Machine: {results['machine']['summary']}",
        f"Date: {results['date']}",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| ring all-reduce {r['buffer_mib']} MiB x {r['devices']} devices: simulated wire bytes/s "
        f"| {r['sim_wire_bytes_per_s'] / 1e9:.2f} GB/s | |",
        f"| NumPy memcpy, same run | {r['memcpy_bytes_per_s'] / 1e9:.2f} GB/s | |",
        f"| ratio | **{r['ratio']:.2f}** | {r['goal']} |",
    ]
    for x in results["large_ring"]:
        what = "1 MiB of data per device" if x["data"] else "shape-only"
        lines.append(
            f"| ring all-reduce, {x['devices']} devices, {what} ({x['transfers']:,} transfers) "
            f"| **{x['wall_s']:.2f} s** | {x['goal']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--out", default="benchmarks/results/core.json")
    args = ap.parse_args()
    mib, repeats, devices = (8, 2, 64) if args.quick else (256, 5, 1024)
    results = {
        "machine": describe_machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "ring_vs_memcpy": ring_vs_memcpy(mib, 8, repeats),
        "large_ring": [large_ring(devices, None), large_ring(devices, 1.0)],
    }
    write_results(args.out, results, markdown(results))


if __name__ == "__main__":
    main()
