"""gloo with CUDA tensors: which ops go through the CPU, and the copies that take them there.

gloo documents CUDA support for broadcast and all_reduce only (the backend table of the
torch.distributed docs); everything else (all_gather, reduce_scatter, all_to_all, reduce, scatter,
gather, and the isend/irecv of schedule mode) is staged: copied to the host, run there, copied back.
The decision is a pure function of the Backend, so it is tested without a GPU; a Backend forced to
staged=True on CPU tensors runs the very same copies (`copy=True`), which exercises the path in CI.
"""

from __future__ import annotations

import torch

from reference.backend import Backend
from tpsim.errors import AlgorithmError

GLOO_CUDA_NATIVE = frozenset({"all_reduce", "broadcast"})
STAGEABLE = frozenset(
    {
        "all_reduce",
        "broadcast",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
        "reduce",
        "scatter",
        "gather",
        "send",
        "recv",
        "descriptor",
    }
)


def is_staged(backend: Backend | None, op: str) -> bool:
    """True when `op` must go through the CPU on this backend (gloo + CUDA, an op gloo lacks on CUDA)."""
    if op not in STAGEABLE:
        raise AlgorithmError(f"unknown op {op!r} for staging; valid: {', '.join(sorted(STAGEABLE))}")
    return backend is not None and backend.staged and op not in GLOO_CUDA_NATIVE


def to_wire(t: torch.Tensor, staged: bool) -> torch.Tensor:
    """The tensor the backend sees: a host copy when staged (a real copy even of a CPU tensor)."""
    return t.to("cpu", copy=True) if staged else t


def from_wire(t: torch.Tensor, device: torch.device, staged: bool) -> torch.Tensor:
    """Back onto the rank's device after a staged op."""
    return t.to(device, copy=True) if staged else t


def wire_empty(shape, dtype: torch.dtype, device: torch.device, staged: bool) -> torch.Tensor:
    """An uninitialised receive buffer where the backend will write it."""
    return torch.empty(shape, dtype=dtype, device="cpu" if staged else device)
