"""The committed validation table (benchmarks/results/validation.*) is what the model computes now."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from tpsim.plan import validate

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def doc():
    return validate.report()


@pytest.mark.parametrize("mode", ["realistic", "peak"])
def test_committed_figures_are_regenerated(doc, mode):
    committed = json.loads((RESULTS / "validation.json").read_text())[mode]
    for part in ("comparisons", "holdout"):
        for key in ("published", "predicted", "error"):
            np.testing.assert_allclose(
                [r[key] for r in doc[mode][part]], [r[key] for r in committed[part]], rtol=1e-9
            )
    assert [r["quantity"] for r in doc[mode]["comparisons"]] == [
        r["quantity"] for r in committed["comparisons"]
    ]


def test_committed_markdown_is_regenerated(doc):
    script = importlib.import_module("benchmarks.validate_megatron")
    assert script.markdown(doc) == (RESULTS / "validation.md").read_text() == script.DOCS.read_text()


def test_published_figures_are_the_papers(doc):
    rows = {r["quantity"]: r["published"] for r in doc["realistic"]["comparisons"]}
    assert rows["1.2B, 1 GPU: TFLOP/s per GPU"] == 39.0
    assert [rows[f"{n}, TP {t}: weak scaling"] for n, t in (("2.5B", 2), ("4.2B", 4), ("8.3B", 8))] == [
        0.95,
        0.82,
        0.77,
    ]
    assert rows["8.3B, TP 8 x DP 64: PFLOP/s"] == 15.1


def test_the_efficiency_model_predicts_better_than_the_datasheet_peak(doc):
    assert doc["realistic"]["summary"]["median_abs_error"] < doc["peak"]["summary"]["median_abs_error"]
    assert doc["realistic"]["summary"]["max_abs_error"] < doc["peak"]["summary"]["max_abs_error"]
