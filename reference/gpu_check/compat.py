"""Fallbacks for torch features that moved between 2.11 (the GPU machine) and 2.13 (here)."""

from __future__ import annotations


def set_tf32(enabled: bool, backend=None) -> None:
    """TF32 for float32 matmuls on or off: `fp32_precision` where torch has it, else `allow_tf32`.

    `backend` is torch.backends.cuda.matmul by default (a parameter so a test can pass a stand-in).
    """
    if backend is None:
        import torch

        backend = torch.backends.cuda.matmul
    if hasattr(backend, "fp32_precision"):
        backend.fp32_precision = "tf32" if enabled else "ieee"
    else:
        backend.allow_tf32 = enabled


def tf32_enabled(backend=None) -> bool:
    if backend is None:
        import torch

        backend = torch.backends.cuda.matmul
    precision = getattr(backend, "fp32_precision", "none")
    if precision != "none":  # "none": not set through the new API, the legacy flag decides
        return precision == "tf32"
    return bool(backend.allow_tf32)
