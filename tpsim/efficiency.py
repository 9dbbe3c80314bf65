"""Compute efficiency: how much of a device's datasheet peak a GEMM or a memory-bound op achieves.

Two modes, named in every output that uses them:

    peak        the datasheet roofline: time = max(F / peak, B / bandwidth) (hardware.DeviceSpec.time)
    realistic   this file's model, below

A GEMM (m, n, k), cuBLAS-style, cuts C (m, n) into tiles of `tile` that the SMs run in waves:

    split-K      s = 1, or where the tiles fill less than one wave, s = min(sms // tiles, k // split_k_min)
                 slices of k run as separate work units and their fp32 partials are summed (cuBLAS's
                 and CUTLASS's split-K for skinny GEMMs, such as decode's m = batch)
    quantization q = s m n / (waves * sms * tile_m * tile_n),  waves = ceil(s tiles / sms)
    k-loop       k' / (k' + k_half), k' = k / s   the C tile's epilogue and pipeline fill, as k_half of k
    efficiency   e = gemm_fraction * q * k' / (k' + k_half)
    time         launch + max(2 m n k / (e peak), bytes / (memory_fraction bandwidth)), where bytes
                 include split-K's partials (each slice writes and the sum reads s m n fp32 values)

`gemm_fraction` is the curve's limit (q = 1, k >> k_half), set from a published GEMM figure, never an
end-to-end training figure: where the figure's shape is published, the curve passes through it there
(`anchored`); where not (V100), the figure is taken as the limit.  A memory-bound op (norm, softmax,
GeLU, dropout, residual add) takes launch + bytes / (memory_fraction bandwidth).  `tpsim fit-gemm`
fits gemm_fraction, k_half and launch of a measured table (tpsim/efficiency_fit.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tpsim.errors import TopologyError

MODES = ("realistic", "peak")


@dataclass(frozen=True)
class Efficiency:
    """One device's efficiency parameters, with where each came from."""

    device: str  # a hardware.DEVICES key, or a name for a device outside it
    gemm_fraction: float  # of the datasheet peak, reached by large well-shaped GEMMs
    sms: int  # streaming multiprocessors the tiles are spread over
    tile: tuple[int, int]  # (tile_m, tile_n) of C one SM computes per wave
    k_half: float  # k at which the k-loop runs at half of gemm_fraction
    memory_fraction: float  # of the datasheet memory bandwidth, reached by streaming kernels
    launch: float  # seconds per kernel, launch and tail
    source: str
    date: str
    split_k_min: int = 256  # k each split-K slice keeps at least: an assumption (4 k-steps of 64)

    def tiles(self, m: int, n: int, batch: int = 1) -> int:
        tm, tn = self.tile
        return batch * math.ceil(m / tm) * math.ceil(n / tn)

    def splits(self, m: int, n: int, k: int | None, batch: int = 1) -> int:
        """Split-K slices: 1 where the tiles fill a wave (or k is not given), else enough to fill it."""
        tiles = self.tiles(m, n, batch)
        if k is None or tiles >= self.sms:
            return 1
        return max(1, min(self.sms // tiles, k // self.split_k_min))

    def quantization(self, m: int, n: int, batch: int = 1, k: int | None = None) -> float:
        """Useful share of the work units: 1 when m, n fill whole tiles and whole waves.  Given k, a
        GEMM of less than a wave of tiles is split along k (`splits`)."""
        tm, tn = self.tile
        s = self.splits(m, n, k, batch)
        waves = math.ceil(s * self.tiles(m, n, batch) / self.sms)
        return s * batch * m * n / (waves * self.sms * tm * tn)

    def gemm(self, m: int, n: int, k: int, batch: int = 1) -> float:
        """Achieved share of the datasheet peak for `batch` GEMMs (m, k) @ (k, n)."""
        slice_k = k / self.splits(m, n, k, batch)
        return self.gemm_fraction * self.quantization(m, n, batch, k) * slice_k / (slice_k + self.k_half)

    def split_k_bytes(self, m: int, n: int, k: int, batch: int = 1) -> float:
        """Bytes of split-K's fp32 partials: each slice writes its (m, n), the sum reads them all."""
        s = self.splits(m, n, k, batch)
        return 0.0 if s == 1 else 2 * s * batch * m * n * 4

    def with_(self, **changes) -> Efficiency:
        return replace(self, **changes)


def gemm_time(
    spec,
    eff: Efficiency | None,
    m: int,
    n: int,
    k: int,
    dtype,
    batch: int = 1,
    *,
    nbytes: float | None = None,
) -> float:
    """Seconds of `batch` GEMMs (m, k) @ (k, n) in `dtype`; eff None is the peak mode (the roofline).

    `nbytes`: the bytes the kernel moves, where they are not the three operands at dtype's size (1-byte
    fp8 weights; FlashAttention, whose score tiles stay on chip)."""
    flops = 2 * batch * m * n * k
    if nbytes is None:
        nbytes = batch * (m * k + k * n + m * n) * _itemsize(dtype)
    if eff is None:
        return spec.time(flops, nbytes, dtype)
    compute = flops / (eff.gemm(m, n, k, batch) * spec.peak(dtype))
    nbytes += eff.split_k_bytes(m, n, k, batch)
    return eff.launch + max(compute, nbytes / (eff.memory_fraction * spec.memory_bandwidth))


def memory_time(spec, eff: Efficiency | None, nbytes: float) -> float:
    """Seconds of a memory-bound op that reads and writes `nbytes` in all."""
    if eff is None:
        return nbytes / spec.memory_bandwidth
    return eff.launch + nbytes / (eff.memory_fraction * spec.memory_bandwidth)


@dataclass(frozen=True)
class Gemm:
    """The shape of `batch` GEMMs (m, k) @ (k, n), as a local op records it for pricing."""

    m: int
    n: int
    k: int
    batch: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


def op_time(
    spec, eff: Efficiency | None, flops: float, nbytes: float, dtype, gemm: Gemm | None = None
) -> float:
    """Seconds of one local op of the simulator (Mesh.compute), real-valued or shape-only alike.

    eff None (peak): the roofline spec.time(flops, nbytes, dtype), whatever the op.  Realistic: a GEMM
    through gemm_time of its shape (a scale folded into its epilogue costs nothing, as in
    kernels.layer_gemms), any other op memory-bound through memory_time; an op that moves nothing
    (a view, an empty shard) launches no kernel and takes 0.
    """
    if eff is None:
        return spec.time(flops, nbytes, dtype)
    if gemm is not None and gemm.flops > 0:
        return gemm_time(spec, eff, gemm.m, gemm.n, gemm.k, dtype, gemm.batch)
    return memory_time(spec, eff, nbytes) if nbytes > 0 or flops > 0 else 0.0


def mode_name(efficiency) -> str:
    """How an output names the mode of `efficiency`: a mode, or an Efficiency given in its place
    (e.g. fitted by `tpsim fit-gemm`), which prices as realistic with its own parameters."""
    if isinstance(efficiency, Efficiency):
        return f"realistic (given efficiency: {efficiency.device})"
    return str(efficiency)


def mode_note(efficiency) -> str:
    """A few words on what the mode of `efficiency` means, for a table's title."""
    if isinstance(efficiency, Efficiency) or str(efficiency).startswith("realistic"):
        return "GEMM efficiency by shape, memory-bound ops at achieved bandwidth, tpsim/efficiency.py"
    return "datasheet roofline"


def key_of(device) -> str:
    """The hardware.DEVICES key of `device` (a key, or a DeviceSpec of one, possibly with changed fields),
    which efficiency_for looks its parameters up by."""
    if isinstance(device, str):
        return device.lower()
    from tpsim.hardware import DEVICES  # lazy: hardware is heavier than this leaf module

    for key, spec in DEVICES.items():
        if spec.name == device.name:
            return key
    return getattr(device, "efficiency_key", device.name)


def _itemsize(dtype) -> int:
    name = str(dtype)
    return {"float16": 2, "bfloat16": 2, "float32": 4, "tf32": 4, "float64": 8}.get(name, 2)


MEMORY_NOTE = (
    "memory_fraction 0.8 and launch 5 us are assumptions, not measurements: streaming copies "
    "typically reach 80-90% of HBM peak; the GPU report's copy record measures it"
)
K_HALF_NOTE = (
    "k_half 64 is an assumption (the C tile's write and pipeline fill cost about 64 of k); so is split_k_min "
    "256 (a split-K slice keeps at least 256 of k)"
)

V100 = Efficiency(
    "v100",
    83 / 125,
    80,
    (128, 128),
    64,
    0.8,
    5e-6,
    "GEMM: 83 TFLOP/s fp16 with cuBLAS on a Tesla V100 of 125 peak (Markidis et al., 'NVIDIA Tensor "
    "Core Programmability, Performance & Precision', IPDPSW 2018), taken as the large-GEMM limit (the "
    "abstract gives no shape); 80 SMs (V100 whitepaper, 2017); "
    f"{K_HALF_NOTE}; {MEMORY_NOTE}",
    "2018-05",
)


def anchored(e: Efficiency, fraction: float, shape: tuple[int, int, int]) -> Efficiency:
    """e with gemm_fraction set so that a GEMM of the published `shape` (m, n, k) reaches the published
    `fraction` of peak: the figure is a point on the curve, not its limit."""
    m, n, k = shape
    return e.with_(gemm_fraction=fraction / (e.quantization(m, n) * k / (k + e.k_half)))


MAMF = "maximum achievable matmul FLOPS, S. Bekman, ml-engineering, compute/accelerator/README.md (2024)"
A100 = anchored(
    Efficiency(
        "a100",
        1.0,
        108,
        (128, 128),
        64,
        0.8,
        5e-6,
        f"GEMM: 267.9 TFLOP/s bf16 of 312 peak at m, n, k = 6912, 16384, 2048 (CUDA 12.1), {MAMF}; "
        f"108 SMs (A100 whitepaper, 2020); {K_HALF_NOTE}; {MEMORY_NOTE}",
        "2024",
    ),
    267.9 / 312,
    (6912, 16384, 2048),
)
H100 = anchored(
    Efficiency(
        "h100",
        1.0,
        132,
        (128, 256),
        64,
        0.8,
        5e-6,
        f"GEMM: 792.1 TFLOP/s bf16 of 989 peak at m, n, k = 6144, 17920, 2816 (CUDA 12.1), {MAMF}; "
        f"132 SMs (H100 whitepaper, 2022); {K_HALF_NOTE}; {MEMORY_NOTE}",
        "2024",
    ),
    792.1 / 989.4,
    (6144, 17920, 2816),
)
H200 = anchored(
    H100.with_(
        device="h200",
        source=f"GEMM: 821.0 TFLOP/s bf16 of 989 peak on a GH200 (the H200's GH100 chip) at m, n, k = 11264, "
        f"19712, 1536 (CUDA 12.5), {MAMF}; otherwise as the H100",
    ),
    821.0 / 989.4,
    (11264, 19712, 1536),
)
# published GEMM figures with their shapes, for the test that the curve passes through them
PUBLISHED = {"a100": (267.9 / 312, (6912, 16384, 2048)), "h100": (792.1 / 989.4, (6144, 17920, 2816))}
PUBLISHED["h200"] = (821.0 / 989.4, (11264, 19712, 1536))

EFFICIENCIES = {e.device: e for e in (V100, A100, H100, H200)}


def efficiency_for(device: str, mode: str = "realistic") -> Efficiency | None:
    """The efficiency model of `device` (a hardware.DEVICES key) in `mode`; None is the peak mode."""
    if mode not in MODES:
        raise TopologyError(f"unknown efficiency mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "peak":
        return None
    key = str(device).lower()
    if key not in EFFICIENCIES:
        raise TopologyError(
            f"no efficiency parameters for device {device!r}; known: {', '.join(EFFICIENCIES)} "
            "(fit some with `tpsim fit-gemm`, or use mode 'peak')"
        )
    return EFFICIENCIES[key]
