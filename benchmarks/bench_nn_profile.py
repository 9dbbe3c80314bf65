"""Where a benchmarked step spends its time, for bench_nn.py: one cProfile'd call, by category and file.

    profile(fn, reset, MLP_CATEGORIES)   total, categories (cumulative), collective parts, top functions

A category is (label, file suffix, function): the cumulative time of functions that do not nest in
one another, so the categories add up; "other" is the rest of the total.
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats

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
        key = short_name(f, name)
        by_file[key] = by_file.get(key, 0.0) + v[2]
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    return {
        "total_s": total,
        "categories_s": cats,
        "collective_parts_s": cumulative(COLLECTIVE_PARTS) if categories else {},
        "tottime_by_file_s": dict(sorted(by_file.items(), key=lambda kv: -kv[1])[:12]),
        "top_functions": [
            {
                "function": name if f == "~" else f"{short_name(f, name)}:{line}({name})",
                "calls": v[1],
                "tottime_s": v[2],
                "cumtime_s": v[3],
            }
            for (f, line, name), v in top
        ],
    }


def short_name(filename: str, func: str) -> str:
    """A profiled file as the tables show it: tpsim/..., a site-packages path, or its base name."""
    if filename == "~":
        return "builtins"
    for marker in ("/tpsim/", "/site-packages/"):
        if marker in filename:
            return ("tpsim/" if marker == "/tpsim/" else "") + filename.split(marker, 1)[1]
    return os.path.basename(filename)
