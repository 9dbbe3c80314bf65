"""GEMM and memory-op efficiency (tpsim/efficiency.py) and its fit (tpsim/efficiency_fit.py).

The oracle: the definitions in efficiency.py's docstring (tiles, waves, the k-loop), the datasheet
roofline for the peak mode, and a table generated from known parameters for the fit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.efficiency import EFFICIENCIES, PUBLISHED, Efficiency, efficiency_for, gemm_time, memory_time
from tpsim.efficiency_fit import FitError, fit, gpu_report_table, measure_numpy
from tpsim.errors import TopologyError
from tpsim.hardware import DEVICES

dims = st.integers(1, 1 << 15)


@pytest.mark.parametrize("key", sorted(EFFICIENCIES))
def test_presets_name_their_source_and_stay_below_peak(key):
    e = EFFICIENCIES[key]
    assert key in DEVICES and e.device == key
    assert 0 < e.gemm_fraction <= 1 and 0 < e.memory_fraction <= 1
    assert e.source and e.date and e.sms > 0


@given(m=dims, n=dims, batch=st.integers(1, 64))
def test_quantization_is_the_useful_share_of_the_waves(m, n, batch):
    e = EFFICIENCIES["h100"]
    tm, tn = e.tile
    tiles = batch * math.ceil(m / tm) * math.ceil(n / tn)
    waves = math.ceil(tiles / e.sms)
    q = e.quantization(m, n, batch)
    assert 0 < q <= 1
    assert q == pytest.approx(batch * m * n / (waves * e.sms * tm * tn))


def test_one_tile_past_a_full_wave_costs_a_whole_wave():
    e = Efficiency("x", 1.0, 4, (128, 128), 0, 1.0, 0.0, "test", "now")
    assert e.quantization(128 * 4, 128) == 1.0  # 4 tiles, 4 SMs: one full wave
    assert e.quantization(128 * 5, 128) == pytest.approx(5 / 8)  # 5 tiles: 2 waves, 3 SMs idle in the second


@given(m=dims, n=dims, k=dims, batch=st.integers(1, 64), key=st.sampled_from(sorted(EFFICIENCIES)))
def test_split_k_fills_one_wave_and_never_lowers_the_efficiency(m, n, k, batch, key):
    e = EFFICIENCIES[key]
    tm, tn = e.tile
    tiles = batch * math.ceil(m / tm) * math.ceil(n / tn)
    s = e.splits(m, n, k, batch)
    unsplit = e.gemm_fraction * e.quantization(m, n, batch) * k / (k + e.k_half)
    if tiles >= e.sms:  # a wave or more of tiles: no split, the docstring's plain formula
        assert s == 1 and e.gemm(m, n, k, batch) == unsplit
        assert e.split_k_bytes(m, n, k, batch) == 0
    else:  # at most one wave of work units, each slice at least split_k_min of k (or k itself)
        assert s >= 1 and s * tiles <= e.sms and (s == 1 or k / s >= e.split_k_min)
        assert e.quantization(m, n, batch, k) == pytest.approx(s * batch * m * n / (e.sms * tm * tn))
        assert e.gemm(m, n, k, batch) >= unsplit * (1 - 1e-12)
    assert e.gemm(m, n, k, batch) <= e.gemm_fraction


def test_a_decode_gemm_is_split_along_k_and_bound_by_its_bytes():
    """Llama-3 70B's QKV at TP 4 and batch 8 on an H100: (8, 8192) @ (8192, 2560).  Its 10 tiles of
    128 x 256 would leave 122 of 132 SMs idle; 13 slices of k fill 130 of them, and the FLOPs then take
    less time than reading the 42 MB of weights, as decode's GEMMs do."""
    e, spec = EFFICIENCIES["h100"], DEVICES["h100"]
    m, n, k = 8, 2560, 8192
    assert e.splits(m, n, k) == 132 // 10 == 13
    operands = (m * k + k * n + m * n) * 2
    partials = 2 * 13 * m * n * 4  # each slice writes its fp32 (m, n), the sum reads them
    expected = e.launch + (operands + partials) / (e.memory_fraction * spec.memory_bandwidth)
    assert gemm_time(spec, e, m, n, k, "bfloat16") == pytest.approx(expected, rel=1e-12)
    one_thin_wave = e.gemm_fraction * e.quantization(m, n) * k / (k + e.k_half)
    unsplit = 2 * m * n * k / (one_thin_wave * spec.peak("bfloat16"))
    assert unsplit > 4 * (expected - e.launch)  # without split-K the one thin wave would decide it


@given(m=dims, n=dims, k=dims, k2=dims)
def test_efficiency_grows_with_k(m, n, k, k2):
    e = EFFICIENCIES["a100"]
    lo, hi = sorted((k, k2))
    assert e.gemm(m, n, lo) <= e.gemm(m, n, hi) <= e.gemm_fraction


