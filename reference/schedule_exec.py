"""Runs a tpsim `Schedule` over isend/irecv: one rank's side of "an algorithm is a schedule".

The buffer model is tpsim's (tpsim/collectives/layout.py): this rank's working buffer is one flat
tensor cut into the schedule's chunks by `layout.chunk_table`; chunk c is a view, so writes land in
the buffer. Each step, exactly as tpsim's engine:

    1. every transfer reads its source before any transfer writes: sends are posted from the chunks
       as they stand, receives land in fresh buffers, local transfers (src == dst) are cloned, and all
       of the step's isend/irecv complete before anything is written;
    2. copies overwrite; a reduce combines with the receiver's own value (own op incoming, or for max
       and min in ascending rank order); several reductions into one chunk in one step are combined
       in ascending rank order with the receiver's own value at its rank.

Sum and prod use torch (own + incoming, bit for bit what NumPy computes, in every float dtype). Max and
min use NumPy's own ufunc on a host copy: how np.maximum breaks a tie of 0.0 and -0.0 depends on the
dtype's kernel (and torch breaks it differently), so only the same ufunc gives the same bits.

Bytes are counted exactly: every isend and irecv, its payload, no padding (tpsim counts the same).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch
import torch.distributed as dist

from tpsim.collectives import layout
from tpsim.collectives.engine import UFUNCS
from tpsim.collectives.schedule import REDUCE, Schedule
from tpsim.placement import chunk_sizes


@dataclass(frozen=True)
class StepPlan:
    """One rank's share of a step: transfer indices are the tags both ends agree on."""

    sends: tuple[tuple[int, int, tuple[int, ...]], ...]  # (tag, dst, chunks)
    recvs: tuple[tuple[int, int, tuple[int, ...], bool], ...]  # (tag, src, dst chunks, reduce)
    local: tuple[tuple[tuple[int, ...], tuple[int, ...], bool], ...]  # (chunks, dst chunks, reduce)


_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rank_plan(schedule: Schedule, rank: int) -> list[StepPlan]:
    """The steps of `schedule` as `rank` sees them (cached per schedule and rank)."""
    per_rank = _plans.setdefault(schedule, {})
    if rank not in per_rank:
        plan = []
        for step in schedule.steps:
            sends, recvs, local = [], [], []
            for tag, t in enumerate(step):
                red = t.op == REDUCE
                if t.src == rank and t.dst == rank:
                    local.append((t.chunks, t.targets, red))
                elif t.src == rank:
                    sends.append((tag, t.dst, t.chunks))
                elif t.dst == rank:
                    recvs.append((tag, t.src, t.targets, red))
            plan.append(StepPlan(tuple(sends), tuple(recvs), tuple(local)))
        per_rank[rank] = plan
    return per_rank[rank]


class Wire:
    """isend/irecv within a group, staged through the CPU when the backend needs it; counts bytes."""

    def __init__(self, group, device: torch.device, staged: bool):
        self.group, self.device, self.staged = group, device, staged
        self.sent = self.received = 0
        self.step = 0  # the schedule step now running (set by `execute`)
        self.sends: list[tuple[int, int, int, float, float]] = []  # (step, group dst, bytes, start, end)

    def exchange(
        self, sends: list[tuple[int, int, torch.Tensor]], recvs: list[tuple[int, int, int, torch.dtype]]
    ):
        """Post every send (tag, peer, tensor) and receive (tag, peer, numel, dtype); wait for all;
        return the received tensors on this rank's device, in `recvs` order."""
        works, inbox, posted = [], [], []
        start = time.time()
        for tag, peer, t in sends:
            if t.numel():  # an empty chunk crosses nothing (both ends know its length)
                payload = t.to("cpu", copy=True) if self.staged else t.contiguous()
                works.append(dist.isend(payload, group=self.group, group_dst=peer, tag=tag))
                self.sent += t.numel() * t.element_size()
                posted.append((peer, t.numel() * t.element_size()))
        for tag, peer, numel, dtype in recvs:
            buf = torch.empty(numel, dtype=dtype, device="cpu" if self.staged else self.device)
            if numel:
                works.append(dist.irecv(buf, group=self.group, group_src=peer, tag=tag))
                self.received += numel * buf.element_size()
            inbox.append(buf)
        for w in works:
            w.wait()
        end = time.time()
        self.sends += [(self.step, peer, n, start, end) for peer, n in posted]
        return [b.to(self.device) if self.staged else b for b in inbox]


