"""GPU reports (python -m reference.gpu_check) as device presets, and the newest report in the repo.

    tpsim calibrate --gpu-report benchmarks/results/gpu/nvidia-h100-80gb-hbm3-2026-12-06.json
    python -m tpsim.cli.gpu_report            # names the newest GPU report, or says none exists

The preset's rates are the report's own ceilings, from section d: bfloat16 (and float16, not
measured separately) from the bf16 square matmul, float32 from the fp32 square matmul with TF32
off, tf32 with it on, memory bandwidth from the device-memory copy (bytes read + written).
float64 is not measured: it keeps the datasheet figure where tpsim knows the GPU, and is left out
otherwise.  The file names its source: the report, the GPU and the date.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tpsim.errors import ReportError

if TYPE_CHECKING:
    from tpsim.hardware import DeviceSpec

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu"
NO_REPORT = "no GPU report yet — the GPU run is still owed"


def slug(text: str) -> str:
    """A file-name-safe lower-case form: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "unknown"


def read(path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"GPU report {path}: cannot read it as JSON ({e})") from None
    if not isinstance(doc, dict) or "meta" not in doc or "sections" not in doc:
        raise ReportError(f"GPU report {path}: not a reference.gpu_check report (needs meta and sections)")
    return doc


def _square(records: list[dict], dtype: str, tf32: bool) -> float | None:
    rates = [
        r["tflops"] * 1e12
        for r in records
        if r.get("kind") == "square" and r["dtype"] == dtype and bool(r.get("tf32")) == tf32
    ]
    return max(rates) if rates else None


def _memory(facts: dict) -> int:
    if facts.get("gpu_memory_bytes"):
        return int(facts["gpu_memory_bytes"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # a CPU run: host memory


def spec_from_records(compute: list[dict], facts: dict, report: str):
    """A DeviceSpec from section d's records (the square matmuls and the copy) and section a's facts."""
    from tpsim.hardware import DEVICES, DeviceSpec

    device = facts.get("device_name", "unknown")
    bf16, fp32, tf32 = (
        _square(compute, "bfloat16", False),
        _square(compute, "float32", False),
        _square(compute, "float32", True),
    )
    copies = [r["read_write_bytes_per_s"] for r in compute if r.get("kind") == "copy"]
    if bf16 is None or fp32 is None or not copies:
        raise ReportError(
            f"report {report}: section d lacks the bf16 or fp32 square matmul or the copy; "
            "a preset needs all three"
        )
    flops = {"bfloat16": bf16, "float16": bf16, "float32": fp32}
    if tf32 is not None:
        flops["tf32"] = tf32
    notes = {"float16": "not measured: the bf16 rate"}
    known = next((s for k, s in DEVICES.items() if k in device.lower()), None)
    if known is not None and "float64" in known.flops:
        flops["float64"] = known.flops["float64"]
        notes["float64"] = f"not measured: datasheet ({known.name})"
    date = facts.get("date", "undated")
    source = (
        f"measured by python -m reference.gpu_check on {device}, {date} (report {report}): "
        "square matmul rates and device-memory copy bandwidth"
    )
    return DeviceSpec(f"{slug(device)}-{date}", flops, max(copies), _memory(facts), source, notes)


def preset_from_report(path):
    """(DeviceSpec, measured) of a report file: its section d and facts, and where they came from."""
    doc = read(path)
    sections = {x["name"]: x for x in doc["sections"]}
    if "compute" not in sections:
        have = ", ".join(sections) or "none"
        raise ReportError(
            f"GPU report {path}: no compute section (d) to make a preset from; sections: {have}"
        )
    facts = doc["meta"]
    spec = spec_from_records(sections["compute"]["records"], facts, str(path))
    measured = dict(
        report=str(path),
        gpu=facts.get("device_name"),
        date=facts.get("date"),
        quick=bool(facts.get("quick")),
        status=sections["compute"]["status"],
    )
    return spec, measured


def write_preset(report, out=None) -> tuple[Path, DeviceSpec]:
    """Write the preset of `report` to `out` (default devices/<gpu>-<date>.json); returns (path, spec)."""
    from tpsim import device_io

    spec, measured = preset_from_report(report)
    path = Path(out) if out else device_io.PRESETS_DIR / f"{spec.name}.json"
    return device_io.save(spec, path, measured), spec


def run_calibrate(args) -> tuple[dict, str]:
    """`tpsim calibrate --gpu-report FILE [--out PRESET]`: the preset instead of a collective sweep."""
    path, spec = write_preset(args.gpu_report, args.out)
    rates = ", ".join(f"{k} {v / 1e12:.4g} TFLOP/s" for k, v in spec.flops.items())
    text = (
        f"wrote {path}: {spec.name}: {rates}; memory {spec.memory_bandwidth / 1e9:.4g} GB/s; "
        f"use it with --device {path}"
    )
    return dict(
        file=str(path),
        name=spec.name,
        flops=spec.flops,
        memory_bandwidth=spec.memory_bandwidth,
        source=spec.source,
    ), text


def reports(folder=RESULTS) -> list[Path]:
    """Every GPU report (not a --quick run) in `folder`, oldest first by its own date, then name."""
    found = []
    for p in sorted(Path(folder).glob("*.json")):
        try:
            meta = read(p)["meta"]
        except ReportError:
            continue
        if not meta.get("quick") and meta.get("device_name", "cpu") != "cpu":
            found.append((str(meta.get("date", "")), p.name, p))
    return [p for *_, p in sorted(found)]


def newest_report(folder=RESULTS) -> Path | None:
    """The newest GPU report's JSON path, or None while the GPU run is still owed."""
    found = reports(folder)
    return found[-1] if found else None


def main() -> int:
    newest = newest_report()
    print(newest.with_suffix(".md") if newest else NO_REPORT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
