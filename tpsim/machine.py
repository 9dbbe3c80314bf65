"""A short description of the machine a benchmark or calibration ran on, stored beside its results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

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


def write_results(path: str | Path, results: dict, markdown: str) -> None:
    """A benchmark's results: JSON at `path`, the Markdown table beside it (same name, .md), and on stdout."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
