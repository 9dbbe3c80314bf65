"""RoPE on a sequence shard, and the mutation whose positions restart at zero on every shard.

Under sequence or context parallelism each rank rotates its own rows of the sequence, and must rotate
them by their global positions: the shard's offset (the torch.chunk rule) plus the row.  tpsim's GQA
gathers the sequence before RoPE, so `SequenceRoPE` applies RoPE straight to the SP shard; the
mutation overrides its one `positions` method to count from zero on each rank.  Rank 0's rows are
right, every other rank's are rotated by the wrong angles: out and dx are wrong there.
"""

from __future__ import annotations

import numpy as np

from tpsim.darray import DArray, from_local
from tpsim.errors import ShapeError
from tpsim.nn.module import Module
from tpsim.nn.rope import apply_rope, positions


class SequenceRoPE(Module):
    """x (s, b, h), the sequence on dim 0 (S(0) under SP), as h/d heads of d features, rotated at
    global positions; backward rotates dy back.  No weights, no collective."""

    def __init__(self, mesh, hidden: int, head_dim: int, theta: float = 10000.0, *, tp_dim=None,
                 name: str | None = None):
        super().__init__(mesh, name, tp_dim)
        if head_dim % 2 or hidden % head_dim:
            raise ShapeError(f"{self.name}: hidden = {hidden} must split into heads of an even head_dim, "
                             f"got head_dim = {head_dim}")
        self.head_dim, self.theta = head_dim, theta

    def positions(self, x: DArray) -> DArray:
        """Each device's global positions along the sequence: its shard's offset plus the row."""
        return positions(x, 0)

    def forward(self, x: DArray) -> DArray:
        pos = self.positions(x)
        self.save(pos=pos)
        d, theta = self.head_dim, self.theta
        return self.local("rope", _rope_heads, x, pos, d, theta, False, placements=x.placements)

    def backward(self, dy: DArray) -> DArray:
        (pos,) = self.saved("pos")
        return self.local("rope_backward", _rope_heads, dy, pos, self.head_dim, self.theta, True,
                          placements=dy.placements)


class RoPEPositionsRestart(SequenceRoPE):
    """positions 0 .. s_r - 1 on every rank: each shard rotated as if it began the sequence."""

    def positions(self, x: DArray) -> DArray:
        pos = super().positions(x)
        local = [np.arange(len(p)) for p in pos.shards]  # the bug: no offset
        return from_local(local, x.mesh, list(pos.placements), shape=pos.shape, run_check=False)


def _rope_heads(x, pos, d: int, theta: float, inverse: bool):
    """(s, b, h) -> (s, b, h/d, d) rotated along s -> (s, b, h)."""
    y, flops, nbytes = apply_rope(x.reshape(*x.shape[:-1], x.shape[-1] // d, d), pos, theta, 0, inverse)
    return y.reshape(x.shape), flops, nbytes
