"""bench_nn.py's results as Markdown: the MLP table against the goals, GPT-3's shape-only runs, profiles.

Every figure is read from the results dict bench_nn.main builds (nothing typed in here).
"""

from __future__ import annotations


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
        "Predicted step on 8 x H100 (mode peak: datasheet roofline): "
        + ", ".join(
            f"{'SP' if r['sequence_parallel'] else 'no SP'} {r['result']['time']['step'] * 1e3:.0f} ms, "
            f"peak memory {r['result']['memory']['peak'] / 2**30:.1f} GiB"
            for r in g["runs"].values()
        )
        + ".",
        "",
        "Agreement with NumPy (max abs difference; y up to {:.3g}, dx up to {:.3g}): "
        "tpsim y {:.2g}, dx {:.2g}".format(
            c["scale"]["y"],
            c["scale"]["dx"],
            c["tpsim_vs_numpy_max_abs_diff"]["y"],
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
