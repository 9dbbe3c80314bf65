"""What every reference layer shares: a Comm, seeded global weights cut to this rank, dtype bridges.

A reference module is a torch.nn.Module that sees ONE rank's shard (SPMD).  Its weights are the
very arrays tpsim's modules draw (`tpsim.nn.init.global_weight`, same seeds), cut by the
torch.chunk rule, so rank r holds exactly tpsim device r's shard.
"""

from __future__ import annotations

import numpy as np
import torch

from reference import scope
from tpsim import validate
from tpsim.dtypes import bfloat16, resolve_dtype
from tpsim.nn.init import global_weight
from tpsim.placement import chunk_offsets, chunk_sizes

TORCH_DTYPES = {
    "float16": torch.float16, "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
}


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a tpsim dtype name or NumPy dtype (bfloat16 through ml_dtypes)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = "bfloat16" if resolve_dtype(dtype) == bfloat16 else resolve_dtype(dtype).name
    return TORCH_DTYPES.get(name) or getattr(torch, name)


LOW_PRECISION = (torch.bfloat16, torch.float16)


def widen(t: torch.Tensor) -> torch.Tensor:
    """t in its compute dtype: float32 for bfloat16 / float16 (tpsim.nn.ops.widen's rule), else t."""
    return t.float() if t.dtype in LOW_PRECISION else t


def narrow(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The one rounding at the end of a kernel computed in float32 (tpsim.nn.ops.narrow)."""
    return t.to(dtype)


def to_torch(a: np.ndarray, device=None) -> torch.Tensor:
    """A NumPy array (ml_dtypes bfloat16 too) as a torch tensor with the same bits."""
    a = np.ascontiguousarray(a)
    if a.dtype == bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(a.copy()).to(device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as a NumPy array with the same bits (bfloat16 -> ml_dtypes bfloat16)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(bfloat16)
    return t.numpy()


def rank_piece(a: np.ndarray, dim: int | None, rank: int, size: int) -> np.ndarray:
    """Rank `rank`'s torch.chunk piece of a along dim; the whole of a when dim is None (replicated)."""
    if dim is None:
        return a
    dim %= a.ndim
    n = a.shape[dim]
    lo, k = chunk_offsets(n, size)[rank], chunk_sizes(n, size)[rank]
    return a[(slice(None),) * dim + (slice(lo, lo + k),)]


class Module(torch.nn.Module):
    """A reference layer on one rank of the tensor-parallel group `comm`."""

    def __init__(self, comm, name: str | None = None, device=None):
        super().__init__()
        self.comm = comm
        self.name = name or type(self).__name__
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __call__(self, *args, **kwargs):
        with scope.module(self.name):  # collectives issued in here carry this module's name, as tpsim's
            return super().__call__(*args, **kwargs)

    @property
    def tp_size(self) -> int:
        return self.comm.size

    @property
    def tp_rank(self) -> int:
        return self.comm.rank

    def seeded(self, shape, seed: int, init: str, dtype, split: int | None) -> torch.nn.Parameter:
        """This rank's piece (split along `split`, or all of it) of tpsim's seeded global weight."""
        full = global_weight(tuple(shape), seed, init, dtype)
        return torch.nn.Parameter(to_torch(rank_piece(full, split, self.tp_rank, self.tp_size), self.device))

    def check_divides(self, what: str, size: int) -> None:
        """A dim that must split evenly over the TP degree (the same rule and message as tpsim)."""
        validate.divides(f"{self.name} (rank {self.tp_rank})", what, size, self.tp_size)
