"""python -m reference.gpu_check, proven on CPU before a GPU session spends minutes on it.

The --quick run must run every section to "ok" and leave a JSON report that parses and a markdown
that names every section; a section cut short (tiny budget, SIGTERM, or the whole process group
killed) must leave the sections before it; the check imports nothing the GPU machine lacks; a
preset written from the quick report loads and moves tpsim's predicted time as its rates say.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import pytest

from reference.cases import LAYERS
from reference.gpu_check import compat
from reference.gpu_check.report import SECTION_TITLES
from reference.gpu_check.sizes import FULL, QUICK, SECTION_ORDER, TOTAL_BUDGET_S, compute_flops
from tpsim.cli import gpu_report
from tpsim.errors import TopologyError, TpsimError
from tpsim.hardware import H100, device_spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# on the GPU machine: torch 2.11, numpy, ml-dtypes, rich, pytest, hypothesis, matplotlib (and stdlib)
GPU_MACHINE = {
    "torch",
    "numpy",
    "ml_dtypes",
    "rich",
    "pytest",
    "hypothesis",
    "matplotlib",
    "tpsim",
    "reference",
}


def gpu_check(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reference.gpu_check", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(folder: pathlib.Path) -> tuple[dict, str]:
    (js,) = folder.glob("*.json")
    return json.loads(js.read_text()), js.with_suffix(".md").read_text()


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str, pathlib.Path]:
    out = tmp_path_factory.mktemp("quick")
    start = time.monotonic()
    proc = gpu_check("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc, md = load(out)
    doc["wall_s"] = time.monotonic() - start
    return doc, md, next(out.glob("*.json"))


def test_quick_runs_every_section_to_ok(quick):
    doc, md, _ = quick
    sections = {s["name"]: s for s in doc["sections"]}
    assert list(sections) == list(SECTION_ORDER)
    assert {n: s["status"] for n, s in sections.items()} == dict.fromkeys(SECTION_ORDER, "ok")
    for name in SECTION_ORDER:
        assert f"## {SECTION_TITLES[name]}" in md
        assert sections[name]["records"], name
    assert doc["meta"]["quick"] is True and doc["meta"]["device_name"] == "cpu"
    assert sum(s["wall_s"] for s in doc["sections"]) < 60


def test_quick_equivalence_is_the_checkers_on_every_layer(quick):
    recs = next(s for s in quick[0]["sections"] if s["name"] == "equivalence")["records"]
    assert {r["comm"] for r in recs} == {c for _, c, _ in QUICK.equivalence}
    for r in recs:
        assert r["ok"] and set(r["layers"]) == set(LAYERS)
        assert r["exact_bitwise"]["n"] > 0 and r["exact_bitwise"]["bitwise"] == r["exact_bitwise"]["n"]
        assert r["float_close"]["ok"] == r["float_close"]["n"] > 0


def test_quick_compute_is_the_gemm_table_calibrate_reads(quick):
    recs = next(s for s in quick[0]["sections"] if s["name"] == "compute")["records"]
    gemms = [r for r in recs if r["kind"] == "gemm"]
    want = {(h, t) for h in QUICK.hiddens for t in QUICK.tp_degrees}
    assert {(r["hidden"], r["t"]) for r in gemms if r["dtype"] == "bfloat16"} == want
    for r in gemms:
        assert r["seconds"] > 0
        assert r["tflops"] == pytest.approx(2 * r["m"] * r["n"] * r["k"] / r["seconds"] / 1e12)
    assert {(r["dtype"], r["tf32"]) for r in recs if r["kind"] == "square"} == {
        ("bfloat16", False),
        ("float32", True),
        ("float32", False),
    }
    assert any(r["kind"] == "copy" and r["read_write_bytes_per_s"] > 0 for r in recs)


def test_quick_memory_and_prediction_have_their_columns(quick):
    by = {s["name"]: s["records"] for s in quick[0]["sections"]}
    assert {r["layer"] for r in by["memory"]} == {"block", "gpt"}
    assert all(r["predicted"] > 0 and r["measured"] == "not measurable on CPU" for r in by["memory"])
    measured = [r for r in by["predict"] if r["predicted"] is not None]
    assert [r["model"] for r in measured] == ["measured (section d)"]
    assert measured[0]["error"] == pytest.approx(measured[0]["predicted"] / measured[0]["measured"] - 1)


def test_a_tiny_budget_cuts_sections_short_and_keeps_the_ones_before(tmp_path):
    proc = gpu_check(
        "--quick", "--out", str(tmp_path), "--sections", "compute,memory", "--budget-scale", "0.01"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc, md = load(tmp_path)
    status = {s["name"]: s["status"] for s in doc["sections"]}
    assert status == {"facts": "ok", "compute": "cut short", "memory": "cut short"}
    compute = doc["sections"][1]
    assert compute["records"] and "budget" in compute["error"]  # the square matmuls it finished
    assert md.count("status: **cut short**") == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_run_leaves_every_finished_section(tmp_path, sig):
    args = ["--quick", "--out", str(tmp_path), "--sections", "compute,equivalence"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference.gpu_check", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it while equivalence runs (its ranks spawned)
            js = list(tmp_path.glob("*.json"))
            if js and len(json.loads(js[0].read_text())["sections"]) == 2:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    doc, md = load(tmp_path)
    names = [s["name"] for s in doc["sections"]]
    assert names[:2] == ["facts", "compute"] and all(s["status"] == "ok" for s in doc["sections"][:2])
    if sig == signal.SIGTERM:  # the section running is recorded, cut short
        assert names == ["facts", "compute", "equivalence"] and doc["sections"][2]["status"] == "cut short"
    else:  # no time to record it: the markdown says it did not run
        assert names == ["facts", "compute"] and "status: **not run**" in md
    assert f"## {SECTION_TITLES['equivalence']}" in md
    assert not list(tmp_path.glob("*.tmp"))  # every write was completed and renamed


HOOK = """
import importlib, sys
ALLOWED = set(sys.argv[1].split(",")) | set(sys.stdlib_module_names)
class Guard:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ALLOWED:
            return None
        f = sys._getframe(1)
        while f is not None and f.f_globals.get("__name__", "").startswith(("importlib", "_frozen")):
            f = f.f_back
        who = f.f_globals.get("__name__", "") if f is not None else ""
        if who.split(".")[0] in ("tpsim", "reference"):
            raise ImportError(f"{who} imports {name!r}, which the GPU machine does not have")
        return None
