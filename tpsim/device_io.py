"""Device presets as files: a DeviceSpec saved as JSON with its source, and loaded back.

    {"name": "nvidia-h100-80gb-hbm3-2026-12-06", "flops": {"bfloat16": 7.1e14, ...},
     "memory_bandwidth": 2.9e12, "memory": 85899345920,
     "source": "measured by python -m reference.gpu_check: ...", "measured": {"report": ..., "gpu": ...,
     "date": ...}, "notes": {...}}

`tpsim calibrate --gpu-report FILE` writes one (tpsim/cli/gpu_report.py); `device_spec` in
tpsim/hardware.py takes a path to one, or the name of one in the presets folder `devices/`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tpsim.errors import TopologyError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "devices"
FIELDS = ("name", "flops", "memory_bandwidth", "memory", "source")


def to_dict(spec, measured: dict | None = None) -> dict:
    doc = dict(
        name=spec.name,
        flops=dict(spec.flops),
        memory_bandwidth=spec.memory_bandwidth,
        memory=spec.memory,
        source=spec.source,
        notes=dict(spec.notes),
    )
    if measured is not None:
        doc["measured"] = dict(measured)
    return doc


def save(spec, path, measured: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(spec, measured), indent=1) + "\n")
    load(path)  # what device_spec will do with it
    return path


def load(path):
    """The DeviceSpec a preset file holds; TopologyError naming the file and the field if it is bad."""
    from tpsim.hardware import DeviceSpec

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TopologyError(f"device preset {path}: cannot read it as JSON ({e})") from None
    missing = [f for f in FIELDS if f not in doc] if isinstance(doc, dict) else list(FIELDS)
    if missing:
        need = ", ".join(FIELDS)
        raise TopologyError(f"device preset {path}: missing field(s) {', '.join(missing)}; needs {need}")
    flops = doc["flops"]
    bad = {k: v for k, v in flops.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)}
    if not flops or bad:
        raise TopologyError(f"device preset {path}: flops must map dtypes to rates > 0; got {bad or flops}")
    for key in ("memory_bandwidth", "memory"):
        v = doc[key]
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise TopologyError(f"device preset {path}: {key} must be a number > 0, got {v!r}")
    notes = {str(k): str(v) for k, v in doc.get("notes", {}).items()}
    return DeviceSpec(
        str(doc["name"]),
        {str(k): float(v) for k, v in flops.items()},
        float(doc["memory_bandwidth"]),
        int(doc["memory"]),
        str(doc["source"]),
        notes,
    )


def find(name: str, folder: Path = PRESETS_DIR) -> Path | None:
    """The preset file for `name` (a path, or a file stem in `folder`), or None."""
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    candidate = folder / f"{name}.json"
    return candidate if candidate.is_file() else None


def names(folder: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
