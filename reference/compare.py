"""How two results are compared: bits, absolute and relative error, ULPs, assert_close; and collectives.

`Tap` wraps a rank's Comm and keeps every collective's operand and result, so that the parent can
replay each one in tpsim's engine on the very same operands (`replay`): in schedule mode the two
must agree bit for bit and move the same bytes, whatever the floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import torch

from reference.module import to_numpy, to_torch
from tpsim import Mesh, Partial, Replicate, Shard, from_local
from tpsim.collectives import all_reduce


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def eps(dtype) -> float:
    """The gap between 1 and the next float of dtype (bfloat16 through ml_dtypes)."""
    return float(ml_dtypes.finfo(dtype).eps)


def scale_ulps(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| in ULPs of the tensor's scale, the spacing of floats at max |expected|.

    Per-element ULPs mean little next to zero (a sum that should be 0 lands on +-1e-12: 10^9 ULPs apart),
    so the error is measured against the size of the numbers the tensor holds, as a normwise error.
    """
    if actual.size == 0:
        return 0.0
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore"):
        err = np.where((a == e) | (np.isnan(a) & np.isnan(e)), 0.0, np.abs(a - e))
    if not err.any():
        return 0.0
    finite = np.abs(e[np.isfinite(e)])
    scale = float(finite.max(initial=0.0)) or float(ml_dtypes.finfo(expected.dtype).tiny)
    spacing = eps(expected.dtype) * 2.0 ** np.floor(np.log2(scale))  # one ULP at the scale
    return float(err.max() / spacing)


@dataclass
class Diff:
    bitwise: bool
    max_abs: float
    max_rel: float
    ulps: float  # of the tensor's scale: see scale_ulps
    close: bool  # torch.testing.assert_close with the dtype's default tolerances

    def worst(self, other: Diff) -> Diff:
        return Diff(self.bitwise and other.bitwise, max(self.max_abs, other.max_abs),
                    max(self.max_rel, other.max_rel), max(self.ulps, other.ulps), self.close and other.close)


NO_DIFF = Diff(True, 0.0, 0.0, 0.0, True)


def diff(actual: np.ndarray, expected: np.ndarray) -> Diff:
    """actual (the reference) against expected (tpsim), element by element."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return Diff(False, float("inf"), float("inf"), float("inf"), False)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e))
        err = np.where(a == e, 0.0, err)  # inf == inf
        rel = np.where(e != 0, err / np.abs(e), np.where(err == 0, 0.0, np.inf))
    try:
        torch.testing.assert_close(to_torch(actual), to_torch(expected), equal_nan=True)
        close = True
    except AssertionError:
        close = False
    return Diff(same_bits(actual, expected), float(err.max(initial=0.0)), float(rel.max(initial=0.0)),
                scale_ulps(actual, expected), close)


class Tap:
    """A Comm that also keeps each collective's operand and result (on the host) for a replay."""

    def __init__(self, comm):
        self.comm, self.calls = comm, []
        self.rank, self.size = comm.rank, comm.size

    def _call(self, collective: str, x: torch.Tensor, **kw) -> torch.Tensor:
        before = self.comm.bytes_sent
        out = getattr(self.comm, collective)(x, **kw)
        self.calls.append(dict(op=collective, kw=kw, x=to_numpy(x), out=to_numpy(out),
                               bytes_sent=self.comm.bytes_sent - before))
        return out

    def all_reduce(self, x, op: str = "sum"):
        return self._call("all_reduce", x, op=op)

    def all_gather(self, x, dim: int = 0, sizes=None):
        return self._call("all_gather", x, dim=dim, sizes=sizes)

    def reduce_scatter(self, x, dim: int = 0, op: str = "sum"):
        return self._call("reduce_scatter", x, dim=dim, op=op)


@dataclass
class Replay:
    calls: int
    bitwise: bool  # every collective: the reference's result == tpsim's on the same operands, every rank
    max_ulps: float
    bytes_equal: bool  # every collective: bytes sent, summed over ranks == tpsim's wire bytes
    ref_bytes: int
    tpsim_bytes: int


def replay(per_rank_calls: list[list[dict]], algorithm: str | None = None) -> Replay:
    """Run every collective the ranks issued through tpsim's engine on the same operands, and compare."""
    n = len(per_rank_calls)
    counts = {len(c) for c in per_rank_calls}
    if len(counts) != 1:
        raise AssertionError(f"ranks issued different numbers of collectives: {sorted(counts)}")
    bitwise, worst, bytes_equal, ref_total, sim_total = True, 0.0, True, 0, 0
    for k in range(counts.pop()):
        calls = [per_rank_calls[r][k] for r in range(n)]
        mesh = Mesh(n)
        xs = [c["x"] for c in calls]
        op, kw = calls[0]["op"], calls[0]["kw"]
        if op == "all_reduce" and kw.get("group_size"):  # over consecutive groups of ranks (GQA's KV grads)
            r = kw["group_size"]
            groups = [tuple(range(i, i + r)) for i in range(0, n, r)]
            outs = all_reduce(xs, mesh, op=kw["op"], algorithm=algorithm, groups=groups)
            got = SimpleNamespace(shards=outs)
        elif op == "all_reduce":
            got = from_local(xs, mesh, [Partial(kw["op"])]).redistribute([Replicate()], algorithm=algorithm)
        elif op == "all_gather":
            got = from_local(xs, mesh, [Shard(kw["dim"])]).redistribute([Replicate()], algorithm=algorithm)
        else:
            got = from_local(xs, mesh, [Partial(kw["op"])], shape=xs[0].shape).redistribute(
                [Shard(kw["dim"])], algorithm=algorithm)
        for r, c in enumerate(calls):
            bitwise &= same_bits(c["out"], got.shards[r])
            same_shape = c["out"].shape == got.shards[r].shape
            worst = max(worst, scale_ulps(c["out"], got.shards[r]) if same_shape else float("inf"))
        ref_bytes = sum(c["bytes_sent"] for c in calls)
        sim_bytes = mesh.trace.wire_bytes
        bytes_equal &= ref_bytes == sim_bytes
        ref_total, sim_total = ref_total + ref_bytes, sim_total + sim_bytes
    return Replay(len(per_rank_calls[0]), bitwise, worst, bytes_equal, ref_total, sim_total)
