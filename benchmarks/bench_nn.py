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
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import os
import pstats
import statistics
import time

import numpy as np

from tpsim import Mesh, Replicate, Shard, distribute, meta, presets
from tpsim.machine import describe_machine, write_results
from tpsim.nn import ParallelAttention, ParallelMLP, ops

GELU_C = math.sqrt(2.0 / math.pi)
WORLD = 8


def gelu(v):
    """tanh GeLU, as tpsim.nn.ops.gelu and torch's gelu(approximate="tanh")."""
    return 0.5 * v * (1 + np.tanh(GELU_C * (v + 0.044715 * (v * v * v))))


def gelu_grad(v, g):
    t = np.tanh(GELU_C * (v + 0.044715 * (v * v * v)))
    return g * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * v * v))


def numpy_mlp(x, w1, b1, w2, b2, dy, phases: dict | None = None):
    """The unsharded MLP, forward and backward; `phases` collects seconds spent in GEMMs and in the rest."""
    clock = _PhaseClock(phases)
    h = clock.gemm(lambda: x @ w1.T)  # (tokens, h) @ (h, ffn)
    h = clock.other(lambda: h + b1)
    a = clock.other(lambda: gelu(h))
    y = clock.gemm(lambda: a @ w2.T)  # (tokens, ffn) @ (ffn, h)
    y = clock.other(lambda: y + b2)
    dw2 = clock.gemm(lambda: dy.T @ a)  # (h, tokens) @ (tokens, ffn)
    db2 = clock.other(lambda: dy.sum(axis=0))
    da = clock.gemm(lambda: dy @ w2)  # (tokens, h) @ (h, ffn)
    dh = clock.other(lambda: gelu_grad(h, da))
    dw1 = clock.gemm(lambda: dh.T @ x)  # (ffn, tokens) @ (tokens, h)
    db1 = clock.other(lambda: dh.sum(axis=0))
    dx = clock.gemm(lambda: dh @ w1)  # (tokens, ffn) @ (ffn, h)
    return y, dx, {"fc1.weight": dw1, "fc1.bias": db1, "fc2.weight": dw2, "fc2.bias": db2}


class _PhaseClock:
    def __init__(self, phases: dict | None):
        self.phases = phases

    def _time(self, key, fn):
        if self.phases is None:
            return fn()
        t = time.perf_counter()
        out = fn()
        self.phases[key] = self.phases.get(key, 0.0) + time.perf_counter() - t
        return out

    def gemm(self, fn):
        return self._time("gemm", fn)

    def other(self, fn):
        return self._time("other", fn)


class TpsimMLP:
    """ParallelMLP on 8 virtual H100s on NVLink, with data; the inputs replicated, as Megatron's are."""

    def __init__(self, tokens: int, h: int, ffn: int, x: np.ndarray, dy: np.ndarray):
        self.mesh = Mesh(WORLD, device="h100", topology=presets.nvlink_node(WORLD))
        self.mlp = ParallelMLP(self.mesh, h, ffn, dtype="float32")
        self.x = distribute(x, self.mesh, [Replicate()])
        self.dy = distribute(dy, self.mesh, [Replicate()])

    def weights(self) -> tuple[np.ndarray, ...]:
        p = {name.split(".", 1)[1]: v.full() for name, v in self.mlp.named_parameters()}
        return p["fc1.weight"], p["fc1.bias"], p["fc2.weight"], p["fc2.bias"]

    def step(self):
        y = self.mlp(self.x)
        dx = self.mlp.backprop(self.dy)
        return y, dx

    def reset(self) -> None:
        """Outside the timed region: drop the grads, the trace and the clocks of the last step."""
        self.mlp.zero_grad()
        self.mesh.trace.clear()
        self.mesh.reset_clock()


