"""The tpsim command: --help everywhere, --json numbers against the library, and bad arguments (status 2)."""

from __future__ import annotations

import json

import pytest

from tpsim import presets
from tpsim.cli import main
from tpsim.cli.args import parse_size, parse_sizes, topology_for
from tpsim.collectives import costs
from tpsim.nn.gpt import analyse
from tpsim.topology import Topology

SUBCOMMANDS = ("collective", "layer", "model", "compare", "calibrate", "bench", "serve-plan")


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def fails(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tpsim {command}") and ("--json" in out)


def test_sizes():
    assert parse_size("64MiB") == 64 << 20 and parse_size("1KB") == 1000 and parse_size("512") == 512
    assert parse_sizes("1KiB..8KiB") == [1024, 2048, 4096, 8192]
    assert parse_sizes("1KiB,64KiB") == [1024, 65536]


@pytest.mark.parametrize(
    ("collective", "algorithm", "p"),
    [
        ("all-reduce", "ring", 8),
        ("all-gather", "ring", 6),
        ("reduce-scatter", "direct", 5),
        ("all-to-all", "pairwise", 4),
        ("all-reduce", "direct", 3),
    ],
)
def test_collective_json_is_the_closed_form(capsys, collective, algorithm, p):
    size = 60 * 1024 * p  # divides into p chunks of whole float32 elements
    r = run_json(
        capsys,
        "collective",
        collective,
        "--devices",
        str(p),
        "--algorithm",
        algorithm,
        "--size",
        str(size),
        "--topology",
        "fully-connected",
    )
    name = collective.replace("-", "_")
    assert r["collective"] == name and r["size"] == size
    assert set(r["sent_per_device"]) == {costs.bytes_sent_per_rank(name, algorithm, p, size)}
    # every pair has its own link: the engine's time is the closed form's
    want = costs.cost(name, algorithm, p, size, presets.ALPHA, presets.BANDWIDTH)
    assert r["time"] == pytest.approx(want) == pytest.approx(r["closed_form"]["time"])


def test_collective_steps_trace_and_plot(capsys, tmp_path):
    trace, png = tmp_path / "t.json", tmp_path / "t.png"
    r = run_json(
        capsys,
        "collective",
        "all-reduce",
        "--devices",
        "4",
        "--size",
        "1MiB",
        "--steps",
        "--trace",
        str(trace),
        "--plot",
        str(png),
    )
    assert len(r["per_step"]) == r["steps"] == 6  # ring: 2 (p - 1)
    assert sum(s["wire_bytes"] for s in r["per_step"]) == r["wire_bytes"] == 4 * 2 * 3 * (1 << 20) // 4
    assert json.loads(trace.read_text())["traceEvents"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_collective_text(capsys):
    assert main(["collective", "all-gather", "--devices", "4", "--size", "64KiB"]) == 0
    out = capsys.readouterr().out
    assert "all_gather (ring)" in out and "closed form" in out


def test_model_is_analyse(capsys):
    r = run_json(capsys, "model", "gpt3-175b", "--tp", "8", "--global-batch", "1")
    a = analyse("gpt3-175b", 8)
    assert r["traffic_detail"]["tp"]["per_microbatch"] == a["bytes_sent"]
    assert r["traffic_detail"]["tp"]["collectives"] == a["collectives"]
    assert r["memory_per_device"]["weights"] == a["memory"]["weights"]
    assert r["memory_per_device"]["activations"] == a["memory"]["activations"]
    assert r["time"]["step"] == pytest.approx(a["time"]["step"])
    assert r["topology"] == a["topology"] and r["stage"]["layers_simulated"] == 96


def test_model_3d_and_llama_note(capsys):
    r = run_json(
        capsys,
        "model",
        "llama2-7b",
        "--tp",
        "2",
        "--dp",
        "2",
        "--pp",
        "4",
        "--sp",
        "--fast",
        "--global-batch",
        "32",
    )
    assert r["devices"] == 16 and r["topology"] == "dgx-h100" and r["tp_inside_node"]
    assert r["microbatches"] == 16 and r["time"]["bubble_formula"] == pytest.approx(3 / 19)
    assert "exact Llama" in r["notes"] and r["traffic_per_device"]["pp"] > 0
    assert main(["model", "llama2-7b", "--tp", "2", "--fast"]) == 0
    assert "exact Llama" in capsys.readouterr().out  # which model ran is said in the text too


def test_layer_mlp_table(capsys):
    t, s, h = 4, 128, 256
    r = run_json(capsys, "layer", "mlp", "--hidden", str(h), "--seq", str(s), "--tp", str(t))
    rows = {(x["direction"], x["collective"]): x for x in r["communication"]}
    assert set(rows) == {("forward", "all_reduce"), ("backward", "all_reduce")}
    for x in rows.values():  # one all-reduce of s b h bf16 each way; a ring sends 2 (t-1)/t of it
        assert x["count"] == 1 and x["nbytes"] == s * h * 2
        assert x["sent_per_device"] == 2 * (t - 1) * s * h * 2 // t
    assert r["memory_per_device"]["weights"] == 2 * (2 * h * 4 * h // t + 4 * h // t + h)  # W1, W2, b1, b2
    assert r["time_per_device"]["comm"] > 0


def test_layer_block_sp(capsys):
    r = run_json(capsys, "layer", "block", "--model", "gpt3-1.3b", "--tp", "4", "--sp")
    kinds = {x["collective"] for x in r["communication"]}
    assert kinds == {"all_gather", "reduce_scatter", "all_reduce"}  # all_reduce: SP LayerNorm grads


def test_compare_json_ranks(capsys):
    r = run_json(capsys, "compare", "--model", "gpt3-1.3b", "--devices", "16", "--global-batch", "64")
    keys = [(not x["memory_per_device"]["fits"], x["time"]["step"]) for x in r["rows"]]
    assert keys == sorted(keys) and r["rows"][0]["rank"] == 1
    assert main(["compare", "--model", "gpt3-1.3b", "--devices", "8", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "TP sent" in out and "bubble" in out


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["collective", "all-reduce", "--size", "64XB"], "'64XB'"),
        (["collective", "all-reduce", "--algorithm", "rng"], "'rng'"),
        (["collective", "all-reduce", "--devices", "0"], "'0'"),
        (["collective", "bcast"], "'bcast'"),
        (["collective", "all-gather", "--devices", "3", "--size", "1000"], "--size 1000"),
        (["collective", "all-reduce", "--topology", "nvlnk"], "'nvlnk'"),
        (["layer", "attention", "--hidden", "1024", "--heads", "8", "--tp", "3"], "--tp 3"),
        (["layer", "conv"], "'conv'"),
        (["model", "gpt3-175b", "--tp", "8", "--dp", "2", "--devices", "8"], "8 * 2 * 1 = 16"),
        (["model", "gpt3-175b", "--tp", "7"], "--tp 7"),
        (["model", "gpt3-175b", "--tp", "8", "--pp", "5"], "--pp 5"),
        (["model", "gpt5"], "'gpt5'"),
        (["model", "gpt3-1.3b", "--tp", "2", "--dp", "3", "--global-batch", "10"], "global batch 10"),
        (["model", "gpt3-1.3b", "--tp", "16", "--devices", "16"], "TP group of 16"),
        (["model", "tiny", "--tp", "1", "--sp"], "--sp"),
        (["compare", "--model", "gpt3-1.3b"], "--devices"),
        (["compare", "--model", "gpt3-1.3b", "--devices", "12"], "dgx-h100 puts 8 GPUs in a node"),
        (["model", "gpt3-1.3b", "--tp", "2", "--schedule", "zb"], "'zb'"),
        (["calibrate", "--sizes", "1KiB", "--collectives", "broadcast"], "'broadcast'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(capsys, argv, names):
    err = fails(capsys, *argv)
    assert f"tpsim {argv[0]}: error:" in err and names in err


def test_topology_files(tmp_path, capsys):
    path = tmp_path / "two.json"
    presets.switch(2, alpha=3e-6, bandwidth=2e9).save(path)
    topo, note = topology_for(str(path), 8)
    assert topo.num_devices == 8 and "extended to 8" in note
    assert {(lk.alpha, lk.bandwidth) for lk in topo.links} == {(1.5e-6, 2e9)}  # switch ports: alpha / 2 each
    r = run_json(
        capsys, "collective", "all-reduce", "--devices", "8", "--size", "8MiB", "--topology", str(path)
    )
    assert r["closed_form"]["alpha"] == pytest.approx(3e-6) and r["topology_note"]
    presets.multi_node(2, 2).save(tmp_path / "mixed.json")
    assert "cannot be extended" in fails(
        capsys, "collective", "all-reduce", "--devices", "8", "--topology", str(tmp_path / "mixed.json")
    )
    assert Topology.load(path) == presets.switch(2, alpha=3e-6, bandwidth=2e9)


def test_no_arguments_is_the_demo(capsys):
    assert main(["demo", "--devices", "2", "--length", "2", "--size-mib", "1"]) == 0
    assert "all_reduce" in capsys.readouterr().out


def test_progress_bar_off_for_json_and_pipes():
    from argparse import Namespace

    from tpsim.cli.progress import enabled

    assert not enabled(Namespace(json=True, quiet=False))
    assert not enabled(Namespace(json=False, quiet=False))  # pytest's stderr is not a terminal


def test_bench_cli_quick(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "all.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--only", "cli", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] and doc["benchmarks"]["cli"]["status"] == "ok"
    case = doc["benchmarks"]["cli"]["results"]["model gpt3-175b --tp 8"]
    assert case["in_process_median_s"] > 0 and "step" in case["summary"]
    assert out.with_suffix(".md").read_text().startswith("# All benchmarks")


@pytest.mark.parametrize("p", [1, 3, 4])
def test_collective_holdings_follow_the_ring(capsys, p):
    """--holdings: before the first step each device holds its own data; after a ring all-reduce's
    2(p-1) steps every chunk on every device holds every device's contribution."""
    r = run_json(capsys, "collective", "all-reduce", "--devices", str(p), "--size", "4KiB", "--holdings")
    steps = r["holdings"]
    assert [s["step"] for s in steps] == list(range(r["steps"] + 1)) and r["steps"] == 2 * (p - 1)
    everyone = list(range(p))
    assert all(chunks == [[int(d)]] * len(chunks) for d, chunks in steps[0]["holds"].items())
    assert all(chunks == [everyone] * len(chunks) for chunks in steps[-1]["holds"].values())
    main(["collective", "all-reduce", "--devices", str(p), "--size", "4KiB", "--holdings"])
    text = capsys.readouterr().out
    assert text.count("dev0") >= len(steps) and "+".join(map(str, everyone)) in text


def test_collective_holdings_refuses_wide_worlds(capsys):
    assert "--holdings shows at most 16 devices, not --devices 17" in fails(
        capsys, "collective", "all-reduce", "--devices", "17", "--holdings"
    )
