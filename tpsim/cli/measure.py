"""What each rank runs for `tpsim calibrate`: a size sweep of collectives through reference.comm.Comm.

Runs inside reference.launch.spawn (one process per rank).  Per size: one warm-up call, then
`reps` calls, each after a barrier and timed on this rank (CUDA: synchronised).  The parent takes,
per call, the slowest rank (the collective is done when every rank is) and the median over calls.
"""

from __future__ import annotations

import time

from tpsim.collectives.kinds import Collective


def sweep(
    ctx, sizes: list[int], reps: int, collectives: list[str], modes: list[tuple[str, str | None]]
) -> list:
    """[(mode, algorithm, collective, size, [seconds per call])] for this rank."""
    import torch
    import torch.distributed as dist

    from reference.comm import Comm

    cuda = ctx.device.type == "cuda"
    out = []
    for mode, algorithm in modes:
        for collective in collectives:
            if mode == "schedule":
                from tpsim.collectives.algorithms import ALGORITHMS

                if algorithm not in ALGORITHMS[collective]:
                    continue
            comm = Comm(mode=mode, algorithm=algorithm)
            for size in sizes:
                n = size // 4  # float32 elements of S
                shape = n // ctx.world_size if collective == Collective.ALL_GATHER else n
                x = torch.ones(shape, dtype=torch.float32, device=ctx.device)
                kw = (
                    {"sizes": [shape] * ctx.world_size} if collective == Collective.ALL_GATHER else {}
                )  # no size exchange
                for _ in range(2):  # warm-up: connections, buffers, caches
                    getattr(comm, collective)(x, **kw)
                times = []
                for _ in range(reps):
                    dist.barrier()
                    start = time.perf_counter()
                    getattr(comm, collective)(x, **kw)
                    if cuda:
                        torch.cuda.synchronize(ctx.device)
                    times.append(time.perf_counter() - start)
                out.append((mode, algorithm, collective, size, times))
    return out
