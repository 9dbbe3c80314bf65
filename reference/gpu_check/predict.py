"""e. Prediction against measurement: one block's forward + backward at world size 1.

Predicted: tpsim's shape-only step on Mesh(1), whose per-device clock sums each op's roofline
time, max(FLOPs / peak, bytes / bandwidth) (tpsim/hardware.py), with no overlap and no launch
cost.  Two device models: the datasheet preset for this GPU (none on a CPU), and the preset made
from this run's own section d (its square-matmul rates and copy bandwidth: what
`tpsim calibrate --gpu-report` writes).  Measured: the reference block's forward + backward on
this device, median of reps after warm-ups (CUDA events).  error = predicted / measured - 1.
"""

from __future__ import annotations

from reference.gpu_check.report import table
from reference.gpu_check.timing import seconds
from reference.gpu_check.workloads import reference_step, tpsim_step


def rank_time(ctx, dims: dict, dtype: str, warmup: int, reps: int) -> float:
    from reference.comm import Comm

    _, step = reference_step("block", dims, dtype, Comm(mode="native", backend=ctx.backend), ctx.device)
    return seconds(step, ctx.device, warmup, reps)


def block_flops(dims: dict) -> float:
    """Forward + backward matmul FLOPs of one block: 3x the forward's 24 s b h^2 (ffn = 4h scaled) +
    attention's 4 s^2 b h."""
    s, b, h, f = dims["s"], dims["b"], dims["hidden"], dims["ffn"]
    forward = 2 * s * b * (4 * h * h + 2 * h * f) + 4 * s * s * b * h
    return 3.0 * forward


def section(budget, records: list, ctx) -> bool | None:
    from reference.gpu_check.compute import datasheet_spec
    from reference.launch import run
    from tpsim.cli.gpu_report import ReportError, spec_from_records

    z, dtype = ctx.sizes, ctx.sizes.dtype
    dims = z.predict_block
    measured = run(
        rank_time, 1, dims, dtype, z.warmup, z.reps, device=ctx.device, timeout=max(budget.left(), 1.0)
    )[0]
    specs = [("datasheet", datasheet_spec(ctx.facts["device_name"]))]
    try:  # section d cut short before its square matmuls or copy: no measured model, say so
        specs.append(
            ("measured (section d)", spec_from_records(ctx.done.get("compute", []), ctx.facts, "this run"))
        )
    except ReportError as e:
        records.append(
            dict(
                kind="predict",
                model="measured (section d)",
                device_model=None,
                dims=dims,
                dtype=dtype,
                measured=measured,
                predicted=None,
                error=None,
                note=str(e),
            )
        )
    for label, spec in specs:
        if spec is None:
            records.append(
                dict(
                    kind="predict",
                    model=label,
                    device_model=None,
                    dims=dims,
                    dtype=dtype,
                    measured=measured,
                    predicted=None,
                    error=None,
                    note=f"tpsim has no datasheet preset for {ctx.facts['device_name']}",
                )
            )
            continue
        mesh = tpsim_step("block", dims, dtype, 1, spec)
        predicted = max(mesh.clock)
        records.append(
            dict(
                kind="predict",
                model=label,
                device_model=spec.name,
                dims=dims,
                dtype=dtype,
                measured=measured,
                predicted=predicted,
                error=predicted / measured - 1,
                achieved_tflops=block_flops(dims) / measured / 1e12,
            )
        )
    return None


def render(records: list[dict]) -> list[str]:
    rows = [
        dict(
            r,
            ms_m=r["measured"] * 1e3,
            ms_p=None if r["predicted"] is None else r["predicted"] * 1e3,
            err=None if r["error"] is None else f"{r['error']:+.1%}",
        )
        for r in records
    ]
    out = table(
        rows,
        [
            ("device model", "model"),
            ("preset", "device_model"),
            ("dtype", "dtype"),
            ("measured (ms)", "ms_m"),
            ("tpsim (ms)", "ms_p"),
            ("error", "err"),
            ("achieved matmul TFLOP/s", "achieved_tflops"),
        ],
    )
    if records:
        out += ["", f"block: {records[0]['dims']}; error = tpsim / measured - 1"]
    out += [f"- {r['note']}" for r in records if r.get("note")]
    return out
