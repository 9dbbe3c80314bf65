"""Interleaved 1F1B (Narayanan et al. 2021, Sec. 2.2.2): each of p devices holds v model chunks.

Chunk c of device d is virtual stage c p + d, so a microbatch visits every device v times.  A device's
ops, in Megatron's order (megatron/core/pipeline_parallel/schedules.py, interleaved): its k-th
forward is microbatch (k // (p v)) p + k % p on chunk (k // p) % v; its k-th backward the same
microbatch on chunk v - 1 - (k // p) % v.  It runs (p - d - 1) 2 + (v - 1) p warm-up forwards, then
alternates forward and backward, then drains the backwards.  m must be a multiple of p.

With chunk times t_f / v and t_b / v and free sends, the bubble shrinks by v:

    makespan = m (t_f + t_b) + (p - 1)(t_f + t_b) / v,   bubble / ideal = (p - 1) / (m v)

which `simulate_interleaved` reproduces by running the schedule, not by using the formula.
"""

from __future__ import annotations

from tpsim.plan.pipeline import PipelineError, PipelineRun


def device_ops(p: int, v: int, m: int, d: int) -> list[tuple[str, int, int]]:
    """[("F" / "B", virtual stage, microbatch)] of device d, in the order it runs them."""
    total = m * v

    def op(kind: str, k: int) -> tuple[str, int, int]:
        chunk = (k // p) % v
        if kind == "B":
            chunk = v - 1 - chunk
        return kind, chunk * p + d, (k // (p * v)) * p + k % p

    warmup = min((p - d - 1) * 2 + (v - 1) * p, total)
    ops = [op("F", k) for k in range(warmup)]
    for k in range(total - warmup):
        ops += [op("F", warmup + k), op("B", k)]
    return ops + [op("B", k) for k in range(total - warmup, total)]


def simulate_interleaved(
    stages: int, chunks: int, microbatches: int, t_fwd: float, t_bwd: float, t_send: float = 0.0
) -> PipelineRun:
    """Run interleaved 1F1B: t_fwd, t_bwd are one device's whole-stage times (each chunk takes 1 / v)."""
    p, v, m = stages, chunks, microbatches
    for what, x in (("stages", p), ("chunks", v), ("microbatches", m)):
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise PipelineError(f"interleaved pipeline {what} = {x!r}; valid: an integer >= 1")
    if m % p:
        raise PipelineError(f"interleaved 1F1B needs microbatches ({m}) to be a multiple of stages ({p})")
    last = p * v - 1
    ops = [device_ops(p, v, m, d) for d in range(p)]
    end: dict[tuple[str, int, int], float] = {}
    free, nxt, events = [0.0] * p, [0] * p, []
    remaining = sum(len(o) for o in ops)
    while remaining:
        progressed = False
        for d in range(p):
            while nxt[d] < len(ops[d]):
                kind, s, j = ops[d][nxt[d]]
                if kind == "F":
                    dep, ready_extra = (("F", s - 1, j), t_send) if s > 0 else (None, 0.0)
                else:
                    dep, ready_extra = (("B", s + 1, j), t_send) if s < last else (("F", s, j), 0.0)
                if dep is not None and dep not in end:
                    break
                start = max(free[d], end[dep] + ready_extra if dep else 0.0)
                free[d] = end[(kind, s, j)] = start + (t_fwd if kind == "F" else t_bwd) / v
                events.append((d, kind, j, start, free[d]))
                nxt[d] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise PipelineError(f"interleaved 1F1B deadlocked with {remaining} ops left")
    peaks = []
    for d in range(p):
        held = peak = 0
        for kind, _, _ in ops[d]:
            held += 1 if kind == "F" else -1
            peak = max(peak, held)
        peaks.append(peak)  # in chunks' activations: each is 1 / v of a stage's
    return PipelineRun("interleaved", p, m, max(free), m * (t_fwd + t_bwd), tuple(peaks), tuple(events))


def interleaved_bubble(stages: int, microbatches: int, chunks: int) -> float:
    """(p - 1) / (m v): the idle time over the ideal m (t_f + t_b), Narayanan et al. 2021."""
    return (stages - 1) / (microbatches * chunks)
