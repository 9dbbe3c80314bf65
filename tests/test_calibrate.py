"""Calibration: the least-squares fit recovers alpha and beta from the closed forms; a small real sweep on
gloo (2 ranks) writes a topology file that the other commands take."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.cli import main
from tpsim.cli.fit import FitError, coefficients, fit
from tpsim.collectives import Collective, costs
from tpsim.collectives.algorithms import ALGORITHMS
from tpsim.topology import Topology

SIZES = [1 << k for k in range(10, 27, 2)]
PAIRS = [
    (c, a)
    for c in (Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.REDUCE_SCATTER)
    for a in ALGORITHMS[c]
]


@given(st.sampled_from(PAIRS), st.integers(2, 9), st.floats(1e-7, 1e-3), st.floats(1e8, 1e12))
def test_fit_recovers_alpha_and_beta_from_the_closed_form(pair, p, alpha, bandwidth):
    collective, algorithm = pair
    times = [costs.cost(collective, algorithm, p, s, alpha, bandwidth) for s in SIZES]
    f = fit(collective, algorithm, p, SIZES, times)
    assert f["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert f["bandwidth"] == pytest.approx(bandwidth, rel=1e-6)
    assert f["max_abs_error"] < 1e-9


def test_coefficients_of_the_ring_all_reduce():
    a, b = coefficients(Collective.ALL_REDUCE, "ring", 4, [1024, 4096])
    assert a.tolist() == [6, 6] and b.tolist() == [
        6 / 4 * 1024,
        6 / 4 * 4096,
    ]  # 2(p-1) alpha + 2(p-1)/p S beta


def test_fit_keeps_alpha_and_beta_non_negative():
    # times that fall with size: least squares would want beta < 0; the fit puts it at 0
    f = fit(Collective.ALL_REDUCE, "ring", 2, [1024, 1 << 20], [2e-3, 1e-3])
    assert f["beta"] == 0 and f["bandwidth"] is None and f["alpha"] > 0
    with pytest.raises(FitError, match="at least 2 sizes"):
        fit(Collective.ALL_REDUCE, "ring", 2, [1024], [1e-3])
    with pytest.raises(FitError, match="finite and > 0"):
        fit(Collective.ALL_REDUCE, "ring", 2, [1024, 2048], [1e-3, 0.0])


# Measured times are checked for units only (seconds: a 2-rank gloo call takes more than 1 us and less
# than 10 s), not against the fit: on 2 shared cores one descheduled call moves a 1 KiB time ten-fold,
# so a closeness bound would be flaky.  The fit itself is checked exactly above and, below, to be the
# least-squares fit of exactly the measurements the file reports.
PLAUSIBLE_S = (1e-6, 10.0)


@pytest.mark.multiprocess
def test_calibrate_small_sweep_writes_a_usable_topology(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("reference.comm")
    out = tmp_path / "cal.json"
    assert (
        main(
            [
                "calibrate",
                "--sizes",
                "1KiB,1MiB,16MiB",  # 16 MiB: the bandwidth term stands well above scheduler noise
                "--reps",
                "3",
                "--statistic",
                "min",
                "--collectives",
                Collective.ALL_REDUCE,
                "--device",
                "cpu",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    ring = next(f for f in r["fits"] if f["algorithm"] == "ring")
    assert [q["size"] for q in ring["points"]] == [1024, 1 << 20, 1 << 24]
    for q in ring["points"]:  # the reported prediction is the closed form with the fitted alpha, beta
        assert q["predicted"] == pytest.approx(
            costs.ring_all_reduce(2, q["size"], ring["alpha"], ring["bandwidth"])
        )
        assert PLAUSIBLE_S[0] < q["measured"] < PLAUSIBLE_S[1]
    sizes, measured = [q["size"] for q in ring["points"]], [q["measured"] for q in ring["points"]]
    refit = fit(Collective.ALL_REDUCE, "ring", 2, sizes, measured)
    assert ring["alpha"] == pytest.approx(refit["alpha"]) and ring["beta"] == pytest.approx(refit["beta"])
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpu"] and doc["calibration"]["backend"]["name"] == "gloo"
    assert doc["calibration"]["statistic"] == "min"  # each point is the fastest of its calls
    native = [m for m in doc["calibration"]["measurements"] if m["mode"] == "native"]
    for q, row in zip(ring["points"], native, strict=True):
        assert q["size"] == row["size"] and q["measured"] == pytest.approx(min(row["calls"]))
    topo = Topology.load(out)
    assert topo.num_devices == 2 and topo.name.startswith("gloo-cpu-")
    assert (
        main(
            [
                "collective",
                "all-reduce",
                "--devices",
                "2",
                "--size",
                "1MiB",
                "--topology",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    c = json.loads(capsys.readouterr().out)
    point = next(q for q in ring["points"] if q["size"] == 1 << 20)
    assert c["time"] == pytest.approx(
        point["predicted"]
    )  # the simulator on the file predicts what the fit does


def test_calibrate_without_the_reference_says_to_run_from_the_checkout(monkeypatch):
    import sys

    from tpsim.cli.calibrate import CalibrationError, measure

    monkeypatch.setitem(sys.modules, "reference.launch", None)  # as if run outside the checkout
    with pytest.raises(CalibrationError, match=r"run it from the checkout's root: cd .* python -m tpsim"):
        measure(None, [], [])
