"""Accelerators for the roofline time model: peak FLOP/s per dtype, memory bandwidth and capacity.

An op of F FLOPs that moves B bytes to and from memory takes max(F / peak, B / bandwidth)
on a device: the roofline.  Peaks are dense (no sparsity) tensor-core figures from
NVIDIA's datasheets for 16-bit types, and the plain (non-tensor-core) figures for
float32 and float64, since tpsim models float32 matmuls with TF32 off; "tf32" is the dense
TF32 tensor-core rate, for float32 matmuls with TF32 on (what reference.gpu_check measures against).
These are datasheet figures until a GPU report exists: `tpsim calibrate --gpu-report FILE` writes a
measured preset (tpsim/device_io.py), which `device_spec` takes by path or by name from devices/.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from tpsim.errors import TopologyError

T = 1e12


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator model.  `flops` maps a dtype name to peak FLOP/s."""

    name: str
    flops: dict[str, float]
    memory_bandwidth: float  # bytes/s
    memory: int  # bytes
    source: str
    notes: dict[str, str] = field(default_factory=dict)

    def peak(self, dtype) -> float:
        key = _dtype_key(dtype)
        if key not in self.flops:
            raise TopologyError(
                f"device {self.name} has no peak for dtype {key}; known: {', '.join(self.flops)}"
            )
        return self.flops[key]

    def time(self, flops: float, nbytes: float, dtype) -> float:
        """Roofline time of one op."""
        return max(flops / self.peak(dtype) if flops else 0.0, nbytes / self.memory_bandwidth)


@functools.lru_cache(maxsize=64)
def _dtype_key(dtype) -> str:
    """A dtype's name as `flops` keys it (str() of a NumPy dtype is slow: once per dtype)."""
    return "bfloat16" if str(dtype) in ("bfloat16", "bf16") else str(dtype)


V100 = DeviceSpec(
    "V100-SXM2-32GB",
    {"float16": 125 * T, "bfloat16": 15.7 * T, "float32": 15.7 * T, "float64": 7.8 * T},
    900e9,
    32 << 30,
    "NVIDIA Tesla V100 datasheet (2020): 125 TFLOPS tensor (fp16), 15.7 fp32, 7.8 fp64, 900 GB/s HBM2; "
    "V100 has no bf16 tensor cores, so bf16 runs at the fp32 rate",
)
A100 = DeviceSpec(
    "A100-SXM4-80GB",
    {"float16": 312 * T, "bfloat16": 312 * T, "float32": 19.5 * T, "float64": 9.7 * T, "tf32": 156 * T},
    2039e9,
    80 << 30,
    "NVIDIA A100 Tensor Core GPU datasheet (2021): 312 TFLOPS bf16/fp16 dense, 156 TF32 dense, 19.5 fp32, "
    "9.7 fp64, 2039 GB/s; datasheet figures, not measured here",
)
# H100 SXM and H200 SXM: the same Hopper chip's rates (dense; tf32 is TF32 tensor-core, float32 plain)
HOPPER_FLOPS = {
    "float16": 989.4 * T,
    "bfloat16": 989.4 * T,
    "float32": 66.9 * T,
    "float64": 33.5 * T,
    "tf32": 494.7 * T,
}
H100 = DeviceSpec(
    "H100-SXM5-80GB",
    HOPPER_FLOPS,
    3.35e12,
    80 << 30,
    "NVIDIA H100 Tensor Core GPU datasheet (2023), SXM: 989 TFLOPS bf16/fp16 dense, 495 TF32 dense, 67 fp32, "
    "34 fp64, 3.35 TB/s; datasheet figures until a GPU report exists (benchmarks/results/gpu/)",
)
H200 = DeviceSpec(
    "H200-SXM-141GB",
    HOPPER_FLOPS,
    4.8e12,
    141 * 10**9,
    "NVIDIA H200 Tensor Core GPU datasheet (2024), SXM: 989 TFLOPS bf16/fp16 dense, 495 TF32 dense, 67 fp32, "
    "34 fp64, 4.8 TB/s HBM3e, 141 GB; datasheet figures until a GPU report exists (benchmarks/results/gpu/)",
)
L40S = DeviceSpec(
    "L40S-48GB",
    {"float16": 362 * T, "bfloat16": 362 * T, "float32": 91.6 * T, "float64": 1.43 * T, "tf32": 183 * T},
    864e9,
    48 << 30,
    "NVIDIA L40S datasheet (2023), PCIe card: 362 TFLOPS bf16/fp16 dense, 183 TF32 dense, 91.6 fp32, "
    "864 GB/s GDDR6, 48 GB; datasheet figures, not measured here",
    {"float64": "not on the datasheet: 91.6 / 64, the FP64:FP32 ratio of compute capability 8.9 in the "
     "CUDA C++ Programming Guide's arithmetic throughput table"},
)
DEVICES = {"v100": V100, "a100": A100, "h100": H100, "h200": H200, "l40s": L40S}


def device_spec(name) -> DeviceSpec:
    """A DeviceSpec by built-in name (DEVICES), a saved preset's path, or a preset's name in devices/."""
    if isinstance(name, DeviceSpec):
        return name
    from tpsim import device_io

    key = str(name)
    if key.lower() in DEVICES:
        return DEVICES[key.lower()]
    path = device_io.find(key)
    if path is not None:
        return device_io.load(path)
    saved = device_io.names()
    raise TopologyError(
        f"unknown device {name!r}; valid: {', '.join(DEVICES)}"
        + (f", saved presets in devices/: {', '.join(saved)}" if saved else "")
        + ", or the path of a preset file (.json)"
    )
