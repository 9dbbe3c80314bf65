"""Bad input raises one error of tpsim.errors, whose message names the device or rank, the dim and the value,
and a rejected call leaves the buffers, the memory ledger, the clocks and the trace as they were."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tpsim
from tpsim import Mesh, errors
from tpsim.errors import (
    AlgorithmError,
    DTypeError,
    MeshDimError,
    OutOfMemoryError,
    ReduceOpError,
    RootError,
    ShapeError,
    TpsimError,
    WorldSizeError,
)


def buffers(*shapes, dtype=np.float32) -> list[np.ndarray]:
    """One buffer per device, each with distinct values so that any write would show."""
    return [np.arange(np.prod(s), dtype=dtype).reshape(s) + 10 * d for d, s in enumerate(shapes)]


FOUR = [(4,)] * 4

def case(name, error, make_buffers, bad_call, message):
    """A bad call: the buffers it gets, the call, the error it must raise and what its message must say."""
    return pytest.param(make_buffers, bad_call, error, message, id=name)


CASES = [
    case("shapes differ", ShapeError,
         lambda: buffers((4,), (4,), (5,), (4,)), lambda x, m: tpsim.all_reduce(x, m),
         r"device 2 \(rank 2\) has shape \(5,\) but device 0 has \(4,\); every rank needs the same"),
    case("trailing dims differ", ShapeError,
         lambda: buffers((1, 2), (1, 2), (1, 3), (1, 2)), lambda x, m: tpsim.all_gather(x, m),
         r"device 2 \(rank 2\) has shape \(1, 3\); shards may differ only in dim 0, and device 0"),
    case("shapes differ inside a group", ShapeError,
         lambda: buffers((4,), (4,), (4,), (5,)), lambda x, m: tpsim.reduce_scatter(x, m, mesh_dim="tp"),
         r"device 3 \(rank 1\) has shape \(5,\) but device 2 has \(4,\); every rank needs the same"),
    case("0-d buffer where dim 0 is cut", ShapeError,
         lambda: buffers(*[()] * 4), lambda x, m: tpsim.reduce_scatter(x, m),
         r"device 0 \(rank 0\) has a 0-d buffer; reduce_scatter cuts buffers along dim 0"),
    case("None from a rank that must send", ShapeError,
         lambda: [*buffers((4,)), None, *buffers((4,), (4,))], lambda x, m: tpsim.all_reduce(x, m),
         r"device 1 passed None; only non-root ranks of broadcast and scatter may pass None"),
    case("dtypes differ", DTypeError,
         lambda: [*buffers((4,)), *buffers((4,), dtype=np.float64), *buffers((4,), (4,))],
         lambda x, m: tpsim.all_reduce(x, m),
         r"device 1 has dtype float64 but device 0 has float32; every rank needs the same dtype"),
    case("avg on integers", DTypeError,
         lambda: buffers(*FOUR, dtype=np.int32), lambda x, m: tpsim.all_reduce(x, m, op="avg"),
         r"all_reduce op 'avg' needs a floating dtype, got int32"),
    case("meta mixed with data", DTypeError,
         lambda: [*buffers((4,)), tpsim.meta(4), *buffers((4,), (4,))], lambda x, m: tpsim.all_reduce(x, m),
         r"device 1 passed a shape-only \(meta\) buffer but device 0 passed data; pass one kind"),
    case("wrong number of buffers", WorldSizeError,
         lambda: buffers(*FOUR[:3]), lambda x, m: tpsim.all_reduce(x, m),
         r"all_reduce got 3 buffers for a mesh of 4 devices; pass one buffer per device"),
    case("unknown algorithm", AlgorithmError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.all_reduce(x, m, algorithm="bogus"),
         r"unknown algorithm 'bogus' for all_reduce; valid: ring, halving_doubling, tree, direct"),
    case("unknown op", ReduceOpError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.reduce_scatter(x, m, op="mean"),
         r"reduce_scatter: op 'mean' is unknown; valid: sum, avg, max, min, prod"),
    case("root past the end", RootError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.reduce(x, m, root=4),
         r"reduce: root 4 is out of range; valid: 0\.\.3"),
    case("negative root", RootError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.broadcast(x, m, root=-1),
         r"broadcast: root -1 is out of range; valid: 0\.\.3"),
    case("root outside the group", RootError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.gather(x, m, root=2, mesh_dim="dp"),
         r"gather: root 2 is out of range; valid: 0\.\.1 \(ranks of a group of 2\)"),
    case("unknown mesh dim", MeshDimError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.all_reduce(x, m, mesh_dim="pp"),
         r"mesh has no dim 'pp'; its dims are \('dp', 'tp'\)"),
    case("mesh dim out of range", MeshDimError,
         lambda: buffers(*FOUR), lambda x, m: tpsim.all_gather(x, m, mesh_dim=2),
         r"mesh dim 2 is out of range for a 2-d mesh"),
    case("device over its memory", OutOfMemoryError,
         lambda: buffers(*[(64,)] * 4), lambda x, m: tpsim.all_reduce(x, m),
         r"device 2 \(dev2\) out of memory: asked for 256 B with 900 B in use of 1\.00 KiB"),
    case("device over its memory, shape-only", OutOfMemoryError,  # the output: 4 x 128 MiB
         lambda: [tpsim.meta((1 << 20, 64), "bfloat16")] * 4, lambda x, m: tpsim.all_gather(x, m),
         r"device 0 \(dev0\) out of memory: asked for 512\.00 MiB with 0 B in use of 1\.00 KiB"),
    case("device over its memory, stepwise", OutOfMemoryError,
         lambda: buffers(*[(64,)] * 4), lambda x, m: list(tpsim.stepwise("all_reduce", x, m)),
         r"device 2 \(dev2\) out of memory: asked for 256 B"),
]


@pytest.fixture
def mesh() -> Mesh:
    """2 x 2 devices of 1 KiB, device 2 with 900 B in use, after one collective that went through."""
    mesh = Mesh((2, 2), names=("dp", "tp"), memory=1024)
    mesh.devices[2].allocate(900, "weights")
    tpsim.all_reduce(buffers(*FOUR), mesh)
    return mesh


def state(mesh: Mesh) -> tuple:
    """Everything a collective may change: the trace, each device's memory and each clock."""
    trace = mesh.trace
    memory = [(d.used, d.peak, dict(d.in_use)) for d in mesh.devices]
    return len(trace.collectives), len(trace.steps), trace.wire_bytes, memory, list(mesh.clock)


