"""Median seconds of a callable: CUDA events on a GPU (after warm-ups), perf_counter on a CPU."""

from __future__ import annotations

import time

from reference.gpu_check.workloads import median


def seconds(fn, device, warmup: int, reps: int) -> float:
    """The median over `reps` timed calls of fn(), after `warmup` untimed ones."""
    import torch

    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)  # ms -> s
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return median(times)
