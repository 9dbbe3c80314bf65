"""Routing rules: which links a transfer from device i to device j crosses (see tpsim.topology)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tpsim.errors import TopologyError


class Routing:
    """A routing rule: which link ids a transfer crosses.  Subclasses are stateless but for parameters."""

    kind: ClassVar[str] = ""

    def check(self, n: int) -> None:
        """Raise TopologyError unless this rule fits n devices."""

    def params(self) -> dict[str, Any]:
        """The rule's parameters, as stored in a topology file."""
        return {}

    def link_names(self, n: int) -> list[str]:
        """Default link names, in link-id order."""
        raise NotImplementedError

    def path_ids(self, src: int, dst: int, n: int) -> list[int]:
        """Link ids from src to dst in the order crossed: the plain, one-transfer definition."""
        raise NotImplementedError

    def route(self, src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised `path_ids`: (transfer index, link id) pairs, grouped by transfer, in path order."""
        raise NotImplementedError


def _two_hops(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # (T,), (T,) -> pairs (2T,) ordered transfer by transfer
    tidx = np.repeat(np.arange(first.size, dtype=np.int64), 2)
    return tidx, np.stack([first, second], axis=1).reshape(-1)


@dataclass(frozen=True)
class PairwiseRouting(Routing):
    """Every ordered pair of devices has its own dedicated link: no contention between pairs."""

    kind: ClassVar[str] = "pairwise"

    def link_names(self, n: int) -> list[str]:
        return [f"{i}->{j}" for i in range(n) for j in range(n) if j != i]

    def path_ids(self, src: int, dst: int, n: int) -> list[int]:
        return [src * (n - 1) + dst - (dst > src)]

    def route(self, src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(src.size, dtype=np.int64), src * (n - 1) + dst - (dst > src)


@dataclass(frozen=True)
class SwitchRouting(Routing):
    """One switch: each device has an egress and an ingress port link (NVSwitch, a PCIe switch)."""

    kind: ClassVar[str] = "switch"

    def link_names(self, n: int) -> list[str]:
        return [f"out{i}" for i in range(n)] + [f"in{i}" for i in range(n)]

    def path_ids(self, src: int, dst: int, n: int) -> list[int]:
        return [src, n + dst]

    def route(self, src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return _two_hops(src, n + dst)


@dataclass(frozen=True)
class RingRouting(Routing):
    """A bidirectional ring: links between neighbours only, so far transfers take several hops."""

    kind: ClassVar[str] = "ring"

    def link_names(self, n: int) -> list[str]:
        if n == 1:
            return []  # a lone device has no neighbour
        return [f"{i}->{(i + 1) % n} cw" for i in range(n)] + [f"{i}->{(i - 1) % n} ccw" for i in range(n)]

    def path_ids(self, src: int, dst: int, n: int) -> list[int]:
        d = (dst - src) % n
        if d <= n - d:
            return [(src + k) % n for k in range(d)]
        return [n + (src - k) % n for k in range(n - d)]

    def route(self, src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        d = (dst - src) % n
        cw = d <= n - d  # ties go clockwise
        hops = np.where(cw, d, n - d)
        tidx = np.repeat(np.arange(src.size, dtype=np.int64), hops)
        k = np.arange(tidx.size, dtype=np.int64) - np.repeat(np.cumsum(hops) - hops, hops)  # hop number
        s = src[tidx]
        return tidx, np.where(cw[tidx], (s + k) % n, n + (s - k) % n)


@dataclass(frozen=True)
class HierarchicalRouting(Routing):
    """Nodes of `group_size` devices: a switch inside each node, one NIC per device between nodes."""

    group_size: int
    kind: ClassVar[str] = "hierarchical"

    def check(self, n: int) -> None:
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, int) or g < 1 or n % g:
            raise TopologyError(f"group_size {g!r} does not split {n} devices; valid: a divisor of {n}")

    def params(self) -> dict[str, Any]:
        return {"group_size": self.group_size}

    def link_names(self, n: int) -> list[str]:
        names = SwitchRouting().link_names(n)
        return names + [f"nic-out{i}" for i in range(n)] + [f"nic-in{i}" for i in range(n)]

    def path_ids(self, src: int, dst: int, n: int) -> list[int]:
        if src // self.group_size == dst // self.group_size:
            return [src, n + dst]
        return [2 * n + src, 3 * n + dst]

    def route(self, src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        remote = (src // self.group_size != dst // self.group_size) * (2 * n)  # shift to the NIC ids
        return _two_hops(src + remote, n + dst + remote)


ROUTINGS: dict[str, type[Routing]] = {
    r.kind: r for r in (PairwiseRouting, SwitchRouting, RingRouting, HierarchicalRouting)
}
