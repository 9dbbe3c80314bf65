"""`python -m reference.check`: every case passes at world size 2, its bounds are the derived ones, and it
can fail.

Every case of the checker (every layer, block and GPT included, exact and float data) runs here at world
size 2 in float32, native and schedule, one spawn per mode; bfloat16 for a few layers.  The failing runs
are honest: `--inject-mismatch` flips the lowest bit of one element of rank 0's output (one ULP) after
the layer ran, and an error just past a rounding-tier bound fails its row.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference.cases import EXACT_MATH, LAYERS, default_cases, run_tpsim
from reference.cases_bounds import Depth, RoundingDepth, bound, unit_roundoff
from reference.check import check
from reference.check_rows import tensor_rows
from tpsim import Mesh, Replicate, distribute
from tpsim import nn as t_nn
from tpsim.dtypes import bfloat16

ROOT = Path(__file__).resolve().parents[1]
WS = 2


def all_cases(dtype: str, layers=LAYERS):
    return [c for d in ("exact", "float") for c in default_cases(WS, d, dtype) if c.layer in layers]


@pytest.fixture(scope="module", params=["native", "schedule"])
def float32_run(request):
    return request.param, check(WS, all_cases("float32"), comm=request.param, timeout=240)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_every_case_passes_in_float32(float32_run):
    comm, result = float32_run
    bad = [(r["case"], r["tensor"], r["max_abs"], r["bound"]) for r in result["rows"] if not r["ok"]]
    assert result["ok"], (bad, [c["record_problems"] for c in result["cases"] if not c["ok"]])
    assert {r["layer"] for r in result["rows"]} == set(LAYERS)
    assert {r["claim"] for r in result["rows"]} == {"bitwise", "rounding", "close"}
    assert all(c["counts_equal"] and not c["record_problems"] for c in result["cases"])
    if comm == "schedule":
        assert all(c["replay_bitwise"] and c["ref_bytes"] == c["tpsim_bytes"] for c in result["cases"])


@pytest.mark.multiprocess
@pytest.mark.slow
def test_each_row_applied_its_tier(float32_run):
    """The table is honest: bitwise rows are bitwise, rounding rows are within the bound they print,
    close rows passed assert_close; every rounding row's bound comes from a count, not a constant."""
    _, result = float32_run
    for r in result["rows"]:
        assert r["claim"] == (
            "close" if r["data"] == "float" else "bitwise" if r["layer"] in EXACT_MATH else "rounding"
        )
        if r["claim"] == "bitwise":
            assert r["bitwise"], r
        elif r["claim"] == "close":
            assert r["close"], r
        else:
            assert 0 < r["bound"] < float("inf") and r["max_abs"] <= r["bound"], r
            assert r["bound_ratio"] == pytest.approx(r["max_abs"] / r["bound"])
            assert "n_acc" in r["bound_terms"] and "max|T|" in r["bound_terms"]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_bfloat16_passes_for_a_few_layers():
    """bfloat16, layers through GeLU, softmax, LayerNorm and a whole GPT: each tier holds, and nothing
    silently ran (or moved) in float32."""
    layers = ("mlp", "layernorm", "loss", "gpt")
    result = check(WS, all_cases("bfloat16", layers), comm="schedule", timeout=240)
    assert result["ok"], [(r["case"], r["tensor"]) for r in result["rows"] if not r["ok"]]
    assert {r["layer"] for r in result["rows"]} == set(layers)
    assert all(r["dtype"] == "bfloat16" for r in result["rows"])
    assert all(c["ref_bytes"] == c["tpsim_bytes"] for c in result["cases"])  # bfloat16 bytes on the wire


def test_bound_is_the_sum_error_formula():
    """2 (n_acc u_acc + n_store u_store) max|T|: float32 stores what it accumulates; bfloat16 rounds
    once per op and per reduced partial sum to its own u on top of float32 accumulation."""
    d = Depth(acc=40.0, ops=7, wire=3)
    u32, u16 = unit_roundoff(np.float32), unit_roundoff(bfloat16)
    assert u32 == 2.0**-24 and u16 == 2.0**-8
    assert bound(d, np.float32, 2.5).value == pytest.approx(2 * (43 * u32) * 2.5)
    assert bound(d, bfloat16, 2.5).value == pytest.approx(2 * (40 * u32 + 10 * u16) * 2.5)


