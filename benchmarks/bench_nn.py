"""Benchmark of tpsim.nn: what a tensor-parallel layer costs to simulate, against plain NumPy and PyTorch.

    python benchmarks/bench_nn.py [--quick] [--repeats N] [--out benchmarks/results/nn.json]

1. The Megatron MLP, forward + backward, float32, tokens 2048, h 2048, ffn 8192, with data:
   tpsim's ParallelMLP on 8 virtual devices against the same MLP unsharded in plain NumPy
   (goal: tpsim / NumPy <= 1.3), and against PyTorch's own single-process simulation of 8 ranks,
   DTensor ColwiseParallel / RowwiseParallel under LocalTensorMode on the "fake" process group
   (goal: tpsim / PyTorch <= 1.0).  The three run interleaved, in a rotating order, after a
   warm-up; the ratios are of the medians.  Their outputs are checked against each other.
2. Where tpsim spends that time: a cProfile of one tpsim step, by category and by file, beside
   NumPy's split of its own time between GEMMs and the rest.
3. GPT-3 175B analysed shape-only, TP = 8, with and without sequence parallelism (goal < 1 s
   each): `tpsim.nn.gpt.analyse` when it exists, else a 96-layer stack of ParallelAttention +
   ParallelMLP with GPT-3's shapes.  With a profile by file.

Results go to a JSON file and a Markdown table beside it, with the machine described and its
load average before and after: the machine may be shared, so read the medians with that in mind.

Parts: bench_nn_mlps.py (the MLP three ways), bench_nn_profile.py (cProfile by category and file),
bench_nn_report.py (the Markdown).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tpsim import Mesh, Replicate, Shard, distribute, meta, presets
from tpsim.machine import describe_machine, write_results
from tpsim.nn import ParallelAttention, ParallelMLP, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_nn's parts, also when run as a script

from benchmarks.bench_nn_mlps import (
    WORLD,
    TorchEagerMLP,
    TorchLocalMLP,
    TpsimMLP,
    gelu,
    gelu_grad,
    numpy_mlp,
)
from benchmarks.bench_nn_profile import MLP_CATEGORIES, profile
from benchmarks.bench_nn_report import markdown


def timed(fn, reset=None, cpu: list | None = None) -> float:
    """Wall seconds of fn(); with `cpu`, the process's CPU seconds (all threads) are appended to it."""
    gc.collect()
    c, t = time.process_time(), time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t
    if cpu is not None:
        cpu.append(time.process_time() - c)
    if reset is not None:
        reset()
    return elapsed


