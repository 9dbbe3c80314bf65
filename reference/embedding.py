"""Vocab-parallel embedding and the tied output layer on one rank: the mirror of tpsim/nn/embedding.py.

    E = [E_1; E_2; ...; E_t]      (V', h); this rank holds rows [lo, hi) (torch.chunk rule)

This rank looks up the ids in its rows and writes zeros for the others: one term of a sum.
    forward:  all-reduce of y (reduce_from)     [SP: reduce-scatter along the sequence, dim 0]
    backward: identity, dE_i = dy scatter-added into this rank's rows: no communication
              [SP: all-gather of dy first]

Padding as tpsim's (Megatron's make_vocab_size_divisible_by x t): V' = padded_vocab_size(V, t, m).
The table is tpsim's seeded global weight cut to this rank's rows, so both engines hold the same numbers.

VocabParallelLogits ties the output layer to the table: logits_i = x E_i^T, this rank's vocab columns.
    forward: copy_to [SP: all-gather the sequence]; backward: all-reduce of dx [SP: reduce-scatter]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference import regions, scope
from reference.linear import _SequenceGatherLinear
from reference.module import Module
from tpsim.errors import DTypeError, ShapeError, TokenIdError
from tpsim.nn.embedding import padded_vocab_size
from tpsim.placement import chunk_offsets, chunk_sizes


class VocabParallelEmbedding(Module):
    """y = E[ids] with E (V', h) split by rows across TP: one all-reduce forward, none backward."""

    def __init__(
        self,
        comm,
        vocab_size: int,
        hidden: int,
        *,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        pad_to_multiple_of: int | None = None,
        sequence_parallel: bool = False,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ShapeError(f"{self.name}: hidden = {hidden!r} must be an int >= 1")
        self.vocab_size, self.hidden, self.sequence_parallel = vocab_size, hidden, sequence_parallel
        self.padded_vocab_size = padded_vocab_size(vocab_size, self.tp_size, pad_to_multiple_of)
        self.weight = self.seeded((self.padded_vocab_size, hidden), seed, init, dtype, 0)  # (V'/t, h)
        self.lo = chunk_offsets(self.padded_vocab_size, self.tp_size)[self.tp_rank]
        self.hi = self.lo + chunk_sizes(self.padded_vocab_size, self.tp_size)[self.tp_rank]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        check_ids(self, ids, self.vocab_size, "token id")
        mine = (ids >= self.lo) & (ids < self.hi)  # (s, b)
        if self.hi > self.lo:
            rows = F.embedding(torch.where(mine, ids - self.lo, 0), self.weight)  # (s, b, h)
            y = torch.where(mine[..., None], rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
        else:  # this rank holds no rows (uneven split): its term is zero
            y = self.weight.sum() * 0 + torch.zeros(*ids.shape, self.hidden, dtype=self.weight.dtype,
                                                    device=self.weight.device)
        if self.sequence_parallel:
            return regions.sequence_reduce_scatter(y, self.comm, 0)
        return regions.reduce_from(y, self.comm)


class VocabParallelLogits(Module):
    """Output layer tied to a VocabParallelEmbedding: logits_i = x E_i^T, (s, b, h) -> (s, b, V'_i)."""

    def __init__(self, embedding: VocabParallelEmbedding, *, name: str | None = None):
        super().__init__(embedding.comm, name, embedding.device)
        self.embedding = [embedding]  # a list: the table belongs to the embedding, not to this module
        self.sequence_parallel = embedding.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.embedding[0]
        if x.shape[-1] != table.hidden:
            raise ShapeError(
                f"{self.name} (rank {self.tp_rank}): x has hidden size {x.shape[-1]} "
                f"(shape {tuple(x.shape)}) "
                f"but the tied table {table.name} has hidden = {table.hidden}"
            )
        if self.sequence_parallel:
            return scope.mark(_SequenceGatherLinear.apply(x, table.weight, self.comm, 0))
        return torch.matmul(regions.copy_to(x, self.comm), table.weight.t())  # (s, b, h) @ (h, V'_i)


def check_ids(module: Module, ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Integer ids, each in [0, vocab_size): otherwise a clear error naming the rank and position."""
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise DTypeError(f"{module.name} (rank {module.tp_rank}): {what}s need an integer dtype, "
                         f"got {ids.dtype}")
    bad = ((ids < 0) | (ids >= vocab_size)).nonzero()
    if len(bad):
        pos = tuple(int(i) for i in bad[0])
        raise TokenIdError(
            f"{module.name} (rank {module.tp_rank}): {what} {int(ids[pos])} at position {pos} is out of "
            f"range; valid ids are 0..{vocab_size - 1} (vocab_size {vocab_size}); {len(bad)} id(s) out of "
            "range in all"
        )
