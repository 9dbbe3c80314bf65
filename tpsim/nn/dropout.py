"""Dropout with Megatron's RNG streams: masks agree where replicas must, and differ where they must not.

`RNGTracker(seed)` holds named streams.  A stream gives each device its own seed:

    "default"         seed                     the same on every device, TP and DP
    "model-parallel"  seed + 2718 + tp_rank    differs across TP ranks, the same across DP replicas

as Megatron's `model_parallel_cuda_manual_seed(seed)` sets them: the CUDA default
generator gets `seed`, the tracker's "model-parallel-rng" stream gets seed + 2718 + tp_rank.

Which stream Megatron draws from:
- Attention-probability dropout, inside the TP region (each rank holds its own heads):
  "model-parallel", under `get_cuda_rng_tracker().fork()`, so different heads get
  independent masks.
- Hidden dropout before the residual add, on an activation that is R on TP: "default",
  so every TP rank drops the same elements and the replicas stay equal.
- With sequence parallelism that activation is S(seq) on TP.  Megatron's TransformerBlock
  then runs the whole layer stack inside `fork()`: every dropout draws from
  "model-parallel" (attention's dropout skips its own fork then), so the t sequence
  shards get independent masks instead of one pattern repeated t times.
`hidden_stream(sequence_parallel)` names the stream of the hidden dropout, and
`tracker.fork()` switches a Dropout built with `stream=None` the way Megatron's fork does.

Draw k (counted per stream, as each CUDA generator advances on its own) of a stream on
a device uses `np.random.default_rng(SeedSequence(device_seed, spawn_key=(k,)))`, so a
mask depends only on (stream, device seed, k): the same seed gives the same masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from tpsim.darray import DArray, from_local
from tpsim.errors import ArgumentError, PlacementError
from tpsim.meta import MetaArray, is_meta
from tpsim.nn import ops
from tpsim.nn.module import Module
from tpsim.placement import Partial, Shard

DEFAULT, MODEL_PARALLEL = "default", "model-parallel"
MODEL_PARALLEL_OFFSET = 2718  # Megatron's: "2718 is just for fun and any POSITIVE value will work"


def hidden_stream(sequence_parallel: bool) -> str:
    """The stream Megatron's hidden (post-attention, post-MLP) dropout draws from."""
    return MODEL_PARALLEL if sequence_parallel else DEFAULT


class RNGTracker:
    """Named random streams, each with a seed per device and a draw counter."""

    def __init__(self, seed: int = 0):
        if not isinstance(seed, int) or seed < 0:
            raise ArgumentError(f"RNGTracker seed must be an int >= 0, got {seed!r}")
        self.seed = seed
        self.streams: dict[str, tuple[int, bool]] = {}  # name -> (base seed, + tp_rank?)
        self.draws: dict[str, int] = {}
        self.current = DEFAULT
        self.add(DEFAULT, seed, per_tp_rank=False)
        self.add(MODEL_PARALLEL, seed + MODEL_PARALLEL_OFFSET, per_tp_rank=True)

    def add(self, name: str, seed: int, *, per_tp_rank: bool = True) -> None:
        """A new stream; like Megatron's tracker.add, a name or seed already taken is refused."""
        if name in self.streams or any(s == seed for s, _ in self.streams.values()):
            raise ArgumentError(f"stream {name!r} (seed {seed}) clashes with {self.streams}")
        self.streams[name] = (seed, per_tp_rank)
        self.draws[name] = 0

    def device_seed(self, stream: str, mesh, device: int, tp: int) -> int:
        """The seed `stream` has on `device`; `tp` is the tensor-parallel mesh dim."""
        base, per_tp_rank = self._stream(stream)
        return base + (mesh.group_rank(device, tp) if per_tp_rank else 0)

    @contextlib.contextmanager
    def fork(self, stream: str = MODEL_PARALLEL) -> Iterator[None]:
        """Inside, Dropouts built with stream=None draw from `stream` (Megatron's tracker.fork())."""
        self._stream(stream)
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before

    def masks(self, stream: str | None, mesh, tp: int, shards: list, p: float) -> list:
        """One keep-mask (bool, True = keep, P = 1 - p) per device, shaped like its shard."""
        stream = self.current if stream is None else stream
        self._stream(stream)
        k = self.draws[stream]
        self.draws[stream] += 1
        out = []
        for d, s in enumerate(shards):
            if is_meta(s):  # a random draw is data: a shape-only run draws none
                out.append(MetaArray(s.shape, np.bool_))
                continue
            seq = np.random.SeedSequence(self.device_seed(stream, mesh, d, tp), spawn_key=(k,))
            out.append(np.random.default_rng(seq).random(s.shape) >= p)
        return out

    def _stream(self, name: str) -> tuple[int, bool]:
        if name not in self.streams:
            raise ArgumentError(f"unknown RNG stream {name!r}; this tracker has {list(self.streams)}")
        return self.streams[name]