class TorchLocalMLP:
    """The same MLP as DTensor ColwiseParallel fc1 / RowwiseParallel fc2 on 8 ranks simulated in one
    process: LocalTensorMode over the "fake" process group (as torch's LocalDTensorTestBase does)."""

    def __init__(self, w1, b1, w2, b2, x, dy):
        import torch
        import torch.distributed as dist
        from torch.distributed._local_tensor import LocalTensorMode
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
        from torch.testing._internal.distributed.fake_pg import FakeStore

        if not dist.is_initialized():
            dist.init_process_group("fake", rank=0, world_size=WORLD, store=FakeStore())
        device_mesh = init_device_mesh("cpu", (WORLD,))
        ffn, h = w1.shape
        model = torch.nn.Sequential()
        model.add_module("fc1", torch.nn.Linear(h, ffn))
        model.add_module("gelu", torch.nn.GELU(approximate="tanh"))
        model.add_module("fc2", torch.nn.Linear(ffn, h))
        with torch.no_grad():
            for p, v in zip((model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias),
                            (w1, b1, w2, b2), strict=True):
                p.copy_(torch.from_numpy(v))
        self.torch = torch
        self.mode = LocalTensorMode(frozenset(range(WORLD)))
        with self.mode:
            self.model = parallelize_module(
                model, device_mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()}
            )
        self.x, self.dy = torch.from_numpy(x), torch.from_numpy(dy)
        self.threads = torch.get_num_threads()
        self.version = torch.__version__

    def step(self):
        with self.mode:
            x = self.x.detach().requires_grad_(True)
            y = self.model(x)
            y.backward(self.dy)
            return _wait(y), _wait(x.grad)

    def close(self) -> None:
        self.torch.distributed.destroy_process_group()

    def reset(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def rank0(self, t) -> np.ndarray:
        """Rank 0's local tensor of a LocalTensor."""
        t = t._local_tensors[0] if hasattr(t, "_local_tensors") else t
        return t.detach().numpy()


class TorchEagerMLP:
    """Context, not a goal: the same MLP in plain PyTorch eager, unsharded, one process, same threads."""

    def __init__(self, w1, b1, w2, b2, x, dy):
        import torch

        self.params = [torch.from_numpy(v.copy()).requires_grad_(True) for v in (w1, b1, w2, b2)]
        self.x, self.dy = torch.from_numpy(x), torch.from_numpy(dy)
        self.F = torch.nn.functional

    def step(self):
        w1, b1, w2, b2 = self.params
        x = self.x.detach().requires_grad_(True)
        y = self.F.linear(self.F.gelu(self.F.linear(x, w1, b1), approximate="tanh"), w2, b2)
        y.backward(self.dy)
        return y, x.grad

    def reset(self) -> None:
        for p in self.params:
            p.grad = None


def _wait(t):
    """An AsyncCollectiveTensor (what DTensor returns after a collective) waited on; else t."""
    return t.wait() if hasattr(t, "wait") else t


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


# (category, file suffix, function): cumulative time of functions that do not nest in one another
MLP_CATEGORIES = [
    ("GEMMs (ops.matmul)", "tpsim/nn/ops.py", "matmul"),
    ("elementwise ops (GeLU, bias add, bias grad)", "tpsim/nn/ops.py", "elementwise"),
    ("elementwise ops (GeLU, bias add, bias grad)", "tpsim/nn/ops.py", "sum_to"),
    ("collectives (redistribute: pack, steps, unpack)", "tpsim/redistribute.py", "redistribute"),
    ("wrapping shards (from_local checks, memory ledger)", "tpsim/darray.py", "from_local"),
    ("time model (mesh.compute, trace)", "tpsim/mesh.py", "compute"),
]
COLLECTIVE_PARTS = [
    ("store allocation (layout.new_store, np.zeros)", "tpsim/collectives/layout.py", "new_store"),
    ("pack into the store (layout.pack)", "tpsim/collectives/layout.py", "pack"),
    ("unpack results (api._unpack)", "tpsim/collectives/api.py", "_unpack"),
    ("ring steps: data (engine._move)", "tpsim/collectives/engine.py", "_move"),
    ("ring steps: time and trace", "tpsim/collectives/engine.py", "_time_and_record"),
]


def profile(fn, reset, categories) -> dict:
    """One cProfile'd call of fn: total, the given categories (cumulative), and tottime by file."""
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    fn()
    prof.disable()
    if reset is not None:
        reset()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())

    def cumulative(rules):
        out: dict[str, float] = {}
        for label, suffix, func in rules:
            t = sum(v[3] for (f, _, name), v in stats.items() if f.endswith(suffix) and name == func)
            out[label] = out.get(label, 0.0) + t
        return out

    cats = cumulative(categories) if categories else {}
    if cats:
        cats["other"] = total - sum(cats.values())
    by_file: dict[str, float] = {}
    for (f, _, name), v in stats.items():
        key = _short(f, name)
        by_file[key] = by_file.get(key, 0.0) + v[2]
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    return {
        "total_s": total,
        "categories_s": cats,
        "collective_parts_s": cumulative(COLLECTIVE_PARTS) if categories else {},
        "tottime_by_file_s": dict(sorted(by_file.items(), key=lambda kv: -kv[1])[:12]),
        "top_functions": [
            {"function": name if f == "~" else f"{_short(f, name)}:{line}({name})", "calls": v[1],
             "tottime_s": v[2],
             "cumtime_s": v[3]}
            for (f, line, name), v in top
        ],
    }


