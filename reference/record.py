"""The per-rank ledger of collectives, and its comparison with a tpsim trace.

Every collective a `Comm` issues appends one `CallRecord`. `compare_with_trace` checks a rank's
record against the `CollectiveRecord`s of a tpsim trace: the same collectives in the same order, with
the same op, group size, size S (nccl-tests' convention, as tpsim reports it) and dtype; and for
schedule mode also the same algorithm and the same bytes sent and received by that rank (native mode
only models its bytes, so they are not compared).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpsim.errors import RecordMismatch


@dataclass(frozen=True)
class CallRecord:
    seq: int  # this Comm's call number, from 0
    op: str  # the collective: all_reduce, all_gather, ...
    shape: tuple[int, ...]  # this rank's input shape (None input: the shape it received)
    dtype: str  # "float32", "bfloat16", ... (NumPy's names, as tpsim's trace writes them)
    group: tuple[int, ...]  # global ranks of the group
    mode: str  # "native" | "schedule"
    algorithm: str  # schedule mode: the schedule run; native: the algorithm whose bytes are modelled
    bytes_sent: int  # by this rank
    bytes_received: int
    nbytes: int = 0  # S as nccl-tests reports it (all_gather: the output; all_to_all: one rank's input)
    reduce_op: str | None = None  # sum, avg, max, min, prod for the reducing collectives
    root: int | None = None  # group rank of src/dst for rooted collectives
    rank: int = 0  # this rank (global)
    counted: str = "exact"  # "exact": every isend/irecv counted; "model": native, bytes of `algorithm`
    staged: bool = False  # went through the CPU (gloo with CUDA tensors)
    note: str = ""  # e.g. "uneven: padded to the longest piece"
    start: float = 0.0  # wall clock (time.time(), seconds) when this rank entered the call ...
    end: float = 0.0  # ... and left it
    direction: str | None = None  # "forward", or "backward" inside autograd's backward pass
    sends: tuple[tuple[int, int, int, float, float], ...] = ()  # schedule mode: (step, dst rank, bytes,
    # start, end) of every isend, dst a global rank
    label: str | None = None  # the reference module that issued it (reference/scope.py), as tpsim's


def dtype_name(dtype) -> str:
    """torch.float32 -> "float32", as np.dtype names it (tpsim's trace)."""
    return str(dtype).removeprefix("torch.")


def trace_bytes(trace, index: int, device: int) -> tuple[int, int]:
    """Bytes `device` sent and received in collective `index` of a tpsim trace."""
    t = trace.transfers()
    mine = t["collective"] == index
    sent = int(t["nbytes"][mine & (t["src"] == device)].sum())
    received = int(t["nbytes"][mine & (t["dst"] == device)].sum())
    return sent, received


def compare_with_trace(record: list[CallRecord], trace, rank: int | None = None) -> list[str]:
    """Differences between a rank's record and the collectives of tpsim `trace` that device `rank`
    (default: the record's rank) took part in; [] when they agree."""
    if rank is None:
        rank = record[0].rank if record else 0
    theirs = [c for c in trace.collectives if rank in c.devices]
    problems = []
    if len(record) != len(theirs):
        problems.append(
            f"rank {rank}: {len(record)} collectives recorded ({', '.join(r.op for r in record)}) but the "
            f"trace has {len(theirs)} ({', '.join(c.collective for c in theirs)})"
        )
    for mine, c in zip(record, theirs, strict=False):
        want = {
            "op": c.collective,
            "reduce_op": c.op,
            "group size": c.group_size,
            "nbytes": c.nbytes,
            "dtype": c.dtype,
        }
        have = {
            "op": mine.op,
            "reduce_op": mine.reduce_op,
            "group size": len(mine.group),
            "nbytes": mine.nbytes,
            "dtype": mine.dtype,
        }
        if mine.mode == "schedule":  # the same schedule moves the same bytes, exactly
            want["algorithm"], have["algorithm"] = c.algorithm, mine.algorithm
            want["bytes sent, received"] = trace_bytes(trace, c.index, rank)
            have["bytes sent, received"] = (mine.bytes_sent, mine.bytes_received)
        for key in want:
            if want[key] != have[key]:
                problems.append(
                    f"rank {rank} call #{mine.seq} ({mine.op}): {key} is {have[key]!r}, "
                    f"tpsim's trace #{c.index} has {want[key]!r}"
                )
    return problems


def check_against_trace(record: list[CallRecord], trace, rank: int | None = None) -> None:
    """Raise RecordMismatch listing every difference found by `compare_with_trace`."""
    problems = compare_with_trace(record, trace, rank)
    if problems:
        raise RecordMismatch("the reference's record differs from tpsim's trace:\n  " + "\n  ".join(problems))


def totals(record: list[CallRecord]) -> dict[str, int]:
    """Bytes sent and received over a whole record."""
    sent = np.sum([r.bytes_sent for r in record], dtype=np.int64)
    received = np.sum([r.bytes_received for r in record], dtype=np.int64)
    return {"calls": len(record), "bytes_sent": int(sent), "bytes_received": int(received)}