def test_depth_counts_a_gemms_k_and_restores_tpsim():
    """A column-parallel linear in float64: its forward GEMM sums k = in_features terms into each output;
    the weight gradient sums the s*b tokens; the count is read off the ops and tpsim is left as it was."""
    import tpsim.nn.module as t_module

    local, accumulate = t_module.local, t_module.Module.accumulate
    s, b, k, n = 3, 2, 7, 4
    mesh = Mesh(WS)
    layer = t_nn.ColumnParallelLinear(mesh, k, n, bias=False, seed=0, init="exact", dtype="float64")
    x = distribute(np.ones((s, b, k)), mesh, [Replicate()])
    with RoundingDepth() as depth:
        y = layer(x)
        assert depth.total.acc == k and depth.total.ops == 1
        layer.backprop(distribute(np.ones(y.shape), mesh, list(y.placements)))
    assert depth.at[f"{layer.name}.weight"].acc >= k + s * b  # forward, then dW's sum over tokens
    assert (t_module.local, t_module.Module.accumulate) == (local, accumulate)


def test_a_rounding_row_fails_just_past_its_bound():
    """The rounding tier can fail: tpsim's own results as the reference pass; the same with one element
    moved by 1.01 x the bound fail, by 0.99 x pass (moved in float32: the error realised is checked too)."""
    case = next(c for c in default_cases(WS, "exact", "float32") if c.layer == "layernorm")
    sim = run_tpsim(case, WS)
    name = "grad.weight"
    allowed = sim.bounds[name].value

    def rows(shift: float):
        ranks = [{"tensors": {k: v[r].copy() for k, v in sim.results.items()}} for r in range(WS)]
        for rk in ranks:  # replicated: every rank moves the same element, so the ranks still agree
            flat = rk["tensors"][name].reshape(-1)
            i = np.argmin(np.abs(flat))  # the finest float spacing: the shift lands where it is aimed
            flat[i] = np.float32(np.float64(flat[i]) + shift)
        return {r["tensor"]: r for r in tensor_rows(sim, ranks, {})}

    assert all(r["ok"] and r["max_abs"] == 0 for r in rows(0.0).values())
    over, under = rows(1.01 * allowed)[name], rows(0.99 * allowed)[name]
    assert over["max_abs"] > allowed and not over["ok"]
    assert under["max_abs"] <= allowed and under["ok"]


def run_check(tmp_path: Path, *extra: str, env=None) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "reference.check", "--world-size", str(WS), "--json", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    return proc, (json.loads(out.read_text()) if out.exists() else {})


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_one_ulp_mismatch_fails_the_check(tmp_path):
    proc, result = run_check(tmp_path, "--layers", "column", "--data", "exact", "--inject-mismatch")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MISMATCH" in proc.stdout
    bad = [r for r in result["rows"] if not r["ok"]]
    assert [(r["tensor"], r["bitwise"]) for r in bad] == [("out", False)]
    assert bad[0]["claim"] == "bitwise"


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS x86 kernel names")
def test_gpt_passes_under_another_openblas_kernel_and_mkl_isa(tmp_path):
    """The GPT case that failed on an Intel Xeon (SP, padding, dropout), under OpenBLAS's Sandybridge
    kernels (AVX, any x86-64 made since 2011 runs them) and MKL held to AVX2, one thread."""
    env = dict(
        os.environ,
        OPENBLAS_CORETYPE="Sandybridge",
        MKL_ENABLE_INSTRUCTIONS="AVX2",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    proc, result = run_check(tmp_path, "--layers", "gpt", "--data", "exact", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in result["rows"] if r["layer"] == "gpt"]
    assert rows and all(r["ok"] and r["claim"] == "rounding" for r in rows)
    assert any("post_attention_layernorm.weight" in r["tensor"] for r in rows)


def test_cases_cover_every_layer_at_world_size_2():
    assert {c.layer for c in all_cases("float32")} == set(LAYERS)
