"""The simulated plan with recomputation, its breakdown and MFU / HFU, and compare dropping what
does not fit: tpsim/plan/recompute.py hooked into layout.py and compare.py."""

from __future__ import annotations

import json

import pytest

from tpsim import presets
from tpsim.cli import main
from tpsim.hardware import DEVICES
from tpsim.plan import Layout, analyse_layout, compare
from tpsim.plan import flops as fl
from tpsim.plan.activations import RecomputeError

NODE = presets.nvlink_node(8)


@pytest.fixture(scope="module")
def runs():
    kw = dict(topology=NODE, global_batch=16, exact=False)
    return {
        m: analyse_layout("gpt3-1.3b", Layout(2, 2, 2), recompute=m, **kw)
        for m in ("none", "selective", "full")
    }


def test_recompute_adds_time_and_frees_activations(runs):
    steps = [runs[m]["time"]["step"] for m in ("none", "selective", "full")]
    acts = [runs[m]["memory_per_device"]["activations"] for m in ("none", "selective", "full")]
    assert steps == sorted(steps) and steps[0] < steps[2]
    assert acts[0] > acts[1] > acts[2]
    assert runs["none"]["time"]["breakdown"]["recompute"] == 0


@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_breakdown_adds_up_to_the_step(runs, mode):
    t = runs[mode]["time"]
    assert sum(t["breakdown"].values()) == pytest.approx(t["step"])
    assert min(t["breakdown"].values()) >= 0


def test_mfu_counts_model_flops_and_hfu_the_recomputed_ones(runs):
    r = runs["full"]
    h, L, V = 2048, 24, 51200  # gpt3-1.3b
    model = fl.model_flops(16, 2048, L, h, V)
    peak = DEVICES["h100"].peak("bfloat16")
    assert r["utilisation"]["mfu"] == pytest.approx(model / (r["time"]["step"] * 8 * peak))
    assert r["utilisation"]["hfu"] / r["utilisation"]["mfu"] == pytest.approx(
        fl.hardware_flops(16, 2048, L, h, V, "full") / model
    )


def test_unknown_recompute_mode_is_refused():
    with pytest.raises(RecomputeError, match="valid: none, selective, full"):
        analyse_layout("gpt3-1.3b", Layout(8), topology=NODE, global_batch=8, exact=False, recompute="half")


def test_compare_drops_layouts_that_do_not_fit():
    r = compare("gpt3-13b", 8, NODE, global_batch=16, drop_unfit=True)
    assert r["dropped"] and all(x["memory_per_device"]["fits"] for x in r["rows"])
    assert all("GiB per device" in d["reason"] for d in r["dropped"])
    kept = compare("gpt3-13b", 8, NODE, global_batch=16)
    assert len(kept["rows"]) == len(r["rows"]) + len(r["dropped"])


def test_cli_model_and_compare_show_recompute_mfu_and_drops(capsys):
    assert (
        main(["model", "gpt3-1.3b", "--tp", "8", "--global-batch", "8", "--fast", "--recompute", "full"]) == 0
    )
    out = capsys.readouterr().out
    assert "MFU / HFU" in out and "recompute full" in out and "step, broken down" in out
    main(["compare", "--model", "gpt3-13b", "--devices", "8", "--global-batch", "16", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["dropped"] and all(x["memory_per_device"]["fits"] for x in doc["rows"])


def test_bytes_are_unchanged_by_time_model_options_but_full_recompute_reruns_the_forward(runs):
    tr = {m: runs[m]["traffic_per_device"] for m in runs}
    assert tr["none"] == tr["selective"]
    fwd = runs["none"]["traffic_detail"]["tp"]["per_microbatch"]["forward"] * runs["none"]["microbatches"]
    assert tr["full"]["tp"] == tr["none"]["tp"] + fwd
    assert (tr["full"]["dp"], tr["full"]["pp"]) == (tr["none"]["dp"], tr["none"]["pp"])


def test_cli_model_realistic_names_its_mode_and_node(capsys):
    argv = ["model", "gpt3-1.3b", "--tp", "8", "--global-batch", "8", "--fast", "--realistic", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)["realistic"]
    assert r["mode"] == "realistic" and r["cluster"].startswith("NVIDIA DGX H100")
    assert "auto" in r["collectives"] and "achievable bandwidths" in r["collectives"]
    assert sum(
        r["time"][k]
        for k in ("compute", "recompute", "tp_comm", "pp_comm", "pp_bubble", "dp_comm", "optimizer")
    ) == (pytest.approx(r["time"]["iteration"]))
    assert main(["model", "gpt3-1.3b", "--tp", "8", "--global-batch", "8", "--fast", "--realistic"]) == 0
    assert "Closed-form iteration, mode realistic: fused kernels" in capsys.readouterr().out


def test_compare_says_why_the_winner_wins():
    r = compare("gpt3-1.3b", 8, NODE, global_batch=16)
    w, (first, second) = r["why"], r["rows"][:2]
    assert (w["winner"], w["runner_up"]) == (first["layout"], second["layout"])
    assert w["margin"] == pytest.approx(second["time"]["step"] - first["time"]["step"]) and w["margin"] >= 0
    assert sum(w["saved_by_part"].values()) == pytest.approx(w["margin"])