@settings(max_examples=50)
@given(m=dims, n=dims, k=dims, key=st.sampled_from(sorted(EFFICIENCIES)))
def test_peak_mode_is_the_roofline_and_realistic_is_never_faster(m, n, k, key):
    spec = DEVICES[key]
    flops, nbytes = 2 * m * n * k, 2 * (m * k + k * n + m * n)
    assert gemm_time(spec, None, m, n, k, "bfloat16") == spec.time(flops, nbytes, "bfloat16")
    assert gemm_time(spec, efficiency_for(key), m, n, k, "bfloat16") >= spec.time(flops, nbytes, "bfloat16")


def test_memory_op_runs_at_the_achievable_bandwidth():
    spec, e = DEVICES["h100"], EFFICIENCIES["h100"]
    assert memory_time(spec, e, 1e9) == pytest.approx(
        e.launch + 1e9 / (e.memory_fraction * spec.memory_bandwidth)
    )
    assert memory_time(spec, None, 1e9) == pytest.approx(1e9 / spec.memory_bandwidth)


def test_unknown_mode_or_device_is_refused():
    with pytest.raises(TopologyError, match="valid: realistic, peak"):
        efficiency_for("h100", "best")
    with pytest.raises(TopologyError, match="known: v100"):
        efficiency_for("tpu")
    assert efficiency_for("tpu", "peak") is None


def _table(e: Efficiency, peak: float) -> list[dict]:
    shapes = [(512, 512, 64), (1024, 1024, 128), (4096, 4096, 4096), (2048, 8192, 256), (128, 128, 32)]
    return [
        dict(m=m, n=n, k=k, dtype="bfloat16", seconds=e.launch + 2 * m * n * k / (e.gemm(m, n, k) * peak))
        for m, n, k in shapes
    ]


def test_fit_recovers_the_parameters_that_made_the_table():
    true = EFFICIENCIES["h100"].with_(gemm_fraction=0.7, k_half=96, launch=4e-6)
    start = true.with_(gemm_fraction=1.0, k_half=0, launch=0.0)
    fitted, report = fit(_table(true, 989e12), start, 989e12)
    assert fitted.gemm_fraction == pytest.approx(0.7, rel=1e-9)
    assert fitted.k_half == pytest.approx(96, rel=1e-9)
    assert fitted.launch == pytest.approx(4e-6, rel=1e-6)
    assert report["max_abs_error"] < 1e-9


def test_fit_refuses_too_few_rows():
    with pytest.raises(FitError, match="at least 3"):
        fit(_table(EFFICIENCIES["h100"], 989e12)[:2], EFFICIENCIES["h100"], 989e12)


def test_numpy_gemms_measure_and_fit():
    table = measure_numpy(
        [(64, 64, 64), (128, 128, 32), (128, 128, 128), (256, 128, 64)], reps=1, min_s=0.002
    )
    assert [r["seconds"] > 0 for r in table] == [True] * 4
    cpu = Efficiency("numpy", 1.0, 1, (1, 1), 0, 1.0, 0.0, "fit", "now")
    peak = max(2 * r["m"] * r["n"] * r["k"] / r["seconds"] for r in table)
    fitted, report = fit(table, cpu, peak)
    assert fitted.gemm_fraction > 0 and len(report["rows"]) == 4


def test_gpu_report_gemm_records_are_read(tmp_path):
    records = [
        dict(kind="square", m=4096, n=4096, k=4096, dtype="bfloat16", tf32=False, seconds=2e-4),
        dict(kind="gemm", m=8192, n=1536, k=1024, dtype="bfloat16", tf32=False, seconds=3e-5),
        dict(kind="gemm", m=8192, n=1536, k=1024, dtype="float32", tf32=True, seconds=9e-5),
        dict(kind="copy", bytes=1 << 30, seconds=1e-3, read_write_bytes_per_s=2e12),
    ]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": {}, "sections": [{"name": "compute", "records": records}]}))
    rows = gpu_report_table(path)
    assert [(r["m"], r["k"]) for r in rows] == [(4096, 4096), (8192, 1024)]
    np.testing.assert_array_equal([r["seconds"] for r in rows], [2e-4, 3e-5])


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_the_curve_passes_through_the_published_gemm_figure(key):
    """A published rate is a point on the curve, at its own shape (with its quantization and k-loop)."""
    fraction, (m, n, k) = PUBLISHED[key]
    e = EFFICIENCIES[key]
    assert e.gemm(m, n, k) == pytest.approx(fraction, rel=1e-12)
    assert fraction < e.gemm_fraction <= 1  # the limit lies above the figure measured at a finite shape
    assert f"{m}, {n}, {k}" in e.source
