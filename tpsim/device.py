"""A virtual device: an id, a memory capacity, and a ledger of bytes in use by category."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from tpsim.errors import OutOfMemoryError


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


class VirtualDevice:
    """One simulated accelerator.  `capacity` is in bytes; None means unbounded.

    Memory is tracked by category ("tensor", "comm", and later "weights",
    "grads", "activations"), with the peak of the total.
    """

    def __init__(self, index: int, capacity: int | None = None, name: str | None = None):
        self.index = index
        self.capacity = capacity
        self.name = name or f"dev{index}"
        self.in_use: dict[str, int] = defaultdict(int)
        self.peak = 0
        self.used = 0  # the sum of in_use, kept as it changes

    def check(self, nbytes: int) -> None:
        """Raise OutOfMemoryError if `nbytes` more would not fit; changes nothing."""
        if self.capacity is not None and self.used + nbytes > self.capacity:
            raise OutOfMemoryError(
                f"device {self.index} ({self.name}) out of memory: asked for {_fmt_bytes(nbytes)} "
                f"with {_fmt_bytes(self.used)} in use of {_fmt_bytes(self.capacity)} capacity "
                f"({_fmt_bytes(self.capacity - self.used)} free)"
            )

    def allocate(self, nbytes: int, category: str = "tensor") -> None:
        self.check(nbytes)
        self.in_use[category] += nbytes
        self.used += nbytes
        if self.used > self.peak:
            self.peak = self.used

    def free(self, nbytes: int, category: str = "tensor") -> None:
        self.in_use[category] -= nbytes
        self.used -= nbytes
        if self.in_use[category] <= 0:
            del self.in_use[category]

    def move(self, nbytes: int, old: str, new: str) -> None:
        """Count `nbytes` under another category: the total does not change."""
        self.in_use[old] -= nbytes
        if self.in_use[old] <= 0:
            del self.in_use[old]
        self.in_use[new] += nbytes

    def __repr__(self) -> str:
        cap = "unbounded" if self.capacity is None else _fmt_bytes(self.capacity)
        used, peak = _fmt_bytes(self.used), _fmt_bytes(self.peak)
        return f"VirtualDevice({self.index}, used={used}, peak={peak}, capacity={cap})"


def allocate_all(devices: list[VirtualDevice], request: Mapping[int, int], category: str) -> None:
    """Allocate on several devices at once, or on none: every device is checked before any changes."""
    for index, nbytes in request.items():
        devices[index].check(nbytes)
    for index, nbytes in request.items():
        devices[index].allocate(nbytes, category)


def free_all(devices: list[VirtualDevice], request: Mapping[int, int], category: str) -> None:
    for index, nbytes in request.items():
        devices[index].free(nbytes, category)
