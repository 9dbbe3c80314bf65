"""The torch APIs whose home moved between the torch versions the reference supports (2.4 to the newest).

DTensor became public as `torch.distributed.tensor` in 2.5; torch 2.4 has the same classes under
`torch.distributed._tensor` (and `Partial` was `_Partial` before that). Importing from here gives the
reference one spelling for every version; `tests/test_compat.py` covers each fallback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# (public module, the private module that held it in older torch)
_HOMES = {
    "tensor": ("torch.distributed.tensor", "torch.distributed._tensor"),
    "debug": ("torch.distributed.tensor.debug", "torch.distributed._tensor.debug"),
}


def _first_module(*names: str) -> ModuleType:
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as e:  # the next, older home
            errors.append(f"{name}: {e}")
    raise ImportError("no torch module among " + "; ".join(errors) + " (the reference needs torch >= 2.4)")


def _attr(module: ModuleType, *names: str):
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"{module.__name__} has none of {names} (the reference needs torch >= 2.4)")


def dtensor_module() -> ModuleType:
    return _first_module(*_HOMES["tensor"])


def dtensor_names() -> tuple:
    """(DTensor, Shard, Replicate, Partial) from wherever this torch keeps them."""
    m = dtensor_module()
    return m.DTensor, m.Shard, m.Replicate, _attr(m, "Partial", "_Partial")


def comm_debug_mode():
    """torch's CommDebugMode class (public in torch.distributed.tensor.debug since 2.5)."""
    return _attr(_first_module(*_HOMES["debug"]), "CommDebugMode")