sys.meta_path.insert(0, Guard())
for m in sys.argv[2:]:
    importlib.import_module(m)
print("imported", len(sys.argv) - 2)
"""


def _modules_named_by(folder: pathlib.Path) -> list[str]:
    """Every gpu_check module, and every tpsim/reference module they import, at top level or lazily."""
    mods = {f"reference.gpu_check.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    for p in folder.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module)
            elif isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
    return sorted(m for m in mods if m.split(".")[0] in ("tpsim", "reference"))


def test_gpu_check_imports_only_what_the_gpu_machine_has():
    mods = _modules_named_by(ROOT / "reference" / "gpu_check")
    assert "reference.check" in mods and "tpsim.cli.gpu_report" in mods
    proc = subprocess.run(
        [sys.executable, "-c", HOOK, ",".join(sorted(GPU_MACHINE)), *mods],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"imported {len(mods)}" in proc.stdout


def test_the_import_guard_can_fail():
    # tpsim allowed but numpy not: tpsim's own `import numpy` must be refused
    proc = subprocess.run(
        [sys.executable, "-c", HOOK, "tpsim", "tpsim"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "imports 'numpy', which the GPU machine does not have" in proc.stderr


@pytest.mark.parametrize("api", ["fp32_precision", "allow_tf32"])
def test_tf32_switch_works_with_the_new_api_and_the_legacy_flag(api):
    backend = types.SimpleNamespace(
        **(
            {"fp32_precision": "none", "allow_tf32": False}
            if api == "fp32_precision"
            else {"allow_tf32": False}
        )
    )
    assert compat.tf32_enabled(backend) is False
    compat.set_tf32(True, backend)
    assert compat.tf32_enabled(backend) is True
    assert getattr(backend, api) == ("tf32" if api == "fp32_precision" else True)
    compat.set_tf32(False, backend)
    assert compat.tf32_enabled(backend) is False


def test_the_full_run_fits_in_eight_minutes_and_quick_in_one():
    assert TOTAL_BUDGET_S < 8 * 60
    assert sum(QUICK.budgets.values()) < 60
    assert set(FULL.budgets) == set(QUICK.budgets) == set(SECTION_ORDER)
    # section d's GEMMs at a practical 600 TFLOP/s (KINDS.md saw ~800 on an 8192^3 product) take a
    # small share of its budget: the rest is for allocation, warm-up and the fp32 runs' lower rate
    assert compute_flops(FULL) / 600e12 < FULL.budgets["compute"] / 10


def test_a_preset_from_the_quick_report_loads_and_sets_the_predicted_time(quick, tmp_path):
    from reference.gpu_check.sizes import QUICK as Z
    from reference.gpu_check.workloads import tpsim_step

    _, _, report = quick
    path, spec = gpu_report.write_preset(report, tmp_path / "cpu.json")
    loaded = device_spec(str(path))
    assert loaded == spec and str(report) in loaded.source and "cpu" in loaded.source
    assert json.loads(path.read_text())["measured"]["date"] == quick[0]["meta"]["date"]
    flops = 1e15  # a compute-bound op: the time is flops over the preset's rate
    assert loaded.time(flops, 0, "bfloat16") == pytest.approx(flops / loaded.flops["bfloat16"])
    assert loaded.time(flops, 0, "bfloat16") > H100.time(flops, 0, "bfloat16")  # a CPU is slower
    doubled = json.loads(path.read_text())
    doubled["flops"] = {k: 2 * v for k, v in doubled["flops"].items()}
    doubled["memory_bandwidth"] *= 2
    (tmp_path / "fast.json").write_text(json.dumps(doubled))
    t1 = max(tpsim_step("block", Z.block, "bfloat16", 1, loaded).clock)
    t2 = max(tpsim_step("block", Z.block, "bfloat16", 1, device_spec(str(tmp_path / "fast.json"))).clock)
    assert t2 == pytest.approx(t1 / 2, rel=1e-12)  # every roofline term halves


def test_calibrate_gpu_report_flag_writes_the_preset(quick, tmp_path):
    from tpsim.cli import main

    out = tmp_path / "p.json"
    assert main(["calibrate", "--gpu-report", str(quick[2]), "--out", str(out), "--quiet"]) == 0
    assert device_spec(str(out)).flops["bfloat16"] > 0


def test_bad_presets_and_reports_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"name": "x", "flops": {"bfloat16": -1}, "memory_bandwidth": 1, "memory": 1, "source": "s"}
        )
    )
    with pytest.raises(TopologyError, match=r"flops must map dtypes to rates > 0"):
        device_spec(str(bad))
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(TopologyError, match=r"missing field.*flops"):
        device_spec(str(bad))
    with pytest.raises(TopologyError, match="unknown device 'h999'; valid: v100, a100, h100, h200"):
        device_spec("h999")
    with pytest.raises(TpsimError, match=r"not a reference\.gpu_check report"):
        gpu_report.write_preset(bad)


def test_the_newest_report_is_the_latest_dated_gpu_run(tmp_path):
    assert gpu_report.newest_report(tmp_path) is None
    for name, meta in [
        ("a", dict(date="2026-12-01", device_name="NVIDIA H100")),
        ("b", dict(date="2026-12-03", device_name="NVIDIA H200")),
        ("c", dict(date="2026-12-09", device_name="cpu", quick=True)),
    ]:
        (tmp_path / f"{name}.json").write_text(json.dumps(dict(meta=meta, sections=[])))
    assert gpu_report.newest_report(tmp_path) == tmp_path / "b.json"


def test_readme_and_docs_name_the_newest_gpu_report_or_say_none_exists():
    newest = gpu_report.newest_report()
    for doc in ("README.md", "docs/reference-runs.md", "docs/index.md"):
        text = (ROOT / doc).read_text()
        if newest is None:
            assert gpu_report.NO_REPORT in text, doc
        else:
            assert newest.with_suffix(".md").name in text, doc
    runs = (ROOT / "docs" / "reference-runs.md").read_text()  # the sizes it names are the ones run
    assert f"h = {', '.join(map(str, FULL.hiddens))} and t = {', '.join(map(str, FULL.tp_degrees))}" in runs


@pytest.mark.gpu
def test_the_full_checks_smallest_config_on_cuda(tmp_path):
    from reference.gpu_check import facts
    from reference.gpu_check.__main__ import Context, run_all
    from reference.gpu_check.report import Report

    sizes = dataclasses.replace(
        FULL,
        equivalence=FULL.equivalence[:1],
        memory_world_sizes=(1,),
        hiddens=FULL.hiddens[:1],
        tp_degrees=FULL.tp_degrees[-1:],
        fp32_hiddens=(),
    )
    ctx = Context(sizes, "cuda", facts.collect(), quick=False)
    report = run_all(ctx, list(SECTION_ORDER), sizes.budgets, Report(tmp_path, "smallest", ctx.facts))
    assert [s["status"] for s in report.doc["sections"]] == ["ok"] * len(SECTION_ORDER)


def test_a_preset_is_found_by_name_in_its_folder(quick, tmp_path):
    from tpsim import device_io

    path, spec = gpu_report.write_preset(quick[2], tmp_path / "my-gpu.json")
    assert device_io.find("my-gpu", tmp_path) == path and device_io.names(tmp_path) == ["my-gpu"]
    assert device_io.load(device_io.find("my-gpu", tmp_path)) == spec


@pytest.mark.parametrize("name", ["h100", "h200"])
def test_hopper_presets_say_they_are_datasheet_figures(name):
    spec = device_spec(name)
    assert "datasheet" in spec.source and "until a GPU report exists" in spec.source
    assert spec.flops["tf32"] < spec.flops["bfloat16"]  # dense TF32 is half the 16-bit tensor rate
