"""Dropout with Megatron's RNG streams, on one rank: the mirror of tpsim/nn/dropout.py.

    "default"         seed                     the same on every TP rank
    "model-parallel"  seed + 2718 + tp_rank    differs across TP ranks

Draw k of a stream on this rank is `np.random.default_rng(SeedSequence(rank_seed, spawn_key=(k,)))`,
exactly tpsim's, so both engines drop the same elements.  (torch's own generators would draw other
masks; the masks are inputs of the comparison, not what it tests.)  The mask is drawn on the host
and moved to the layer's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from reference.module import Module
from tpsim.errors import ArgumentError
from tpsim.nn.dropout import DEFAULT, MODEL_PARALLEL, MODEL_PARALLEL_OFFSET


class RNGTracker:
    """Named streams, each with this rank's seed and a draw counter (tpsim's RNGTracker, one rank)."""

    def __init__(self, seed: int = 0, tp_rank: int = 0):
        if not isinstance(seed, int) or seed < 0:
            raise ArgumentError(f"RNGTracker seed must be an int >= 0, got {seed!r}")
        self.seed, self.tp_rank = seed, tp_rank
        self.streams = {DEFAULT: seed, MODEL_PARALLEL: seed + MODEL_PARALLEL_OFFSET + tp_rank}
        self.draws = dict.fromkeys(self.streams, 0)
        self.current = DEFAULT

    @contextlib.contextmanager
    def fork(self, stream: str = MODEL_PARALLEL) -> Iterator[None]:
        self._check(stream)
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before

    def mask(self, stream: str | None, shape, p: float) -> np.ndarray:
        """This rank's keep-mask (True = keep) for the next draw of `stream`."""
        stream = self.current if stream is None else stream
        self._check(stream)
        k = self.draws[stream]
        self.draws[stream] += 1
        seq = np.random.SeedSequence(self.streams[stream], spawn_key=(k,))
        return np.random.default_rng(seq).random(tuple(shape)) >= p

    def _check(self, stream: str) -> None:
        if stream not in self.streams:
            raise ArgumentError(f"unknown RNG stream {stream!r}; this tracker has {list(self.streams)}")


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, dy):
        (scale,) = ctx.saved_tensors
        return dy * scale, None


class Dropout(Module):
    """y = x * (mask / (1 - p)); dx = dy * (mask / (1 - p)).  No collective forward or backward."""

    def __init__(self, comm, p: float, *, tracker: RNGTracker, stream: str | None = DEFAULT,
                 name: str | None = None, device=None):
        super().__init__(comm, name, device)
        if not 0.0 <= p < 1.0:
            raise ArgumentError(f"{self.name}: dropout probability p = {p!r}; valid: 0 <= p < 1")
        if stream is not None:
            tracker._check(stream)
        self.p, self.tracker, self.stream = p, tracker, stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.from_numpy(self.tracker.mask(self.stream, x.shape, self.p)).to(x.device)
        scale = keep.to(x.dtype) / torch.tensor(1 - self.p, dtype=x.dtype, device=x.device)  # as tpsim
        return _Dropout.apply(x, scale)
