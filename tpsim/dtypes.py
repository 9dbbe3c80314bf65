"""The dtypes tpsim moves and reduces: float16/32/64, bfloat16 (ml_dtypes), integers and bool."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from tpsim.errors import DTypeError

bfloat16 = np.dtype(ml_dtypes.bfloat16)
_EXTRA = {"bfloat16": bfloat16, "bf16": bfloat16}


def resolve_dtype(dtype) -> np.dtype:
    """np.dtype from a name or type, knowing "bfloat16"; unsupported dtypes raise DTypeError."""
    try:
        dt = _EXTRA[dtype] if isinstance(dtype, str) and dtype in _EXTRA else np.dtype(dtype)
    except TypeError as e:
        raise DTypeError(f"unknown dtype {dtype!r}: {e}") from None
    if not is_supported(dt):
        raise DTypeError(
            f"dtype {dt} is not supported; use a float (16/32/64, bfloat16), integer or bool dtype"
        )
    return dt


def is_supported(dt: np.dtype) -> bool:
    return dt.kind in "fiub" or dt == bfloat16


def is_floating(dt: np.dtype) -> bool:
    return dt.kind == "f" or dt == bfloat16
