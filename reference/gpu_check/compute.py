"""d. Compute: a TP MLP's shard GEMMs in bf16 (and fp32 with TF32 on), a square matmul, copy bandwidth.

Each GEMM runs with the operand layouts autograd gives it (forward X W^T, dX = dY W, dW = dY^T X),
timed with CUDA events, median of `reps` after `warmup`.  TFLOP/s = 2 m n k / seconds, set
against the largest square matmul of the same dtype in this run (what this GPU reaches) and the
datasheet peak (tpsim.hardware, where the GPU is one it knows).  The records are the GEMM table
that `tpsim calibrate --gpu-report` reads: m, n, k, dtype, seconds, tflops.
"""

from __future__ import annotations

from reference.gpu_check.compat import set_tf32, tf32_enabled
from reference.gpu_check.report import table
from reference.gpu_check.sizes import mlp_gemms
from reference.gpu_check.timing import seconds

TORCH_DTYPES = {"bfloat16": "bfloat16", "float32": "float32"}


def datasheet_spec(device_name: str):
    """tpsim's DeviceSpec for this GPU by its name ('NVIDIA H100 80GB HBM3' -> H100), else None."""
    from tpsim.hardware import DEVICES

    name = device_name.lower()
    return next((spec for key, spec in DEVICES.items() if key in name), None)


def peak_key(dtype: str, tf32: bool) -> str:
    return "tf32" if dtype == "float32" and tf32 else dtype


def time_gemm(g: dict, dtype: str, device, warmup: int, reps: int) -> float:
    """Seconds of one GEMM in autograd's layout: dW reads dY transposed, forward reads W transposed."""
    import torch

    m, n, k = g["m"], g["n"], g["k"]
    torch.manual_seed(0)  # random operands, drawn on the device (zeros would run faster)
    kw = dict(device=device, dtype=getattr(torch, TORCH_DTYPES[dtype]))
    if g["gemm"] == "forward":  # X (m, k) @ W (n, k)^T
        a, b = torch.randn(m, k, **kw), torch.randn(n, k, **kw).t()
    elif g["gemm"] == "dW":  # dY (k, m)^T @ X (k, n)
        a, b = torch.randn(k, m, **kw).t(), torch.randn(k, n, **kw)
    else:  # dX: dY (m, k) @ W (k, n)
        a, b = torch.randn(m, k, **kw), torch.randn(k, n, **kw)
    return seconds(lambda: torch.matmul(a, b), device, warmup, reps)


def copy_bandwidth(nbytes: int, device, warmup: int, reps: int) -> dict:
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    s = seconds(lambda: dst.copy_(src), device, warmup, reps)
    return dict(kind="copy", bytes=nbytes, seconds=s, read_write_bytes_per_s=2 * nbytes / s)


def section(budget, records: list, ctx) -> bool | None:
    z = ctx.sizes
    dev = ctx.torch_device
    spec = datasheet_spec(ctx.facts["device_name"])
    was = tf32_enabled()
    try:
        for dtype, tf32, hiddens in (
            ("bfloat16", False, z.hiddens),
            ("float32", True, z.fp32_hiddens),
            ("float32", False, ()),
        ):
            set_tf32(tf32)
            sq = dict(layer="square", gemm="square", m=z.square, n=z.square, k=z.square)
            s = time_gemm(sq, dtype, dev, z.warmup, z.reps)
            square = 2 * z.square**3 / s / 1e12
            peak = spec.flops.get(peak_key(dtype, tf32)) if spec else None
            records.append(
                dict(
                    kind="square",
                    **sq,
                    dtype=dtype,
                    tf32=tf32,
                    seconds=s,
                    tflops=square,
                    of_datasheet=square * 1e12 / peak if peak else None,
                )
            )
            for h in hiddens:
                for t in z.tp_degrees:
                    if budget.expired:
                        return True
                    for g in mlp_gemms(h, z.tokens, t):
                        s = time_gemm(g, dtype, dev, z.warmup, z.reps)
                        tf = 2 * g["m"] * g["n"] * g["k"] / s / 1e12
                        records.append(
                            dict(
                                kind="gemm",
                                hidden=h,
                                tokens=z.tokens,
                                t=t,
                                **g,
                                dtype=dtype,
                                tf32=tf32,
                                seconds=s,
                                tflops=tf,
                                of_square=tf / square,
                                of_datasheet=tf * 1e12 / peak if peak else None,
                            )
                        )
        records.append(copy_bandwidth(z.copy_bytes, dev, z.warmup, z.reps))
    finally:
        set_tf32(was)
    return None


def render(records: list[dict]) -> list[str]:
    sq = [r for r in records if r["kind"] == "square"]
    out = ["Square matmuls (the ceiling this run reached):", ""]
    out += table(
        sq,
        [
            ("dtype", "dtype"),
            ("TF32", "tf32"),
            ("m=n=k", "m"),
            ("seconds", "seconds"),
            ("TFLOP/s", "tflops"),
            ("of datasheet", "of_datasheet"),
        ],
    )
    out += ["", "TP MLP shards (column = fc1, row = fc2; t = TP degree):", ""]
    out += table(
        [r for r in records if r["kind"] == "gemm"],
        [
            ("dtype", "dtype"),
            ("TF32", "tf32"),
            ("h", "hidden"),
            ("t", "t"),
            ("layer", "layer"),
            ("GEMM", "gemm"),
            ("m", "m"),
            ("n", "n"),
            ("k", "k"),
            ("seconds", "seconds"),
            ("TFLOP/s", "tflops"),
            ("of square", "of_square"),
            ("of datasheet", "of_datasheet"),
        ],
    )
    cp = [dict(r, gbs=r["read_write_bytes_per_s"] / 1e9) for r in records if r["kind"] == "copy"]
    out += ["", "Device-memory copy (bytes read + written per second):", ""]
    out += table(cp, [("bytes", "bytes"), ("seconds", "seconds"), ("GB/s", "gbs")])
    return out