@pytest.mark.parametrize("make_buffers, bad_call, error, message", CASES)
def test_a_rejected_call_says_why_and_changes_nothing(mesh, make_buffers, bad_call, error, message):
    x = make_buffers()
    kept = [a.copy() if isinstance(a, np.ndarray) else a for a in x]
    before = state(mesh)
    with pytest.raises(error, match=message) as caught:
        bad_call(x, mesh)
    assert isinstance(caught.value, TpsimError)
    assert state(mesh) == before
    assert len(x) == len(kept)
    for now, then in zip(x, kept, strict=True):
        if isinstance(then, np.ndarray):
            assert now.dtype == then.dtype
            assert_array_equal(now, then)
        else:
            assert now == then  # None, or a MetaArray of the same shape and dtype


def test_the_mesh_still_works_after_a_rejected_call(mesh):
    with pytest.raises(OutOfMemoryError):
        tpsim.all_reduce(buffers(*[(64,)] * 4), mesh)
    x = buffers(*FOUR)
    for result in tpsim.all_reduce(x, mesh):
        assert_array_equal(result, np.sum(x, axis=0))
    assert len(mesh.trace.collectives) == 2


def test_every_error_class_is_a_tpsim_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    assert {c.__name__ for c in classes} >= {
        "ShapeError", "DTypeError", "WorldSizeError", "PlacementError", "MeshDimError", "AlgorithmError",
        "ReduceOpError", "RootError", "ScheduleError", "TopologyError", "OutOfMemoryError",
    }
    for cls in classes:
        assert issubclass(cls, TpsimError), cls


def test_a_numpy_integer_root_is_a_root(mesh):
    x = buffers(*FOUR)
    for result in tpsim.broadcast(x, mesh, root=np.int64(1)):
        assert_array_equal(result, x[1])


OLD_HOMES = [
    ("tpsim.exercises.core", "AnswerError"), ("tpsim.nn.config", "ConfigError"),
    ("tpsim.collectives.api", "UnevenGroups"), ("tpsim.plan.layout", "LayoutError"),
    ("tpsim.plan.pipeline", "PipelineError"), ("tpsim.cli.calibrate", "CalibrationError"),
    ("tpsim.cli.fit", "FitError"), ("tpsim.cli.bench", "BenchError"), ("tpsim.cli.gpu_report", "ReportError"),
    ("tpsim.cli.plotting", "PlotError"), ("reference.gpu_check.timebox", "SectionTimeout"),
    ("reference.record", "RecordMismatch"), ("reference.backend", "LaunchError"),
    ("reference.launch", "RankFailed"), ("reference.launch", "RunTimeout"),
    ("reference.preflight", "CollectiveMismatch"),
]


@pytest.mark.parametrize(("module", "name"), OLD_HOMES)
def test_every_error_lives_in_tpsim_errors_and_its_old_import_still_works(module, name):
    import importlib

    cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(errors, name) and cls.__module__ == "tpsim.errors"
    assert name in errors.__doc__  # drawn in the tree


def test_no_error_class_is_defined_outside_tpsim_errors():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^class \w+\((?:\w+Error|TpsimError|RankFailed|Exception)\b", re.M)
    outside = [
        f"{path.relative_to(root)}: {m.group(0)}"
        for top in ("tpsim", "reference")
        for path in (root / top).rglob("*.py")
        if path.name != "errors.py"
        for m in pattern.finditer(path.read_text())
    ]
    assert outside == []


def test_a_rank_failure_puts_the_cause_first_and_last():
    from tpsim.errors import RankFailed

    tb = "Traceback (most recent call last):\n  File x\nValueError: bad shard (4, 6)\n"
    err = RankFailed(1, 1, tb, "rank 1 failed (exit code 1)", {0: "RuntimeError: Connection reset by peer"})
    lines = str(err).splitlines()
    assert lines[0] == "rank 1 failed (exit code 1)" and lines[-1] == "ValueError: bad shard (4, 6)"
    assert "rank 0: RuntimeError: Connection reset by peer" in lines