def execute(schedule: Schedule, chunks: list[torch.Tensor], rank: int, op: str, wire: Wire) -> None:
    """Run `schedule` in place on this rank's chunk views (1-d tensors, lengths from the chunk table)."""
    ordered = op in ("max", "min")
    for i, step in enumerate(rank_plan(schedule, rank)):
        wire.step = i
        sends = [(tag, dst, _joined(chunks, ids)) for tag, dst, ids in step.sends]
        recvs = [
            (tag, src, sum(len(chunks[c]) for c in ids), chunks[0].dtype) for tag, src, ids, _ in step.recvs
        ]
        local = [(_joined(chunks, ids).clone(), targets, red) for ids, targets, red in step.local]
        inbox = wire.exchange(sends, recvs)
        # (source rank, value, target chunks, reduce) for everything that lands on this rank
        landing = [(src, v, ids, red) for (_, src, ids, red), v in zip(step.recvs, inbox, strict=True)]
        landing += [(rank, v, ids, red) for v, ids, red in local]
        reductions: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for src, value, ids, red in landing:
            for c, piece in zip(ids, _split(value, [len(chunks[c]) for c in ids]), strict=True):
                if red:
                    reductions.setdefault(c, []).append((src, piece))
                else:
                    chunks[c].copy_(piece)
        for c, incoming in reductions.items():
            _reduce_into(chunks[c], rank, incoming, op, ordered)


def _reduce_into(own: torch.Tensor, rank: int, incoming: list, op: str, ordered: bool) -> None:
    if len(incoming) == 1 and not ordered:  # own op incoming, in place
        ((_, value),) = incoming
        own.add_(value) if op in ("sum", "avg") else own.mul_(value)
        return
    terms = sorted([(rank, own.clone()), *incoming], key=lambda t: t[0])  # ascending rank, own at its rank
    total = terms[0][1]
    for _, value in terms[1:]:
        total = _combine(op, total, value)
    own.copy_(total)


def _combine(op: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if op in ("sum", "avg"):
        return a + b
    if op == "prod":
        return a * b
    return _from_numpy(UFUNCS[op](_to_numpy(a), _to_numpy(b)), a.device)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _from_numpy(a: np.ndarray, device: torch.device) -> torch.Tensor:
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _joined(chunks: list[torch.Tensor], ids: tuple[int, ...]) -> torch.Tensor:
    return chunks[ids[0]] if len(ids) == 1 else torch.cat([chunks[c] for c in ids])


def _split(value: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    return [value] if len(lengths) == 1 else list(value.split(lengths))


def count_bytes(schedule: Schedule, table: list[list[int]], rank: int, itemsize: int) -> tuple[int, int]:
    """Bytes `rank` sends and receives when `schedule` runs on buffers cut by `table` (no data moved)."""
    sent = received = 0
    for step in rank_plan(schedule, rank):
        sent += sum(table[rank][c] for _, _, ids in step.sends for c in ids)
        received += sum(table[rank][c] for _, _, ids, _ in step.recvs for c in ids)
    return sent * itemsize, received * itemsize


def buffer(
    collective: str,
    schedule: Schedule,
    rank: int,
    rows: list[int],
    row_size: int,
    mine: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, list[torch.Tensor], list[list[int]]]:
    """This rank's working buffer, packed as tpsim packs it; returns (flat, chunk views, chunk table).

    `mine` is this rank's input, flat (None for non-roots of broadcast and scatter); `rows` every
    rank's dim-0 length (the cut dim moved to the front), `row_size` the elements of one row.
    """
    p = schedule.world_size
    table = layout.chunk_table(collective, p, schedule.num_chunks, rows, row_size)
    sizes = table[rank]
    flat = torch.zeros(sum(sizes), dtype=dtype, device=device)
    chunks = list(flat.split(sizes))
    if mine is None:
        return flat, chunks, table
    if collective in ("all_gather", "gather"):
        chunks[rank][: mine.numel()].copy_(mine)  # a padded chunk keeps zeros past the piece
    else:  # the whole input into the leading chunks (all_to_all: its p input chunks)
        flat[: mine.numel()].copy_(mine)
    return flat, chunks, table


def result(
    collective: str, flat: torch.Tensor, chunks: list, rank: int, root: int | None
) -> torch.Tensor | None:
    """The chunks that make up this rank's result, joined (as tpsim's unpack), or None off the root."""
    p = len(chunks) // 2 if collective == "all_to_all" else None
    if collective in ("reduce", "gather") and rank != root:
        return None
    if collective in ("reduce_scatter", "scatter"):
        return chunks[rank].clone()  # a copy: the rest of the buffer can go
    if collective == "all_to_all":
        return torch.cat(chunks[p:]) if p > 1 else chunks[p].clone()
    return flat  # all_reduce, reduce, broadcast, all_gather, gather: every chunk, in order


def unpad(
    collective: str,
    y: torch.Tensor,
    rows: list[int],
    sent_rows: list[int],
    row_size: int,
    rank: int,
    root: int | None,
) -> torch.Tensor:
    """The result without the padding that uneven pieces crossed the wire with (layout.wire_rows)."""
    if collective in ("all_gather", "gather"):  # p padded pieces, each cut back to its own rows
        step = sent_rows[0] * row_size
        return torch.cat([y[r * step : r * step + n * row_size] for r, n in enumerate(rows)])
    if collective in ("reduce_scatter", "scatter"):  # this rank's chunk, by the torch.chunk rule
        n = rows[root or 0]
        return y[: chunk_sizes(n, len(rows))[rank] * row_size].clone()
    return y