def _short(filename: str, func: str) -> str:
    if filename == "~":
        return "builtins"
    for marker in ("/tpsim/", "/site-packages/"):
        if marker in filename:
            return ("tpsim/" if marker == "/tpsim/" else "") + filename.split(marker, 1)[1]
    return os.path.basename(filename)


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


def markdown(results: dict) -> str:
    m = results["mlp"]
    s, med, cpu = m["shape"], m["median_s"], m["median_cpu_s"]
    lines = [
        "# tpsim.nn benchmark",
        "",
        f"Machine: {results['machine']['summary']}; BLAS {results['blas']}",
        f"Date: {results['date']}",
        f"Load average (1, 5, 15 min) before: {results['load_before']}, after: {results['load_after']} "
        "(the machine is shared: other work ran alongside)",
        "",
        f"MLP forward + backward, {s['dtype']}, tokens {s['tokens']}, h {s['hidden']}, ffn {s['ffn']}; "
        f"medians of {m['repeats']} interleaved repeats after a warm-up.  Wall times jump when another "
        "process takes one of the cores (every repeat is in the JSON); CPU time, summed over threads, "
        "is the steadier measure here.",
        "",
        "| measure | wall (median) | CPU time, all threads (median) | goal |",
        "|---|---|---|---|",
        f"| tpsim ParallelMLP, {s['devices']} virtual devices, with data | {med['tpsim']:.2f} s "
        f"| {cpu['tpsim']:.2f} s | |",
        f"| plain NumPy, unsharded (wall: GEMMs {m['numpy_phases_median_s']['gemm']:.2f} s, "
        f"the rest {m['numpy_phases_median_s']['other']:.2f} s) | {med['numpy']:.2f} s "
        f"| {cpu['numpy']:.2f} s | |",
        f"| ratio tpsim / NumPy | **{m['ratio_tpsim_over_numpy']:.2f}** "
        f"| {m['ratio_tpsim_over_numpy_cpu']:.2f} | {m['goal_tpsim_over_numpy']} |",
    ]
    if "ratio_tpsim_over_torch" in m:
        lines += [
            f"| PyTorch {m['torch']['torch']} DTensor under LocalTensorMode, {s['devices']} ranks, "
            f"fake backend ({m['torch']['torch_threads']} threads) | {med['torch_local_tensor']:.2f} s "
            f"| {cpu['torch_local_tensor']:.2f} s | |",
            f"| ratio tpsim / PyTorch LocalTensorMode | **{m['ratio_tpsim_over_torch']:.2f}** "
            f"| {m['ratio_tpsim_over_torch_cpu']:.2f} | {m['goal_tpsim_over_torch']} |",
            f"| (context) PyTorch eager, unsharded, same run | {med['torch_eager_unsharded']:.2f} s "
            f"| {cpu['torch_eager_unsharded']:.2f} s | |",
        ]
    else:
        lines.append(f"| PyTorch LocalTensorMode | did not run: `{m['torch']['error']}` | | <= 1.0 |")
    g = results["gpt3"]
    for run in g["runs"].values():
        lines.append(
            f"| GPT-3 175B shape-only, TP 8, {'with' if run['sequence_parallel'] else 'without'} SP: wall "
            f"(first call {run['first_call_s']:.2f} s) | **{run['median_s']:.2f} s** | | {run['goal']} |"
        )
    c = m["check"]
    lines += [
        "",
        f"GPT-3 run: {g['what']}." + (f" (fallback: {g['fallback_reason']})" if g["fallback_reason"] else ""),
        "Predicted step on 8 x H100 (mode peak: datasheet roofline): " + ", ".join(
            f"{'SP' if r['sequence_parallel'] else 'no SP'} {r['result']['time']['step'] * 1e3:.0f} ms, "
            f"peak memory {r['result']['memory']['peak'] / 2**30:.1f} GiB"
            for r in g["runs"].values()
        ) + ".",
        "",
        "Agreement with NumPy (max abs difference; y up to {:.3g}, dx up to {:.3g}): "
        "tpsim y {:.2g}, dx {:.2g}".format(
            c["scale"]["y"], c["scale"]["dx"], c["tpsim_vs_numpy_max_abs_diff"]["y"],
            c["tpsim_vs_numpy_max_abs_diff"]["dx"],
        )
        + (
            "; PyTorch (rank 0) y {:.2g}, dx {:.2g}.".format(
                c["torch_vs_numpy_max_abs_diff"]["y"], c["torch_vs_numpy_max_abs_diff"]["dx"]
            )
            if "torch_vs_numpy_max_abs_diff" in c
            else "."
        ),
        "",
        f"Predicted step time of this MLP on 8 x H100 over NVLink (the time model, mode peak): "
        f"{m['predicted_step_s_8xh100_nvlink'] * 1e3:.2f} ms.",
        "",
        f"## Where a tpsim MLP step spends its time (cProfile, one step, {m['profile']['total_s']:.2f} s)",
        "",
        "| part | seconds | share |",
        "|---|---|---|",
    ]
    prof = m["profile"]
    for k, v in prof["categories_s"].items():
        lines.append(f"| {k} | {v:.3f} | {v / prof['total_s']:.0%} |")
    lines += ["", "Inside the collectives:", "", "| part | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in prof["collective_parts_s"].items()]
    lines += ["", "Top functions by own time:", "", "| function | calls | own s |", "|---|---|---|"]
    lines += [
        f"| `{f['function']}` | {f['calls']} | {f['tottime_s']:.3f} |" for f in prof["top_functions"][:8]
    ]
    cube = m["cube_probe_s"]
    lines += [
        "",
        f"The GeLU's cube on one {tuple(cube['shape'])} float32 array: `v**3` {cube['v**3']:.3f} s, "
        f"`v*v*v` {cube['v*v*v']:.3f} s.  NumPy baseline's GeLU is tpsim.nn.ops' formula, bit for bit: "
        f"{c['numpy_gelu_is_tpsim_ops_gelu']}.",
    ]
    gp = g["profile_no_sp"]
    lines += [
        "",
        f"## Where the GPT-3 shape-only analysis spends its time (cProfile, no SP, {gp['total_s']:.2f} s "
        "with the profiler's overhead)",
        "",
        "| file | own time (s) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in gp["tottime_by_file_s"].items()]
    return "\n".join(lines) + "\n"


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
