"""Decode's all-reduces are small, so they are latency-bound: one-shot and two-shot beside ring.

Each decode step all-reduces (b, h) activations twice per layer: 16 KiB for one sequence of
Llama-3 70B in bfloat16.  At that size the alpha of each step dominates, and the step counts decide:

    ring       2 (t - 1) steps of S/t     (NCCL's default for large messages)
    one-shot   1 step: every rank sends all of S to every other rank (tpsim's "direct" all-reduce)
    two-shot   2 steps: a direct reduce-scatter of S/t pieces, then a direct all-gather of them
               (TensorRT-LLM's and vLLM's custom all-reduce use the one- and two-shot forms)

One-shot sends (t - 1) S per rank against ring's 2 (t - 1) S/t, so it loses once the bytes outweigh
the alphas; two-shot sends ring's bytes in two steps.  Times come from running the three schedules
on the topology (shape-only), not from a formula.
"""

from __future__ import annotations

from tpsim.collectives import all_gather, all_reduce, reduce_scatter
from tpsim.mesh import Mesh
from tpsim.meta import meta

ALGORITHMS = ("one-shot", "two-shot", "ring")


def allreduce_times(t: int, nbytes: int, topology, dtype: str = "bfloat16") -> dict[str, float]:
    """Seconds for one all-reduce of `nbytes` per rank over t devices, by algorithm."""
    if t == 1:
        return dict.fromkeys(ALGORITHMS, 0.0)
    mesh = Mesh(t, topology=topology, memory=1 << 62)
    elems = max(nbytes // meta(1, dtype).nbytes, t)
    elems -= elems % t  # two-shot's pieces: equal
    buf = [meta(elems, dtype)] * t
    out = {}
    all_reduce(buf, mesh, algorithm="direct")
    out["one-shot"] = mesh.trace.collectives[-1].time
    pieces = reduce_scatter(buf, mesh, algorithm="direct")
    first = mesh.trace.collectives[-1].time
    all_gather(pieces, mesh, algorithm="direct")
    out["two-shot"] = first + mesh.trace.collectives[-1].time
    all_reduce(buf, mesh, algorithm="ring")
    out["ring"] = mesh.trace.collectives[-1].time
    return out


def fastest(times: dict[str, float]) -> str:
    return min(ALGORITHMS, key=lambda a: (times[a], ALGORITHMS.index(a)))


def by_size(t: int, topology, sizes, dtype: str = "bfloat16") -> list[dict]:
    """For each message size in bytes: the three algorithms' times and the fastest."""
    rows = []
    for n in sizes:
        times = allreduce_times(t, n, topology, dtype)
        rows.append(dict(bytes=n, **times, fastest=fastest(times)))
    return rows
