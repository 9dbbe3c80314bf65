"""A device brings its own node: every command, every device preset, never another device's links."""

from __future__ import annotations

import json

import pytest

from tpsim import presets
from tpsim.cli import main
from tpsim.errors import TopologyError
from tpsim.hardware import DEVICES
from tpsim.nn.config import GPTConfig
from tpsim.nodes import BY_DEVICE, NODES

SMALL = {
    "collective": ["collective", "all-reduce", "--size", "1MiB"],
    "layer": ["layer", "mlp", "--hidden", "256", "--heads", "2", "--seq", "64"],
    "model": ["model", "gpt3-1.3b", "--fast", "--global-batch", "8"],
    "compare": ["compare", "--model", "gpt3-1.3b", "--global-batch", "8", "--top", "1"],
}


def command(name: str, n: int, *extra: str) -> list[str]:
    """`name` on n devices, in the small shapes above."""
    size = {"collective": ["--devices", str(n)], "layer": ["--tp", str(n)], "compare": ["--devices", str(n)]}
    size["model"] = ["--tp", str(min(n, 8)), "--dp", str(max(n // 8, 1))]
    return [*SMALL[name], *size[name], *extra]


def run(capsys, argv: list[str]) -> tuple[dict, str]:
    """(--json result, plain text output) of one command."""
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    return result, capsys.readouterr().out


def fails(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_every_device_has_one_node_and_every_node_one_device():
    assert sorted(BY_DEVICE) == sorted(DEVICES)
    assert sorted(n.device for n in NODES.values()) == sorted(DEVICES)


@pytest.mark.parametrize(
    ("device", "node", "gpus", "link", "nic"),
    [
        ("v100", "dgx-2", 16, 150e9, 100e9 / 8 / 2),  # 300 GB/s both ways; 8 x 100 Gb/s for 16 GPUs
        ("a100", "dgx-a100", 8, 300e9, 200e9 / 8),  # 600 GB/s both ways; 8 x 200 Gb/s HDR
        ("h100", "dgx-h100", 8, 450e9, 400e9 / 8),  # 900 GB/s both ways; 8 x 400 Gb/s NDR
        ("h200", "dgx-h200", 8, 450e9, 400e9 / 8),
        ("l40s", "pcie-l40s", 8, 32e9, None),  # PCIe Gen4 x16: 64 GB/s both ways; no NVLink
    ],
)
def test_each_device_has_its_standard_node(device, node, gpus, link, nic):
    n = BY_DEVICE[device]
    assert (n.name, n.gpus, n.link.nominal) == (node, gpus, link)
    assert (n.nic.nominal if n.nic else None) == nic
    one = presets.preset(node, gpus)
    assert one.name == node and one.kind == "switch" and set(one.bandwidths) == {link}
    if nic is not None:
        two = presets.preset(node, 2 * gpus)
        assert two.kind == "hierarchical" and set(two.bandwidths) == {link, nic}


@pytest.mark.parametrize("name", sorted(NODES))
def test_nodes_carry_sources_and_an_achievable_rate_below_the_nominal(name):
    node = NODES[name]
    for bw in filter(None, (node.link, node.nic)):
        assert 0 < bw.achievable < bw.nominal
        assert "datasheet" in bw.nominal_source
        assert bw.achievable_source.startswith(("measured (published)", "assumption"))
    assert "datasheet" in node.source and "(20" in node.source  # named and dated
    achievable = presets.preset(name, node.gpus, achievable=True)
    assert set(achievable.bandwidths) == {node.link.achievable}
    assert node.link.achievable_source in achievable.source


def test_the_measured_fraction_is_the_published_a100_busbw():
    a100 = NODES["dgx-a100"].link
    assert a100.achievable == 231.58e9 and a100.achievable_source.startswith("measured (published)")
    h100 = NODES["dgx-h100"].link
    assert h100.achievable == pytest.approx(450e9 * 231.58 / 300) and "assumption" in h100.achievable_source


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_a_preset_has_one_name_which_is_its_topology_name(name):
    assert presets.preset(name, 4).name == name


def test_old_names_are_aliases_or_say_the_new_one():
    assert presets.preset("nvlink", 8) == presets.preset("dgx-h100", 8)
    assert presets.preset("multi-node", 16) == presets.preset("dgx-h100", 16)
    assert "nvlink" not in list(presets.PRESETS) and "nvlink" in presets.PRESETS
    with pytest.raises(presets.TopologyError, match="'nvlink-a100' is now 'dgx-a100'"):
        presets.preset("nvlink-a100", 8)


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_device_alone_runs_on_its_own_node(capsys, name, device):
    node = BY_DEVICE[device]
    result, text = run(capsys, command(name, 8, "--device", device))
    m = result["machine"]
    assert (m["device"], m["device_name"]) == (device, DEVICES[device].name)
    assert (m["topology"], m["standard_node"], m["chosen_by"]) == (node.name, node.name, "default")
    assert not m["mismatch"] and result["topology"] == node.name
    assert text.splitlines()[0] == m["line"]
    assert m["line"].startswith(f"machine: {DEVICES[device].name} on {node.name}, 8 devices")
    assert f"{node.link.nominal / 1e9:.4g} GB/s" in m["line"] and f"{device}'s standard node" in m["line"]


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_beyond_one_node_it_is_still_its_own_fabric(capsys, name, device):
    """Two nodes' worth of devices: the node's own InfiniBand, or an error, never another device's."""
    node = BY_DEVICE[device]
    argv = command(name, 2 * node.gpus, "--device", device)
    if node.nic is None:
        assert f"{node.name} is one node of {node.gpus} GPUs" in fails(capsys, argv)
        return
    result, _ = run(capsys, argv)
    assert result["machine"]["topology"] == node.name
    topo = presets.preset(node.name, 2 * node.gpus)
    assert set(topo.bandwidths) == {node.link.nominal, node.nic.nominal}
    assert node.nic.nominal_source in result["machine"]["topology_source"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_another_devices_node_is_an_error_naming_both(capsys, name):
    err = fails(capsys, command(name, 8, "--device", "v100", "--topology", "dgx-h100"))
    assert "--topology dgx-h100 is the NVIDIA DGX H100 node of h100, not of --device v100" in err
    assert "valid for v100: dgx-2" in err and "--allow-mismatch" in err


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_mismatch_asked_for_runs_and_says_so(capsys, name):
    argv = command(name, 8, "--device", "v100", "--topology", "dgx-h100", "--allow-mismatch")
    result, text = run(capsys, argv)
    m = result["machine"]
    assert m["mismatch"] and m["topology"] == "dgx-h100" and m["standard_node"] == "dgx-2"
    assert "h100's node, NOT v100's (dgx-2): allowed by --allow-mismatch" in text.splitlines()[0]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_generic_topologies_belong_to_no_device(capsys, name):
    result, _ = run(capsys, command(name, 8, "--device", "a100", "--topology", "pcie4"))
    m = result["machine"]
    assert (m["topology"], m["chosen_by"], m["mismatch"]) == ("pcie4", "--topology", False)
    assert "links at 32 GB/s per direction; PCI-SIG" in m["line"]
    assert m["line"].endswith("as --topology asked")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_achievable_rates_on_request(capsys, name):
    result, _ = run(capsys, command(name, 8, "--device", "a100", "--bandwidth", "achievable"))
    m = result["machine"]
    assert m["bandwidth"] == "achievable" and "231.6 GB/s" in m["line"]
    assert "measured (published)" in m["topology_source"]


def test_collective_time_follows_the_devices_own_link(capsys):
    """The same all-reduce on each device's node: time scales with that node's link, nothing else."""
    times = {}
    for device, node in BY_DEVICE.items():
        result, _ = run(capsys, command("collective", 8, "--device", device, "--size", "256MiB"))
        times[device] = result["time"]
        assert result["closed_form"]["bandwidth"] == node.link.nominal
    assert times["l40s"] > times["v100"] > times["a100"] > times["h100"] == times["h200"] > 0


def test_a_saved_device_preset_takes_the_node_its_name_names(capsys, tmp_path):
    from dataclasses import replace

    from tpsim import device_io

    measured = device_io.save(
        replace(DEVICES["a100"], name="nvidia-a100-sxm4-80gb-2026-12-06"), tmp_path / "a.json"
    )
    result, _ = run(capsys, command("collective", 8, "--device", str(measured)))
    assert (result["machine"]["topology"], result["machine"]["standard_node"]) == ("dgx-a100", "dgx-a100")
    unknown = device_io.save(replace(DEVICES["a100"], name="some-accelerator"), tmp_path / "b.json")
    err = fails(capsys, command("collective", 8, "--device", str(unknown)))
    assert f"device '{unknown}' names no standard node" in err and "pass --topology" in err
    result, _ = run(capsys, command("collective", 8, "--device", str(unknown), "--topology", "dgx-h100"))
    assert result["machine"]["topology"] == "dgx-h100" and not result["machine"]["mismatch"]


@pytest.mark.parametrize("device", sorted(BY_DEVICE))
def test_the_layer_analyses_default_to_the_devices_own_node(device):
    """gpt.analyse and tp_efficiency without a topology run on the device's node, never on H100's."""
    from tpsim.nn import gpt
    from tpsim.nn.timeline import tp_efficiency
    from tpsim.viz.costs import block_builder

    cfg = GPTConfig(64, 64, 1, 4, 16, name="tiny")
    assert gpt.analyse(cfg, tp=2, device=device)["topology"].startswith(BY_DEVICE[device].name)
    rows = tp_efficiency(block_builder(cfg, False), [2], device=device)
    assert {r["topology"] for r in rows} == {BY_DEVICE[device].name}


def test_a_device_without_a_node_asks_for_a_topology():
    from tpsim.hardware import DeviceSpec
    from tpsim.presets import for_device

    custom = DeviceSpec("my-gpu", {"float32": 1e12}, 1e11, 1 << 30, "test")
    with pytest.raises(TopologyError, match=r"my-gpu.*no standard node.*valid devices"):
        for_device(custom, 2)
