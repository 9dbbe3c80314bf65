"""Which backend and device the ranks use: NCCL, gloo with CUDA tensors (staged), or gloo on CPU.

    choose_backend(4)       -> Backend("nccl", "cuda", False) with >= 4 GPUs; gloo + CUDA (staged)
                               with fewer; Backend("gloo", "cpu", False) without a GPU
    rank_device(b, rank)    -> cuda:(rank mod GPUs) or cpu
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpsim.errors import LaunchError

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = (None, "gloo", "nccl")


@dataclass(frozen=True)
class Backend:
    """What `choose_backend` decided."""

    name: str  # "nccl" | "gloo"
    device_type: str  # "cpu" | "cuda"
    staged: bool  # gloo with CUDA tensors: ops gloo lacks on CUDA go through the CPU


def choose_backend(world_size: int, device: str = "auto", backend: str | None = None) -> Backend:
    """NCCL with one GPU per rank; gloo + CUDA (staged) when ranks must share GPUs; gloo on CPU otherwise.

    device="auto" means CUDA when torch sees a GPU, else CPU; then backend=None means NCCL if there
    are at least `world_size` GPUs, else gloo. Either may be forced; impossible pairs raise LaunchError.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise LaunchError(f"world_size must be an int >= 1, got {world_size!r}")
    if device not in DEVICES:
        raise LaunchError(f"device {device!r} is unknown; valid: {', '.join(DEVICES)}")
    if backend not in BACKENDS:
        raise LaunchError(f"backend {backend!r} is unknown; valid: None (choose), 'gloo', 'nccl'")
    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    if device == "cuda" and not cuda:
        raise LaunchError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    device_type = device if device != "auto" else ("cuda" if cuda else "cpu")
    if backend == "nccl":
        if device_type != "cuda":
            why = "device='cpu' was asked for" if device == "cpu" else "torch sees no CUDA device"
            raise LaunchError(f"backend='nccl' needs CUDA tensors, but {why}; use backend='gloo'")
        if gpus < world_size:
            raise LaunchError(
                f"backend='nccl' needs one GPU per rank: world_size {world_size} > {gpus} GPUs; "
                "use backend='gloo' (ranks then share GPUs) or at most "
                f"{gpus} ranks"
            )
    name = backend or ("nccl" if device_type == "cuda" and gpus >= world_size else "gloo")
    return Backend(name, device_type, staged=(name == "gloo" and device_type == "cuda"))


def rank_device(backend: Backend, rank: int) -> torch.device:
    """cuda:(rank mod GPUs) for CUDA backends (ranks share GPUs round-robin under gloo), else cpu."""
    if backend.device_type == "cuda":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")
