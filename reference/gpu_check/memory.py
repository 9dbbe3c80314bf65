"""c. Memory: each rank's measured peak for a block and a small GPT step, against tpsim's predicted peak.

Measured: `torch.cuda.max_memory_allocated` on each rank, its peak statistics reset before the
module is built, so weights, inputs, activations, gradients and collective buffers all count, as
in tpsim's device ledger (`VirtualDevice.peak`, shape-only, same layout).  What tpsim does not
model, and why the two differ:
  - the caching allocator rounds every block up to a multiple of 512 B (so many small tensors
    cost more than their bytes);
  - cuBLAS's workspace comes from the same allocator, and autograd may keep or free intermediates
    on its own schedule (GeLU's input, the softmax output) where tpsim frees at a defined point;
  - the CUDA context, cuBLAS handles and NCCL's buffers live outside the allocator: not counted.
On CPU the measured column is "not measurable on CPU" (torch's CPU allocator keeps no peak); the
same reference step still runs, so the code path is exercised.
"""

from __future__ import annotations

from reference.gpu_check.report import table
from reference.gpu_check.workloads import reference_step, tpsim_step

ALLOCATOR_BLOCK = 512  # bytes: the CUDA caching allocator's rounding unit
NOT_MEASURABLE = "not measurable on CPU"


def rank_peaks(ctx, workloads: list[tuple[str, dict]], dtype: str) -> list[dict]:
    """On one rank: per workload, the allocator's peak over build + forward + backward (None on CPU)."""
    import torch

    from reference.comm import Comm

    out = []
    for layer, dims in workloads:
        cuda = ctx.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(ctx.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(ctx.device)
            base = torch.cuda.memory_allocated(ctx.device)
        module, step = reference_step(
            layer, dims, dtype, Comm(mode="native", backend=ctx.backend), ctx.device
        )
        step()
        peak = None
        if cuda:
            torch.cuda.synchronize(ctx.device)
            peak = torch.cuda.max_memory_allocated(ctx.device) - base
        del module, step
        out.append(dict(layer=layer, rank=ctx.rank, measured=peak))
    return out


def section(budget, records: list, ctx) -> bool | None:
    from reference.backend import choose_backend
    from reference.launch import run

    dtype = ctx.sizes.dtype
    workloads = [("block", ctx.sizes.block), ("gpt", ctx.sizes.gpt)]
    for t in ctx.sizes.memory_world_sizes:
        if budget.expired:
            return True
        backend = choose_backend(t, ctx.device)
        got = run(rank_peaks, t, workloads, dtype, device=ctx.device, timeout=max(budget.left(), 1.0))
        for layer, dims in workloads:
            devices = tpsim_step(layer, dims, dtype, t).devices
            for per_rank in got:
                m = next(x for x in per_rank if x["layer"] == layer)
                measured, predicted = m["measured"], devices[m["rank"]].peak
                records.append(
                    dict(
                        kind="memory",
                        layer=layer,
                        dims=dims,
                        dtype=dtype,
                        world_size=t,
                        rank=m["rank"],
                        backend=backend.name,
                        predicted=predicted,
                        measured=measured if measured is not None else NOT_MEASURABLE,
                        difference=None if measured is None else measured - predicted,
                        ratio=None if measured is None else measured / predicted,
                    )
                )
    return None


def render(records: list[dict]) -> list[str]:
    rows = [
        dict(
            r,
            mib_p=r["predicted"] / 2**20,
            mib_m=r["measured"] / 2**20 if isinstance(r["measured"], int) else r["measured"],
            diff=None if r["difference"] is None else r["difference"] / 2**20,
        )
        for r in records
    ]
    out = table(
        rows,
        [
            ("layer", "layer"),
            ("world size", "world_size"),
            ("rank", "rank"),
            ("dtype", "dtype"),
            ("tpsim peak (MiB)", "mib_p"),
            ("measured peak (MiB)", "mib_m"),
            ("measured - tpsim (MiB)", "diff"),
            ("measured / tpsim", "ratio"),
        ],
    )
    dims = {r["layer"]: r["dims"] for r in records}
    out += [""] + [f"- {k}: {v}" for k, v in dims.items()]
    out += [
        "",
        "Measured: torch.cuda.max_memory_allocated after build + forward + backward, peak reset "
        "first. "
        f"Not modelled by tpsim: the allocator's {ALLOCATOR_BLOCK} B rounding, cuBLAS's workspace, "
        "autograd's own freeing order; the CUDA context and NCCL's buffers are outside the allocator.",
    ]
    return out
