"""`python -m reference.check` end to end: it passes on a healthy pair of engines, and it can fail.

The failing run is honest: `--inject-mismatch` flips the lowest bit of one element of rank 0's output
(one ULP) after the layer ran, and the check must then exit 1 and mark that row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_check(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "reference.check", "--world-size", "2", "--json", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    return proc, (json.loads(out.read_text()) if out.exists() else {})


@pytest.mark.multiprocess
@pytest.mark.slow
def test_check_passes_at_world_size_2_and_writes_its_table(tmp_path):
    proc, result = run_check(tmp_path, "--layers", "column,row,embedding,loss,layernorm")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout
    assert result["ok"] and result["world_size"] == 2
    assert {r["layer"] for r in result["rows"]} == {"column", "row", "embedding", "loss", "layernorm"}
    assert all(r["ok"] for r in result["rows"])
    exact = [r for r in result["rows"] if r["claim"] == "bitwise"]
    assert exact and all(r["bitwise"] for r in exact)


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
@pytest.mark.parametrize("comm", ["native", "schedule"])
def test_check_passes_in_bfloat16(tmp_path, comm):
    """The CLI in bfloat16, the layers that go through tanh/exp/log/sqrt and a whole GPT: each tier's
    claim holds, and nothing silently ran (or moved) in float32."""
    layers = "mlp,attention,layernorm,loss,block,row,gpt"
    proc, result = run_check(tmp_path, "--dtype", "bfloat16", "--comm", comm, "--layers", layers)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["ok"] and {r["layer"] for r in result["rows"]} == set(layers.split(","))
    assert all(r["ok"] and r["dtype"] == "bfloat16" for r in result["rows"])
    assert all(r["close"] for r in result["rows"] if r["data"] == "float")
    assert all(not c["record_problems"] for c in result["cases"])  # same op, size and dtype as tpsim
    if comm == "schedule":
        assert all(c["ref_bytes"] == c["tpsim_bytes"] for c in result["cases"])