def mlp_side_by_side(tokens: int, h: int, ffn: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((tokens, h), dtype=np.float32)
    dy = rng.standard_normal((tokens, h), dtype=np.float32)
    sim = TpsimMLP(tokens, h, ffn, x, dy)
    w1, b1, w2, b2 = sim.weights()
    b1, b2 = (rng.standard_normal(b.shape, dtype=np.float32) for b in (b1, b2))
    for name, b in (("fc1", b1), ("fc2", b2)):  # random biases, so that the bias paths are checked too
        param = sim.mlp.children[name].params["bias"]
        for d in range(WORLD):
            param.shards[d][...] = b if name == "fc2" else np.array_split(b, WORLD)[d]

    # warm-up, and the check that all three compute the same MLP
    y_ref, dx_ref, _ = numpy_mlp(x, w1, b1, w2, b2, dy)
    y, dx = sim.step()
    check = {
        "tpsim_vs_numpy_max_abs_diff": {
            "y": float(np.abs(y.full() - y_ref).max()),
            "dx": float(np.abs(dx.full() - dx_ref).max()),
        },
        "scale": {"y": float(np.abs(y_ref).max()), "dx": float(np.abs(dx_ref).max())},
    }
    probe = rng.standard_normal((tokens, ffn // WORLD), dtype=np.float32)
    check["numpy_gelu_is_tpsim_ops_gelu"] = bool(
        np.array_equal(gelu(probe), ops.gelu(probe)[0])
        and np.array_equal(gelu_grad(probe, probe), ops.gelu_grad(probe, probe)[0])
    )
    predicted = max(sim.mesh.clock)
    del y, dx
    sim.reset()
    runners = {
        "tpsim": (sim.step, sim.reset),
        "numpy": (lambda: numpy_mlp(x, w1, b1, w2, b2, dy), None),
    }
    torch_info: dict = {}
    try:
        torch_mlp = TorchLocalMLP(w1, b1, w2, b2, x, dy)
        ty, tdx = torch_mlp.step()
        check["torch_vs_numpy_max_abs_diff"] = {
            "y": float(np.abs(torch_mlp.rank0(ty) - y_ref).max()),
            "dx": float(np.abs(torch_mlp.rank0(tdx) - dx_ref).max()),
        }
        del ty, tdx
        torch_mlp.reset()
        runners["torch_local_tensor"] = (torch_mlp.step, torch_mlp.reset)
        eager = TorchEagerMLP(w1, b1, w2, b2, x, dy)
        eager.step()
        eager.reset()
        runners["torch_eager_unsharded"] = (eager.step, eager.reset)
        torch_info = {"torch": torch_mlp.version, "torch_threads": torch_mlp.threads, "error": None}
    except Exception as e:  # recorded in the results: the comparison is then missing, with its reason
        torch_info = {"error": f"{type(e).__name__}: {e}"}

    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    phases: list[dict] = []
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            if name == "numpy":
                p: dict = {}
                times[name].append(timed(lambda p=p: numpy_mlp(x, w1, b1, w2, b2, dy, p), cpu=cpu[name]))
                phases.append(p)
            else:
                times[name].append(timed(*runners[name], cpu=cpu[name]))
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "shape": {"tokens": tokens, "hidden": h, "ffn": ffn, "devices": WORLD, "dtype": "float32"},
        "repeats": repeats,
        "times_s": times,
        "median_s": med,
        "cpu_times_s": cpu,
        "median_cpu_s": med_cpu,
        "ratio_tpsim_over_numpy_cpu": med_cpu["tpsim"] / med_cpu["numpy"],
        "numpy_phases_median_s": {k: statistics.median(p[k] for p in phases) for k in ("gemm", "other")},
        "ratio_tpsim_over_numpy": med["tpsim"] / med["numpy"],
        "goal_tpsim_over_numpy": "<= 1.3",
        "torch": torch_info,
        "check": check,
        "predicted_step_s_8xh100_nvlink": predicted,
    }
    if "torch_local_tensor" in med:
        out["ratio_tpsim_over_torch"] = med["tpsim"] / med["torch_local_tensor"]
        out["ratio_tpsim_over_torch_cpu"] = med_cpu["tpsim"] / med_cpu["torch_local_tensor"]
        out["goal_tpsim_over_torch"] = "<= 1.0"
    out["profile"] = profile(sim.step, sim.reset, MLP_CATEGORIES)
    out["cube_probe_s"] = cube_probe(rng.standard_normal((tokens, ffn), dtype=np.float32))
    if "torch_local_tensor" in runners:
        torch_mlp.close()
    return out


def cube_probe(v: np.ndarray, repeats: int = 3) -> dict:
    """The GeLU's v**3 (np.power) against v*v*v on one (tokens, ffn) float32 array: the cost of one term."""
    power = statistics.median(timed(lambda: v**3) for _ in range(repeats))
    products = statistics.median(timed(lambda: v * v * v) for _ in range(repeats))
    return {"shape": list(v.shape), "v**3": power, "v*v*v": products}


def gpt3_shape_only(repeats: int) -> dict:
    """GPT-3 175B, TP = 8, shape-only, with and without SP: analyse() if it exists, else a layer stack."""
    try:
        from tpsim.nn.gpt import analyse

        def run(sp):
            r = analyse("gpt3-175b", tp=WORLD, sp=sp)
            return {k: r[k] for k in ("time", "memory", "bytes_sent", "parameters")}

        what = "tpsim.nn.gpt.analyse('gpt3-175b', tp=8, sp=...): a whole training step, every layer"
        fallback_reason = None
    except ImportError as e:
        run, what = _stack_step, "96 x (ParallelAttention + ParallelMLP), GPT-3 shapes, shape-only"
        fallback_reason = f"{type(e).__name__}: {e}"
    out: dict = {"what": what, "fallback_reason": fallback_reason, "runs": {}}
    for sp in (False, True):
        gc.collect()
        t = time.perf_counter()
        summary = run(sp)
        first = time.perf_counter() - t
        walls = [timed(lambda sp=sp: run(sp)) for _ in range(repeats)]
        out["runs"]["sp" if sp else "no_sp"] = {
            "sequence_parallel": sp,
            "first_call_s": first,
            "wall_s": walls,
            "median_s": statistics.median(walls),
            "goal": "< 1 s",
            "result": _jsonable(summary),
        }
    out["profile_no_sp"] = profile(lambda: run(False), None, None)
    return out


def _stack_step(sp: bool) -> dict:
    """Fallback: 96 layers of attention + MLP, h 12288, 96 heads, s 2048, b 1, bf16, forward + backward."""
    s, b, h, heads, layers = 2048, 1, 12288, 96, 96
    mesh = Mesh(WORLD, device="h100", topology=presets.nvlink_node(WORLD), memory=1 << 62)
    kw = dict(init=None, dtype="bfloat16", sequence_parallel=sp)
    stack = []
    for i in range(layers):
        stack.append(ParallelAttention(mesh, h, heads, seed=2 * i, name=f"layers.{i}.attention", **kw))
        stack.append(ParallelMLP(mesh, h, 4 * h, seed=2 * i + 1, name=f"layers.{i}.mlp", **kw))
    placement = [Shard(0) if sp else Replicate()]
    x = distribute(meta((s, b, h), "bfloat16"), mesh, placement)
    for m in stack:
        x = m(x)
    dy = distribute(meta((s, b, h), "bfloat16"), mesh, placement)
    for m in reversed(stack):
        dy = m.backprop(dy)
    return {"time": {"step": max(mesh.clock)}, "memory": {"peak": max(d.peak for d in mesh.devices)}}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def blas() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{deps.get('name')} {deps.get('version')}"
    except Exception:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/nn.json")
    args = ap.parse_args()
    tokens, h, ffn = (256, 256, 1024) if args.quick else (2048, 2048, 8192)
    repeats = args.repeats or (2 if args.quick else 7)
    load_before = [round(v, 2) for v in os.getloadavg()]
    results = {
        "machine": describe_machine(),
        "blas": blas(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_before": load_before,
        "mlp": mlp_side_by_side(tokens, h, ffn, repeats),
        "gpt3": gpt3_shape_only(1 if args.quick else 3),
    }
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    write_results(args.out, results, markdown(results))


if __name__ == "__main__":
    main()
