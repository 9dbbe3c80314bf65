"""`tpsim fit-gemm`: a table made from known parameters comes back fitted, as text and as JSON."""

from __future__ import annotations

import json

import pytest

from tpsim.cli import main
from tpsim.efficiency import EFFICIENCIES

TRUE = EFFICIENCIES["a100"].with_(gemm_fraction=0.75, k_half=50.0, launch=6e-6)
SHAPES = [(512, 512, 64), (1024, 1024, 128), (4096, 4096, 4096), (2048, 8192, 256), (8192, 1536, 1024)]


@pytest.fixture
def table(tmp_path):
    peak = 312e12
    rows = [
        dict(m=m, n=n, k=k, seconds=TRUE.launch + 2 * m * n * k / (TRUE.gemm(m, n, k) * peak))
        for m, n, k in SHAPES
    ]
    path = tmp_path / "gemms.json"
    path.write_text(json.dumps(rows))
    return path


def test_fit_gemm_recovers_a_table(table, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit-gemm", "--table", str(table), "--device", "a100", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fitted"]["gemm_fraction"] == pytest.approx(0.75, rel=1e-9)
    assert doc["fitted"]["k_half"] == pytest.approx(50.0, rel=1e-9)
    assert doc["max_abs_error"] < 1e-9
    assert json.loads(out.read_text())["fitted"]["tile"] == list(TRUE.tile)


def test_fit_gemm_text_names_its_source_and_errors(table, capsys):
    main(["fit-gemm", "--table", str(table), "--device", "a100"])
    text = capsys.readouterr().out
    assert "gemm_fraction 0.750" in text and "peak 312 TFLOP/s (datasheet)" in text
    assert text.count("+0.0%") + text.count("-0.0%") == len(SHAPES)


def test_fit_gemm_needs_a_source(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit-gemm"])
    assert e.value.code == 2
    assert "one of the arguments --numpy --gpu-report --table is required" in capsys.readouterr().err


def test_fit_gemm_reads_a_gpu_reports_compute_section(tmp_path, capsys):
    true = EFFICIENCIES["h100"].with_(gemm_fraction=0.8, k_half=70.0, launch=5e-6)
    peak = 989.4e12
    shapes = [(8192, 8192, 8192), (16384, 6144, 1536), (16384, 1536, 6144), (6144, 1536, 16384)]
    records = [
        dict(
            kind="gemm",
            m=m,
            n=n,
            k=k,
            dtype="bfloat16",
            tf32=False,
            seconds=true.launch + 2 * m * n * k / (true.gemm(m, n, k) * peak),
        )
        for m, n, k in shapes
    ]
    records.append(dict(kind="copy", bytes=1 << 30, seconds=1e-3, read_write_bytes_per_s=2e12))
    report = tmp_path / "h100.json"
    report.write_text(json.dumps({"meta": {}, "sections": [{"name": "compute", "records": records}]}))
    assert main(["fit-gemm", "--gpu-report", str(report), "--device", "h100", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fitted"]["gemm_fraction"] == pytest.approx(0.8, rel=1e-9)
    assert doc["fitted"]["sms"] == 132 and doc["fitted"]["tile"] == [128, 256]
    assert len(doc["rows"]) == len(shapes)


def test_a_fit_file_drives_the_realistic_model(table, tmp_path, capsys):
    out = tmp_path / "fit.json"
    main(["fit-gemm", "--table", str(table), "--device", "a100", "--out", str(out), "--quiet"])
    capsys.readouterr()
    argv = [
        "model",
        "gpt3-1.3b",
        "--tp",
        "8",
        "--global-batch",
        "8",
        "--fast",
        "--device",
        "a100",
        "--realistic",
    ]
    main([*argv, "--json"])
    preset = json.loads(capsys.readouterr().out)["realistic"]
    main([*argv, "--efficiency", str(out), "--json"])
    fitted = json.loads(capsys.readouterr().out)["realistic"]
    assert "given efficiency: a100" in fitted["mode"]
    assert fitted["time"]["iteration"] != preset["time"]["iteration"]  # 0.75 of peak, not the preset's


def test_model_realistic_writes_the_overlap_trace(tmp_path, capsys):
    trace = tmp_path / "overlap.json"
    argv = ["model", "gpt3-1.3b", "--tp", "2", "--pp", "2", "--sp", "--global-batch", "8", "--fast"]
    main([*argv, "--realistic", "--json"])
    closed = json.loads(capsys.readouterr().out)["realistic"]
    main([*argv, "--realistic", "--tp-overlap", "--trace", str(trace)])
    out = capsys.readouterr().out
    assert "Stream-timeline iteration (tp_overlap)" in out
    main([*argv, "--realistic", "--tp-overlap", "--json"])
    overlapped = json.loads(capsys.readouterr().out)["realistic"]
    assert overlapped["time"]["iteration"] < closed["time"]["iteration"]
    stages = {e["pid"] for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"}
    assert stages == {0, 1}
