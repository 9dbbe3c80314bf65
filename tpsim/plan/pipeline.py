"""Pipeline schedules as data: GPipe and 1F1B, run on p stages and m microbatches, and their bubble.

Each stage runs its list of ops in order: F(j) is microbatch j's forward, B(j) its backward.

    gpipe   F(0) ... F(m-1), then B(0) ... B(m-1): every microbatch's activations are held at once
    1f1b    min(p-1-s, m) warm-up forwards on stage s, then F and B alternate, then the remaining
            B's (PipeDream-Flush, Narayanan et al. 2021): stage s holds at most p - s microbatches

F(j) on stage s waits for F(j) on stage s-1 and its activation's send; B(j) waits for B(j) on
stage s+1 and its gradient's send.  A stage does one op at a time.  With equal op times and free
sends both schedules take (m + p - 1)(t_f + t_b): each stage idles (p - 1)(t_f + t_b), the bubble

    bubble fraction = (p - 1) / (m + p - 1)

which `simulate` reproduces by running the schedule, not by using the formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsim.errors import PipelineError

SCHEDULES = ("1f1b", "gpipe")


@dataclass(frozen=True)
class PipelineRun:
    schedule: str
    stages: int
    microbatches: int
    makespan: float  # seconds from the first forward to the last backward
    busy: float  # seconds one stage computes: m (t_f + t_b)
    peak_in_flight: tuple[int, ...]  # per stage: most microbatches whose activations it holds at once
    events: tuple[tuple[int, str, int, float, float], ...]  # (stage, "F"/"B", microbatch, start, end)

    @property
    def bubble(self) -> float:
        """The fraction of the makespan a stage is idle."""
        # max(0, ...): with one stage busy == makespan up to rounding, never a "-0.0%" bubble
        return max(0.0, 1 - self.busy / self.makespan) if self.makespan else 0.0


def bubble_fraction(stages: int, microbatches: int) -> float:
    """(p - 1) / (m + p - 1): GPipe's and 1F1B's idle share with equal op times and free sends."""
    p, m = _check(stages, microbatches)
    return (p - 1) / (m + p - 1)


def stage_ops(schedule: str, stages: int, microbatches: int, stage: int) -> list[tuple[str, int]]:
    """The ops of `stage` in the order it runs them: [("F", 0), ("F", 1), ("B", 0), ...]."""
    p, m = _check(stages, microbatches)
    if schedule == "gpipe":
        return [("F", j) for j in range(m)] + [("B", j) for j in range(m)]
    if schedule == "1f1b":
        warmup = min(p - 1 - stage, m)
        ops = [("F", j) for j in range(warmup)]
        for j in range(m - warmup):
            ops += [("F", warmup + j), ("B", j)]
        return ops + [("B", j) for j in range(m - warmup, m)]
    raise PipelineError(f"unknown pipeline schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def simulate(
    schedule: str, stages: int, microbatches: int, t_fwd: float, t_bwd: float, t_send: float = 0.0
) -> PipelineRun:
    """Run `schedule` with forward time t_fwd, backward t_bwd per microbatch per stage and t_send per
    activation (forward) or gradient (backward) crossing a stage boundary."""
    p, m = _check(stages, microbatches)
    if schedule not in SCHEDULES:
        raise PipelineError(f"unknown pipeline schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if min(t_fwd, t_bwd, t_send) < 0:
        raise PipelineError(f"op times must be >= 0; got t_fwd={t_fwd}, t_bwd={t_bwd}, t_send={t_send}")
    ops = [stage_ops(schedule, p, m, s) for s in range(p)]
    end: dict[tuple[int, str, int], float] = {}
    free, nxt, events = [0.0] * p, [0] * p, []
    remaining = 2 * m * p
    while remaining:
        progressed = False
        for s in range(p):
            while nxt[s] < len(ops[s]):
                kind, j = ops[s][nxt[s]]
                dep = (s - 1, "F", j) if kind == "F" else (s + 1, "B", j)
                edge = (kind == "F" and s == 0) or (kind == "B" and s == p - 1)
                if not edge and dep not in end:
                    break  # wait for the neighbour stage
                ready = 0.0 if edge else end[dep] + t_send
                if kind == "B" and s == p - 1:
                    ready = end[(s, "F", j)]  # the last stage turns around without a send
                start = max(free[s], ready)
                free[s] = end[(s, kind, j)] = start + (t_fwd if kind == "F" else t_bwd)
                events.append((s, kind, j, start, free[s]))
                nxt[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:  # cannot happen for these two schedules; a guard against a bad edit
            raise PipelineError(f"{schedule} deadlocked with {remaining} ops left")
    peaks = []
    for s in range(p):
        held = peak = 0
        for kind, _ in ops[s]:
            held += 1 if kind == "F" else -1
            peak = max(peak, held)
        peaks.append(peak)
    return PipelineRun(schedule, p, m, max(free), m * (t_fwd + t_bwd), tuple(peaks), tuple(events))


def _check(stages: int, microbatches: int) -> tuple[int, int]:
    for what, v in (("stages", stages), ("microbatches", microbatches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PipelineError(f"pipeline {what} = {v!r}; valid: an integer >= 1")
    return stages, microbatches