class Dropout(Module):
    """y = x * mask / (1 - p), mask drawn per device from a stream of `tracker`.

    No weight.  No collective forward or backward: each device masks its own shard,
    and whether the masks agree across ranks is the stream's business (module docstring).
    The mask is saved for backward (bool, 1 byte per element, counted as "activations"
    as Korthikanti et al. count it), and dx = dy * mask / (1 - p).  With p = 0 or
    `training = False` it is the identity and saves nothing.  `stream=None` draws from
    the tracker's current stream ("default", or the one `tracker.fork()` chose).
    """

    def __init__(
        self,
        mesh,
        p: float,
        *,
        tracker: RNGTracker,
        stream: str | None = DEFAULT,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        if not 0.0 <= p < 1.0:
            raise ArgumentError(f"{self.name}: dropout probability p = {p!r}; valid: 0 <= p < 1")
        if stream is not None:
            tracker._stream(stream)
        self.p, self.tracker, self.stream = p, tracker, stream

    def forward(self, x: DArray) -> DArray:
        if not self.training or self.p == 0:
            self.save(mask=None)
            return x
        for i, pl in enumerate(x.placements):
            if isinstance(pl, Partial):
                raise PlacementError(
                    f"{self.name}: x is {pl} on mesh dim {self.mesh.names[i]}; dropout needs the values, "
                    "not partial sums: reduce first"
                )
        masks = self.tracker.masks(self.stream, self.mesh, self.tp, x.shards, self.p)
        for d, m in enumerate(masks):
            self.mesh.compute(d, "dropout_mask", m.size, m.nbytes, x.dtype)  # bool has no peak
        mask = from_local(masks, self.mesh, x.placements, shape=x.shape, run_check=False)
        self.save(mask=mask)
        return self.local("dropout", lambda a, m: _apply(a, m, self.p), x, mask, placements=x.placements)

    def backward(self, dy: DArray) -> DArray:
        (mask,) = self.saved("mask")
        if mask is None:
            return dy
        if dy.shape != mask.shape or _norm(dy) != _norm(mask):
            raise PlacementError(
                f"{self.name} backward: dy {dy.shape} {list(dy.placements)} must match the forward's "
                f"{mask.shape} {list(mask.placements)}"
            )
        return self.local(
            "dropout_backward", lambda g, m: _apply(g, m, self.p), dy, mask, placements=dy.placements
        )


def _norm(x: DArray) -> list:
    return [Shard(p.dim % x.ndim) if isinstance(p, Shard) else p for p in x.placements]


def _apply(x, mask, p: float):
    """x * (mask / (1 - p)), the scaled mask rounded to x's dtype first, as torch's dropout computes it
    (a computes in float32 under ops.elementwise: x.dtype, not a.dtype, is the dtype to round to)."""
    return ops.elementwise(
        lambda a, m: a * (m.astype(x.dtype) / np.asarray(1 - p, x.dtype)).astype(a.dtype), x, mask,
        flops_per_element=2,
    )
