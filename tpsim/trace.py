"""The ledger: every collective, step, transfer and compute op that ran on a mesh.

Transfers are stored by column (one NumPy array per field per step) so that a
ring over 1024 devices, two million transfers, costs little to record.  The
summaries follow nccl-tests: algbw = S / time and busbw = algbw x a factor that
makes it comparable across collectives (2(p-1)/p for all-reduce, (p-1)/p for
all-gather and reduce-scatter, ...), S being the buffer size nccl-tests reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tpsim import trace_events
from tpsim.efficiency import Gemm

FIELDS = ("collective", "step", "src", "dst", "nbytes", "link", "start", "end")


@dataclass
class CollectiveRecord:
    index: int
    collective: str
    algorithm: str
    op: str | None
    group_size: int
    num_groups: int
    mesh_dim: str | None
    nbytes: int  # S per rank, as nccl-tests reports its size
    dtype: str
    start: float
    end: float
    num_steps: int = 0
    wire_bytes: int = 0  # every byte that crossed a link, all groups together
    label: str | None = None  # the module that issued it
    direction: str | None = None  # "forward" / "backward"
    devices: tuple[int, ...] = ()  # every device that took part

    @property
    def time(self) -> float:
        return self.end - self.start

    @property
    def algbw(self) -> float:
        return self.nbytes / self.time if self.time > 0 else float("inf") if self.nbytes else 0.0

    @property
    def busbw(self) -> float:
        from tpsim.collectives.costs import bus_bandwidth_factor  # lazy: collectives import the trace

        factor = bus_bandwidth_factor(self.collective, self.group_size)
        return self.algbw * factor if factor else 0.0  # one rank moves nothing


@dataclass
class StepRecord:
    collective: int
    index: int
    start: float
    end: float
    wire_bytes: int
    num_transfers: int


@dataclass
class ComputeRecord:
    device: int
    name: str
    flops: float
    nbytes: float
    start: float
    end: float
    label: str | None = None
    direction: str | None = None
    gemm: Gemm | None = None  # a matmul's (m, n, k, batch); None: priced as a memory-bound op
    mode: str = "peak"  # the efficiency mode that priced it (tpsim/efficiency.py)


class Trace:
    """Everything that ran on one mesh, in order."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.clear()

    def clear(self) -> None:
        self.collectives: list[CollectiveRecord] = []
        self.steps: list[StepRecord] = []
        self.compute: list[ComputeRecord] = []
        self._columns: list[dict[str, np.ndarray]] = []
        self._link_ids: list[np.ndarray] = []  # per step: the links it used ...
        self._link_loads: list[np.ndarray] = []  # ... and the bytes it put on each
        self._cache: dict[str, np.ndarray] | None = None

    def add_collective(self, record: CollectiveRecord) -> None:
        self.collectives.append(record)

    def add_step(
        self, record: StepRecord, columns: dict[str, np.ndarray], links: np.ndarray, loads: np.ndarray
    ) -> None:
        self.steps.append(record)
        if len(columns["src"]):
            self._columns.append(columns)
            self._link_ids.append(links)
            self._link_loads.append(loads)
        self._cache = None

    def add_compute(self, record: ComputeRecord) -> None:
        self.compute.append(record)

    def transfers(self) -> dict[str, np.ndarray]:
        """Every transfer that crossed a link, by column (collective, step, src, dst, nbytes, link, ...)."""
        if self._cache is None:
            if self._columns:
                lengths = [len(c["src"]) for c in self._columns]
                self._cache = {f: _field(self._columns, f, lengths) for f in FIELDS}
            else:
                self._cache = {
                    f: np.zeros(0, dtype=np.float64 if f in ("start", "end") else np.int64) for f in FIELDS
                }
        return self._cache

    @property
    def wire_bytes(self) -> int:
        return int(self.transfers()["nbytes"].sum())

    def per_device(self) -> list[dict]:
        """Bytes each device sent and received over links."""
        t, n = self.transfers(), self.mesh.size
        sent = np.bincount(t["src"], weights=t["nbytes"], minlength=n)
        recv = np.bincount(t["dst"], weights=t["nbytes"], minlength=n)
        return [{"device": d, "sent": int(sent[d]), "received": int(recv[d])} for d in range(n)]

    def per_link(self) -> list[dict]:
        """Bytes each link carried and how long that kept it busy."""
        links = self.mesh.topology.links
        if not self._link_ids:
            return []
        totals = np.bincount(
            np.concatenate(self._link_ids), weights=np.concatenate(self._link_loads), minlength=len(links)
        )
        return [
            {"link": links[i].name, "bytes": int(totals[i]), "busy": totals[i] / links[i].bandwidth}
            for i in np.flatnonzero(totals)
        ]

    def per_step(self) -> list[dict]:
        return [asdict(s) for s in self.steps]

    def per_collective(self) -> list[dict]:
        return [{**asdict(c), "time": c.time, "algbw": c.algbw, "busbw": c.busbw} for c in self.collectives]

    def traffic_matrix(self) -> np.ndarray:
        """(devices, devices) bytes sent from src (row) to dst (column)."""
        t, n = self.transfers(), self.mesh.size
        return np.bincount(t["src"] * n + t["dst"], weights=t["nbytes"], minlength=n * n).reshape(n, n)

    def summary(self, max_rows: int = 16) -> str:
        """A plain-text report: collectives, then devices, then the busiest links."""
        from tpsim.report import summary_text

        return summary_text(self, max_rows)

    def to_chrome_trace(self, path: str | None = None) -> dict:
        """Chrome trace JSON (opens in Perfetto or chrome://tracing): one process per device.

        The events are tpsim.trace_events', which the reference writes too (`reference.check --trace`)."""
        events = trace_events.tracks(range(self.mesh.size))
        for c in self.collectives:
            for d in c.devices:
                events.append(
                    trace_events.collective(
                        c.collective, c.algorithm, d, c.start, c.end, c.nbytes, c.label, c.direction
                    )
                )
        t = self.transfers()
        names = [link.name for link in self.mesh.topology.links]
        for i in range(len(t["src"])):
            coll = self.collectives[int(t["collective"][i])].collective
            events.append(
                trace_events.send(
                    coll,
                    int(t["step"][i]),
                    int(t["src"][i]),
                    int(t["dst"][i]),
                    float(t["start"][i]),
                    float(t["end"][i]),
                    int(t["nbytes"][i]),
                    names[int(t["link"][i])],
                )
            )
        for op in self.compute:
            events.append(
                trace_events.compute(
                    op.name, op.device, op.start, op.end, op.flops, op.nbytes, op.label, _priced(op)
                )
            )
        doc = trace_events.document(events)
        if path is not None:
            trace_events.write(doc, path)
        return doc


def _priced(op: ComputeRecord) -> dict:
    """How a compute op's time was modelled, for the Chrome trace: the mode and a GEMM's shape."""
    if op.gemm is None:
        return {"mode": op.mode, "kind": "memory-bound"}
    g = op.gemm
    return {"mode": op.mode, "kind": "gemm", "gemm": f"batch {g.batch} x ({g.m}, {g.k}) @ ({g.k}, {g.n})"}


def _field(columns: list[dict], field: str, lengths: list[int]) -> np.ndarray:
    """One field of every step, joined; steps that store a scalar for the whole column are repeated."""
    values = [c[field] for c in columns]
    if all(np.ndim(v) == 0 for v in values):
        dtype = np.float64 if field in ("start", "end") else np.int64
        return np.repeat(np.array(values, dtype=dtype), lengths)
    return np.concatenate([_column(c, field) for c in columns])


def _column(columns: dict, field: str) -> np.ndarray:
    value = columns[field]
    if np.ndim(value):
        return value
    return np.full(len(columns["src"]), value, dtype=np.float64 if field in ("start", "end") else np.int64)
