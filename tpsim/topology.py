"""Links and routes: the alpha-beta model the engine uses to time each step of a collective.

A `Topology` is a set of directed `Link`s, each with a latency alpha (seconds) and a
bandwidth (bytes/s, one direction), and a routing rule that says which links a transfer
from device i to device j crosses.  A lone transfer of b bytes takes the sum of the
alphas on its path plus b / (the smallest bandwidth on it); transfers that cross one
link in the same step share that link's bandwidth (the engine does the sharing).

Routing kinds (n devices; link ids are the positions in `Topology.links`):

    pairwise      every ordered pair has its own link; i->j is link i*(n-1) + j - (j > i)
    switch        egress port out(i) = i, ingress port in(j) = n + j; i->j crosses out(i), in(j)
    ring          clockwise link i->i+1 = i, counter-clockwise link i->i-1 = n + i; a transfer
                  takes the shorter way round, ties clockwise, and crosses one link per hop
    hierarchical  nodes of g devices; inside a node a switch (ids as above), between nodes
                  nic_out(i) = 2n + i, nic_in(j) = 3n + j into a non-blocking fabric

Presets live in `tpsim.presets`, which builds on this module (never the other way round).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tpsim.errors import TopologyError
from tpsim.routing import (  # re-exported: the routing kinds belong to the topology's vocabulary
    ROUTINGS,
    HierarchicalRouting,
    PairwiseRouting,
    RingRouting,
    Routing,
    SwitchRouting,
)

__all__ = [
    "FORMAT", "ROUTINGS", "VERSION", "HierarchicalRouting", "Link", "PairwiseRouting", "RingRouting",
    "Routing", "SwitchRouting", "Topology",
]

FORMAT = "tpsim-topology"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Link:
    """One directed link: `alpha` latency in seconds, `bandwidth` in bytes/s in its one direction."""

    name: str
    alpha: float
    bandwidth: float

    def __post_init__(self) -> None:
        a, bw = self.alpha, self.bandwidth
        if not (_is_real(a) and math.isfinite(a) and a >= 0):
            raise TopologyError(f"link {self.name!r} has alpha {a!r}; valid: finite seconds >= 0")
        if not (_is_real(bw) and math.isfinite(bw) and bw > 0):
            raise TopologyError(f"link {self.name!r} has bandwidth {bw!r}; valid: finite bytes/s > 0")


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _as_devices(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise TopologyError(f"{what} must be a 1-D integer array; got dtype {a.dtype} and shape {a.shape}")
    return a.astype(np.int64, copy=False)


class Topology:
    """Devices, the directed links between them, and the rule that routes a transfer over links.

    `source` says where the figures come from.  Treat every attribute as read-only.
    """

    def __init__(
        self, name: str, num_devices: int, links: Iterable[Link], routing: Routing, source: str = ""
    ) -> None:
        n = num_devices
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TopologyError(f"topology {name!r} has num_devices {n!r}; valid: an integer >= 1")
        if not isinstance(routing, Routing):
            raise TopologyError(f"topology {name!r}: routing {routing!r}; valid: {', '.join(ROUTINGS)}")
        routing.check(n)
        links = tuple(links)
        want = len(routing.link_names(n))
        if len(links) != want:
            raise TopologyError(
                f"topology {name!r}: {routing.kind} routing of {n} devices needs {want} links; "
                f"got {len(links)}"
            )
        for link in links:
            if not isinstance(link, Link):
                raise TopologyError(f"topology {name!r}: {link!r} is not a Link")
        seen: set[str] = set()
        for link in links:
            if link.name in seen:
                raise TopologyError(f"topology {name!r} has two links named {link.name!r}; names must differ")
            seen.add(link.name)
        self.name = name
        self.num_devices = n
        self.links = links
        self.routing = routing
        self.source = source
        self._alphas = np.array([lk.alpha for lk in links], dtype=np.float64)
        self._bandwidths = np.array([lk.bandwidth for lk in links], dtype=np.float64)
        self._alphas.flags.writeable = False  # cached and shared with the engine
        self._bandwidths.flags.writeable = False

    @property
    def kind(self) -> str:
        """The routing kind: "pairwise", "switch", "ring" or "hierarchical"."""
        return self.routing.kind

    @property
    def alphas(self) -> np.ndarray:
        """Latency of each link in seconds, (num_links,) float64, indexed by link id."""
        return self._alphas

    @property
    def bandwidths(self) -> np.ndarray:
        """Bandwidth of each link in bytes/s, (num_links,) float64, indexed by link id."""
        return self._bandwidths

    def _check_device(self, d: int, what: str) -> None:
        if not 0 <= d < self.num_devices:
            raise TopologyError(
                f"{what} device {d} is outside 0..{self.num_devices - 1} of topology {self.name!r}"
            )

    def route(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Route T transfers src[t] -> dst[t] (src != dst) at once.

        Returns (transfer_index, link_id, latency): int64 (P,) and (P,) listing every
        (transfer, link it crosses) pair, grouped by transfer in path order, and float64
        (T,) latency = the sum of the alphas on each transfer's path.
        """
        src, dst = _as_devices(src, "src"), _as_devices(dst, "dst")
        if src.shape != dst.shape:
            raise TopologyError(f"src has {src.size} transfers but dst has {dst.size}; they must match")
        n = self.num_devices
        if src.size:
            for a, what in ((src, "source"), (dst, "destination")):
                if a.min() < 0 or a.max() >= n:
                    self._check_device(int(a[(a < 0) | (a >= n)][0]), what)
            local = src == dst
            if local.any():
                t = int(np.argmax(local))
                raise TopologyError(f"transfer {t} is a local copy ({src[t]} -> {dst[t]}); drop it first")
        tidx, link = self.routing.route(src, dst, n)
        latency = np.bincount(tidx, weights=self._alphas[link], minlength=src.size)
        return tidx, link, latency.astype(np.float64, copy=False)  # bincount of nothing is int64

    def path(self, src: int, dst: int) -> tuple[Link, ...]:
        """The links a transfer from src to dst crosses, in order (none if src == dst)."""
        self._check_device(src, "source")
        self._check_device(dst, "destination")
        if src == dst:
            return ()
        return tuple(self.links[i] for i in self.routing.path_ids(src, dst, self.num_devices))

    def describe(self) -> str:
        """A few lines for humans: devices, routing, link figures grouped, and their source."""
        groups: dict[tuple[float, float], int] = {}
        for lk in self.links:
            groups[(lk.alpha, lk.bandwidth)] = groups.get((lk.alpha, lk.bandwidth), 0) + 1
        params = "".join(f", {k}={v}" for k, v in self.routing.params().items())
        head = f"{self.name}: {self.num_devices} devices, {self.kind} routing{params}"
        lines = [f"{head}, {len(self.links)} links"]
        lines += [f"  {c} links: alpha {a * 1e6:g} us, {b / 1e9:g} GB/s each" for (a, b), c in groups.items()]
        lines.append(f"  source: {self.source or '(none given)'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_dict` turns back into an equal topology."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "num_devices": self.num_devices,
            "source": self.source,
            "routing": {"kind": self.kind, **self.routing.params()},
            "links": [{"name": lk.name, "alpha": lk.alpha, "bandwidth": lk.bandwidth} for lk in self.links],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Topology:
        """Build a topology from `to_dict` output (e.g. a calibration file), checking every field."""
        if not isinstance(d, Mapping):
            raise TopologyError(f"a topology must be a JSON object; got {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT or d.get("version", VERSION) != VERSION:
            got = f"format {d.get('format')!r} version {d.get('version')!r}"
            raise TopologyError(f"{got}; valid: format {FORMAT!r} version {VERSION}")
        missing = [k for k in ("name", "num_devices", "routing", "links") if k not in d]
        if missing:
            raise TopologyError(f"topology is missing {', '.join(map(repr, missing))}")
        r = d["routing"]
        params = {k: v for k, v in r.items() if k != "kind"} if isinstance(r, Mapping) else None
        kind = r.get("kind") if isinstance(r, Mapping) else r
        if kind not in ROUTINGS:
            raise TopologyError(f"unknown routing kind {kind!r}; valid: {', '.join(ROUTINGS)}")
        try:
            routing = ROUTINGS[kind](**(params or {}))
            links = [Link(str(x["name"]), x["alpha"], x["bandwidth"]) for x in d["links"]]
        except TopologyError:
            raise
        except (TypeError, KeyError) as e:
            raise TopologyError(f"malformed {kind} topology: {e!r}") from e
        return cls(str(d["name"]), d["num_devices"], links, routing, str(d.get("source", "")))

    def save(self, path: str | Path) -> None:
        """Write the topology as JSON, for `load` and every tpsim command that takes a topology file."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        """Read a topology written by `save` (or by hand, or by calibration)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as e:
            raise TopologyError(f"{path}: not valid JSON ({e})") from e
        except TopologyError as e:
            raise TopologyError(f"{path}: {e}") from e

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topology) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Topology({self.name!r}, {self.num_devices} devices, {self.kind}, {len(self.links)} links)"

