"""A short description of the machine a benchmark or calibration ran on, stored beside its results."""

from __future__ import annotations

import os
import platform

import numpy as np


def describe_machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / (1 << 20)
    except (OSError, ValueError, IndexError):
        mem_gib = float("nan")
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    info["summary"] = (
        f"{cpu}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, NumPy {info['numpy']}"
    )
    return info
