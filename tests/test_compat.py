"""reference.compat: every fallback for the torch versions the reference supports (2.4 to the newest)."""

import importlib
import sys
import types

import pytest

pytest.importorskip("torch")
from reference import compat


def test_the_installed_torch_gives_the_public_dtensor_names():
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    from torch.distributed.tensor.debug import CommDebugMode

    assert compat.dtensor_names() == (DTensor, Shard, Replicate, Partial)
    assert compat.comm_debug_mode() is CommDebugMode


def _torch_24(monkeypatch):
    """Make `torch.distributed.tensor[.debug]` unimportable and give torch 2.4's private homes."""
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name.startswith("torch.distributed.tensor"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    old = types.ModuleType("torch.distributed._tensor")
    old.DTensor, old.Shard, old.Replicate = object(), object(), object()
    old._Partial = object()  # the spelling before `Partial` went public
    debug = types.ModuleType("torch.distributed._tensor.debug")
    debug.CommDebugMode = object()
    monkeypatch.setitem(sys.modules, "torch.distributed._tensor", old)
    monkeypatch.setitem(sys.modules, "torch.distributed._tensor.debug", debug)
    monkeypatch.setattr(compat.importlib, "import_module", fake_import)
    return old, debug


def test_torch_2_4_falls_back_to_the_private_modules(monkeypatch):
    old, debug = _torch_24(monkeypatch)
    assert compat.dtensor_names() == (old.DTensor, old.Shard, old.Replicate, old._Partial)
    assert compat.comm_debug_mode() is debug.CommDebugMode


def test_a_torch_without_dtensor_is_refused_with_the_version_needed(monkeypatch):
    _torch_24(monkeypatch)
    monkeypatch.setattr(
        compat.importlib, "import_module", lambda name, *a: (_ for _ in ()).throw(ImportError(name))
    )
    with pytest.raises(ImportError, match=r"torch >= 2.4"):
        compat.dtensor_names()
