"""The device mesh: virtual devices laid out on an n-d grid with named dims.

`Mesh(8)` is a 1-d mesh of 8 devices; `Mesh((2, 4), names=("dp", "tp"))` a 2-d
one, device ids in row-major order.  A collective over one mesh dim runs in
every group along that dim at once, e.g. for ("dp", "tp") = (2, 4) the "tp"
groups are (0, 1, 2, 3) and (4, 5, 6, 7), the "dp" groups (0, 4), (1, 5), ...

Without a topology the devices hang off one non-blocking switch
(`presets.switch`: a port per device, 1 us, 100 GB/s).  The mesh owns the devices'
memory, their clocks (the time each device is free,
for the time model) and the trace of everything that ran on it.

`efficiency` prices the local ops (tpsim/efficiency.py): "peak" (the default) at the datasheet
roofline, "realistic" with the device's GEMM efficiency curve and memory-bound kernels' achieved
bandwidth and launch time.  Every compute record names the mode it was priced in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from numbers import Real

from tpsim import validate
from tpsim.device import VirtualDevice
from tpsim.efficiency import MODES, Efficiency, Gemm, efficiency_for, key_of, op_time
from tpsim.errors import MeshDimError, MeshError, TopologyError, WorldSizeError
from tpsim.hardware import device_spec
from tpsim.presets import switch
from tpsim.trace import ComputeRecord, Trace


class Mesh:
    def __init__(
        self,
        shape: int | tuple[int, ...],
        names: tuple[str, ...] | None = None,
        topology=None,
        memory: int | None = None,
        device=None,
        efficiency: str | Efficiency = "peak",
    ):
        shape = mesh_shape(shape)
        if memory is not None and not _positive(memory):
            raise MeshError(f"Mesh memory = {memory!r} bytes per device; valid: > 0, or None (unbounded)")
        names = tuple(names) if names is not None else tuple(f"d{i}" for i in range(len(shape)))
        if len(names) != len(shape) or len(set(names)) != len(names):
            raise MeshDimError(f"mesh names {names} must be {len(shape)} distinct names for shape {shape}")
        self.shape = shape
        self.names = names
        self.size = math.prod(shape)
        if topology is None:
            topology = switch(self.size)  # one port per device into a non-blocking switch
        if topology.num_devices < self.size:
            raise TopologyError(
                f"topology {topology.name!r} has {topology.num_devices} devices; "
                f"the mesh {shape} needs {self.size}"
            )
        self.topology = topology
        self.spec = device_spec(device) if device is not None else None  # None: compute takes no time
        self.efficiency_mode, self.efficiency = _efficiency(efficiency, self.spec)
        if memory is None and self.spec is not None:
            memory = self.spec.memory
        self.devices = [VirtualDevice(i, memory) for i in range(self.size)]
        self.context: list[tuple[str, str | None]] = []  # (module label, direction) of what runs now
        self.clock = [0.0] * self.size
        self.trace = Trace(self)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim_index(self, dim: int | str) -> int:
        """The index of a mesh dim given by name or index."""
        if isinstance(dim, str):
            if dim not in self.names:
                raise MeshDimError(f"mesh has no dim {dim!r}; its dims are {self.names}")
            return self.names.index(dim)
        if not isinstance(dim, int) or not -self.ndim <= dim < self.ndim:
            raise MeshDimError(f"mesh dim {dim!r} is out of range for a {self.ndim}-d mesh {self.names}")
        return dim % self.ndim

    def coordinate(self, device: int) -> tuple[int, ...]:
        coord = []
        for size in reversed(self.shape):
            coord.append(device % size)
            device //= size
        return tuple(reversed(coord))

    def device_at(self, coord: tuple[int, ...]) -> int:
        index = 0
        for c, size in zip(coord, self.shape, strict=False):
            index = index * size + c
        return index

    def groups(self, dim: int | str | None = None) -> list[tuple[int, ...]]:
        """Device ids of every group along `dim` (None: the whole mesh as one group)."""
        if dim is None:
            return [tuple(range(self.size))]
        d = self.dim_index(dim)
        others = [range(s) for i, s in enumerate(self.shape) if i != d]
        out = []
        for rest in itertools.product(*others):
            out.append(tuple(self.device_at((*rest[:d], k, *rest[d:])) for k in range(self.shape[d])))
        return out

    def group_rank(self, device: int, dim: int | str) -> int:
        """The rank of `device` inside its group along `dim`."""
        return self.coordinate(device)[self.dim_index(dim)]

    def memory(self) -> list[dict]:
        """Per device: bytes in use by category, total, peak and capacity."""
        return [
            {"device": d.index, **dict(d.in_use), "used": d.used, "peak": d.peak, "capacity": d.capacity}
            for d in self.devices
        ]

    def compute(
        self, device: int, name: str, flops: float, nbytes: float, dtype, gemm: Gemm | None = None
    ) -> float:
        """Run one local op on `device`: its time in this mesh's efficiency mode (efficiency.op_time;
        `gemm` the shape of a matmul, None a memory-bound op) on its clock, recorded in the trace."""
        start = self.clock[device]
        spec = self.spec
        end = start + (
            op_time(spec, self.efficiency, flops, nbytes, dtype, gemm) if spec is not None else 0.0
        )
        label, direction = self.context[-1] if self.context else (None, None)
        record = ComputeRecord(
            device, name, flops, nbytes, start, end, label, direction, gemm, self.efficiency_mode
        )
        self.trace.add_compute(record)
        self.clock[device] = end
        return end

    @property
    def label(self) -> tuple[str | None, str | None]:
        """(module, direction) that collectives and compute are attributed to now."""
        return self.context[-1] if self.context else (None, None)

    def scratch_copy(self) -> Mesh:
        """A mesh with the same layout, topology, memory use and clocks, but its own trace:
        for dry runs that must fail before the real mesh is touched."""
        other = object.__new__(Mesh)
        other.shape, other.names, other.size = self.shape, self.names, self.size
        other.topology, other.spec, other.context = self.topology, self.spec, []
        other.efficiency_mode, other.efficiency = self.efficiency_mode, self.efficiency
        other.devices = []
        for d in self.devices:
            copy = VirtualDevice(d.index, d.capacity, d.name)
            copy.in_use.update(d.in_use)
            copy.used = d.used
            copy.peak = d.peak
            other.devices.append(copy)
        other.clock = list(self.clock)
        other.trace = Trace(other)
        return other

    def reset_clock(self) -> None:
        self.clock = [0.0] * self.size

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}={s}" for n, s in zip(self.names, self.shape, strict=False))
        mode = f", efficiency={self.efficiency_mode!r}" if self.efficiency_mode != "peak" else ""
        return f"Mesh({dims}, topology={self.topology.name!r}{mode})"


def _efficiency(mode, spec) -> tuple[str, Efficiency | None]:
    """(mode, the device's Efficiency or None for peak); "realistic" needs a device with parameters.
    An Efficiency given in place of a mode (e.g. fitted by `tpsim fit-gemm`) prices as realistic."""
    if isinstance(mode, Efficiency):
        if spec is None:
            raise MeshError(
                f"Mesh efficiency = {mode.device!r} parameters need a device (device='h100', ...)"
            )
        return "realistic", mode
    if mode not in MODES:
        raise MeshError(f"Mesh efficiency = {mode!r}; valid: {', '.join(repr(m) for m in MODES)}")
    if mode == "peak":
        return mode, None
    if spec is None:
        raise MeshError(
            "Mesh efficiency = 'realistic' needs a device (device='h100', ...): "
            "without one compute takes no time"
        )
    return mode, efficiency_for(key_of(spec), mode)


def mesh_shape(shape) -> tuple[int, ...]:
    """(size, ...) from an int (NumPy ints too) or a sequence of them; every size an int >= 1."""
    sizes = (shape,) if validate.is_int(shape) or not isinstance(shape, Iterable) else tuple(shape)
    if not sizes or any(not validate.is_int(s) or s < 1 for s in sizes):
        raise WorldSizeError(f"mesh shape {shape!r} is invalid: every dim needs an int size >= 1 (4, (2, 4))")
    return tuple(int(s) for s in sizes)


def _positive(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and float(x) > 0
