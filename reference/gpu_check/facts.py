"""a. Facts: the device, driver, CUDA, NCCL and torch versions, and the date, as this process sees them."""

from __future__ import annotations

import datetime
import platform
import shutil
import subprocess

from reference.gpu_check.compat import tf32_enabled
from reference.gpu_check.report import table


def driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None where there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def nccl_version() -> str | None:
    """torch's NCCL version as a.b.c, or None where torch was built without it."""
    import torch

    try:
        v = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return None
    return ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)


def collect() -> dict:
    """Everything the report's header names; GPU fields are None on a machine without CUDA."""
    import numpy as np
    import torch

    from tpsim.machine import describe_machine

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return dict(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        time_utc=datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S"),
        device_name=props.name if cuda else "cpu",
        gpus=torch.cuda.device_count() if cuda else 0,
        gpu_memory_bytes=props.total_memory if cuda else None,
        multiprocessors=props.multi_processor_count if cuda else None,
        compute_capability=f"{props.major}.{props.minor}" if cuda else None,
        driver=driver_version(),
        cuda=torch.version.cuda,
        nccl=nccl_version() if cuda else None,
        torch=torch.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        machine=describe_machine()["summary"],
        tf32_matmul_default=tf32_enabled(),
    )


def section(budget, records: list, ctx) -> None:
    records.append(dict(kind="facts", **ctx.facts))


def render(records: list[dict]) -> list[str]:
    rows = [dict(key=k, value=v) for r in records for k, v in r.items() if k != "kind"]
    return table(rows, [("fact", "key"), ("value", "value")])
