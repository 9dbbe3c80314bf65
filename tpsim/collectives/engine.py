"""The engine: the one door through which bytes move between virtual devices.

It runs a `Schedule` step by step, in every group of a mesh dim at once, on a
store of shape (participants, chunks, max chunk length): participant g * p + r
is local rank r of group g.  Chunks shorter than the longest are padded; the
padding never leaves the engine and is never counted.

Each step: every transfer reads, then every transfer writes (copy or reduce,
several reductions into one chunk in ascending rank order with the receiver's
own value at its rank), then the step is timed on the topology and written to
the trace.  With no store (shape-only) only the bytes and the time are
computed, which is what makes a 1024-device ring cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COPY, REDUCE, Schedule, Transfer, trace_contributions
from tpsim.collectives.step_arrays import StepArrays, prepare
from tpsim.device import allocate_all, free_all
from tpsim.trace import CollectiveRecord, StepRecord

UFUNCS = {"sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply}
BIG_CHUNK_BYTES = 1 << 20  # above this, transfers run in place one by one instead of by fancy indexing


@dataclass
class Snapshot:
    """The state after one step (step 0 is the state before the first step)."""

    step: int
    transfers: list[Transfer]  # this step's transfers, with global device ids
    holds: dict[int, list[frozenset | None]]  # device -> per chunk: devices whose data it contains
    buffers: dict[int, list[np.ndarray]] | None  # device -> its chunks now (copies); None when shape-only
    time: float  # simulated time at the end of this step
    wire_bytes: int  # bytes on links so far in this collective


class Run:
    """One execution of a schedule on a mesh; iterate to step through it."""

    def __init__(
        self,
        mesh,
        schedule: Schedule,
        groups: Sequence[Sequence[int]],
        sizes: Sequence[Sequence[int]],  # (p, k) chunk lengths in elements, per local rank
        dtype: np.dtype,
        store: np.ndarray | None = None,  # (G * p, k, max chunk) or None for shape-only
        *,
        op: str = "sum",
        accum_dtype: np.dtype | None = None,
        nbytes: int = 0,
        mesh_dim: str | None = None,
        label: str | None = None,
        direction: str | None = None,
        snapshots: bool = False,
        wire_sizes: Sequence[Sequence[int]] | None = None,  # (p, k) as sent, padded; default: sizes
    ):
        self.mesh, self.schedule, self.store = mesh, schedule, store
        self.gmap = np.asarray(groups, dtype=np.int64).reshape(len(groups), schedule.world_size)
        shape = (schedule.world_size, schedule.num_chunks)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(shape)
        wire = self.sizes if wire_sizes is None else np.asarray(wire_sizes, dtype=np.int64).reshape(shape)
        self.wire_sizes = wire
        self.dtype, self.itemsize = np.dtype(dtype), np.dtype(dtype).itemsize
        self.ordered = op in ("max", "min")  # the only ops whose operand order shows in the bits
        self.ufunc, self.accum = UFUNCS[op], (np.dtype(accum_dtype) if accum_dtype is not None else None)
        self.snapshots = snapshots
        self._links_memo: dict = {}
        self.identity = len(groups) == 1 and (self.gmap[0] == np.arange(schedule.world_size)).all()
        devices = self.gmap.ravel().tolist()
        self.start = max(mesh.clock[d] for d in devices)
        self.record = CollectiveRecord(
            index=len(mesh.trace.collectives),
            collective=schedule.collective,
            algorithm=schedule.algorithm,
            op=op
            if schedule.collective in (Collective.ALL_REDUCE, Collective.REDUCE, Collective.REDUCE_SCATTER)
            else None,
            group_size=schedule.world_size,
            num_groups=len(groups),
            mesh_dim=mesh_dim,
            nbytes=int(nbytes),
            dtype=str(self.dtype),
            start=self.start,
            end=self.start,
            label=label,
            direction=direction,
            devices=tuple(devices),
        )
        # the working buffer of each device, for the duration of the collective
        self.scratch = {
            d: int(self.wire_sizes.sum(axis=1)[r]) * self.itemsize
            for d, r in zip(devices, np.tile(np.arange(schedule.world_size), len(groups)), strict=False)
        }

    def __iter__(self) -> Iterator[Snapshot]:
        mesh, schedule, record = self.mesh, self.schedule, self.record
        allocate_all(mesh.devices, self.scratch, "comm")
        record.index = len(mesh.trace.collectives)  # taken now: runs may be built before any of them runs
        mesh.trace.add_collective(record)
        try:
            atoms = trace_contributions(schedule) if self.snapshots else None
            if self.snapshots:
                yield self._snapshot(0, None, atoms, record.end, 0)
            for index, arrays in enumerate(prepare(schedule)):
                if self.store is not None:
                    self._move(arrays)
                record.end, step_bytes = self._time_and_record(index, arrays, record.end)
                record.num_steps, record.wire_bytes = index + 1, record.wire_bytes + step_bytes
                if self.snapshots:
                    yield self._snapshot(index + 1, arrays, atoms, record.end, record.wire_bytes)
        finally:  # also when a stepwise run is abandoned: the record, clocks and memory stay consistent
            for d in record.devices:
                mesh.clock[d] = record.end
            free_all(mesh.devices, self.scratch, "comm")

    def run(self) -> np.ndarray | None:
        for _ in self:
            pass
        return self.store

    def _move(self, a: StepArrays) -> None:
        p, store = self.schedule.world_size, self.store
        assert store is not None  # _move runs only on data runs; shape-only runs count bytes alone
        base = (np.arange(len(self.gmap), dtype=np.int64) * p)[:, None]
        ps = (base + a.src[a.pair_t]).ravel()  # (G * P,) participant read
        pd = (base + a.dst[a.pair_t]).ravel()  # (G * P,) participant written
        G = len(self.gmap)
        c, dc, red = np.tile(a.pair_c, G), np.tile(a.pair_dc, G), np.tile(a.pair_reduce, G)
        # the incoming value goes first where its rank is lower (the rank-order rule); only max and min
        # can tell, through signed zeros and NaN payloads: add and multiply are commutative bit for bit
        src_first = np.tile(a.src[a.pair_t] < a.dst[a.pair_t], G) & self.ordered
        if a.simple and store.shape[2] * self.itemsize >= BIG_CHUNK_BYTES:
            n = self.sizes[a.src[a.pair_t], a.pair_c]
            for i in range(len(ps)):
                m = n[i % len(n)]
                self._combine_into(store[pd[i], dc[i], :m], store[ps[i], c[i], :m], red[i], src_first[i])
            return
        vals = store[ps, c]  # (G * P, max chunk): every read happens before any write
        if a.simple:
            store[pd[~red], dc[~red]] = vals[~red]
            if red.any():
                own, incoming, first = store[pd[red], dc[red]], vals[red], src_first[red][:, None]
                lo, hi = np.where(first, incoming, own), np.where(first, own, incoming)
                store[pd[red], dc[red]] = self._combine(lo, hi)
            return
        self._move_in_rank_order(ps, pd, c, dc, red, vals)

    def _move_in_rank_order(self, ps, pd, c, dc, red, vals) -> None:
        """Several reductions into one chunk: combine in ascending rank, the receiver's own at its rank."""
        p, store = self.schedule.world_size, self.store
        assert store is not None
        before = {}
        for i in np.flatnonzero(~red):
            store[pd[i], dc[i]] = vals[i]
        targets: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for i in np.flatnonzero(red):
            key = (int(pd[i]), int(dc[i]))
            if key not in before:
                before[key] = store[key].copy()
            targets.setdefault(key, []).append((int(ps[i]) % p, vals[i]))
        for (d, chunk), incoming in targets.items():
            terms = sorted([(d % p, before[(d, chunk)]), *incoming], key=lambda t: t[0])
            acc_dtype = self.accum or self.dtype
            total = terms[0][1].astype(acc_dtype)
            for _, v in terms[1:]:
                total = self.ufunc(total, v.astype(acc_dtype))
            store[d, chunk] = total.astype(self.dtype)

    def _combine(self, out: np.ndarray, incoming: np.ndarray) -> np.ndarray:
        if self.accum is None:
            return self.ufunc(out, incoming)
        return self.ufunc(out.astype(self.accum), incoming.astype(self.accum)).astype(self.dtype)

    def _combine_into(self, out: np.ndarray, incoming: np.ndarray, reduce: bool, src_first: bool) -> None:
        if not reduce:
            np.copyto(out, incoming)
        elif self.accum is None:
            self.ufunc(*((incoming, out) if src_first else (out, incoming)), out=out)
        else:
            out[...] = self._combine(*((incoming, out) if src_first else (out, incoming)))

    def _time_and_record(self, index: int, a: StepArrays, start: float) -> tuple[float, int]:
        G = len(self.gmap)
        if a.wire_chunk is not None:
            nbytes = self.wire_sizes[a.src[a.wire], a.wire_chunk] * self.itemsize
        else:
            pair_bytes = self.wire_sizes[a.src[a.pair_t], a.pair_c] * self.itemsize
            nbytes = np.bincount(a.pair_t, weights=pair_bytes, minlength=len(a.src)).astype(np.int64)[a.wire]
        if self.identity:
            src, dst = a.src[a.wire], a.dst[a.wire]
        else:
            src, dst = self.gmap[:, a.src[a.wire]].ravel(), self.gmap[:, a.dst[a.wire]].ravel()
            nbytes = np.tile(nbytes, G)
        if len(src):
            used, load, link, duration = self._link_model(a, src, dst, nbytes)
            end = start + duration
            step_end = float(end.max())
        else:
            used, load = np.zeros(0, np.int64), np.zeros(0)
            link, end, step_end = np.zeros(0, np.int64), np.zeros(0), start
        columns = {  # scalars stand for a whole column; the trace expands them when read
            "collective": self.record.index,
            "step": index,
            "src": src,
            "dst": dst,
            "nbytes": nbytes,
            "link": link,
            "start": start,
            "end": end,
        }
        total = int(nbytes.sum())
        self.mesh.trace.add_step(
            StepRecord(self.record.index, index, start, step_end, total, len(src)), columns, used, load
        )
        return step_end, total

    def _link_model(self, a: StepArrays, src, dst, nbytes):
        """Links used, bytes on each, each transfer's bottleneck link and duration.

        Memoised per (transfers, sizes): the steps of a ring share one src/dst pair of
        arrays and equal chunk sizes, so a 2046-step ring is routed once.
        """
        key = (id(a.src), id(a.dst), nbytes.tobytes())
        hit = self._links_memo.get(key)
        if hit is not None:
            return hit
        topo = self.mesh.topology
        ti, li, latency = topo.route(src, dst)
        if len(topo.links) <= 4 * len(li):
            used, where = np.arange(len(topo.links)), li
        else:  # many links (e.g. one per pair): count only the ones this step touches
            used, where = np.unique(li, return_inverse=True)
        load = np.bincount(where, weights=nbytes[ti], minlength=len(used))
        busy = load[where] / topo.bandwidths[li]
        starts = np.flatnonzero(np.r_[True, ti[1:] != ti[:-1]])  # route groups pairs by transfer
        serial = np.maximum.reduceat(busy, starts)
        first_max = np.flatnonzero(busy >= serial[ti])
        keep = np.r_[True, ti[first_max][1:] != ti[first_max][:-1]]
        link = li[first_max[keep]]  # each transfer's bottleneck link
        out = (used, load, link, latency + serial)
        self._links_memo[key] = out
        return out

    def _snapshot(self, index: int, a: StepArrays | None, atoms, now: float, wire: int) -> Snapshot:
        p, k = self.schedule.world_size, self.schedule.num_chunks
        state = atoms[index]
        holds: dict[int, list] = {}
        buffers: dict[int, list[np.ndarray]] | None = {} if self.store is not None else None
        transfers: list = []
        for g, devs in enumerate(self.gmap.tolist()):
            for r, d in enumerate(devs):
                holds[d] = [None if s is None else frozenset(devs[q] for q, _ in s) for s in state[r]]
                if buffers is not None and self.store is not None:
                    buffers[d] = [self.store[g * p + r, c, : self.sizes[r, c]].copy() for c in range(k)]
            if a is not None:
                step = self.schedule.steps[index - 1]
                transfers += [t._replace(src=devs[t.src], dst=devs[t.dst]) for t in step]
        return Snapshot(index, transfers, holds, buffers, now, wire)


__all__ = ["COPY", "REDUCE", "Run", "Snapshot"]
