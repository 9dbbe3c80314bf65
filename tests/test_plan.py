"""tpsim.plan against definitions: pipeline schedules counted by hand and by the formula, DP and PP bytes
against closed forms, the layout analysis against tpsim.nn.analyse, and the ranking of compare."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim import Mesh, presets
from tpsim.collectives import costs
from tpsim.nn.config import PRESETS, ConfigError, GPTConfig, llama_parameters, load_config, resolve
from tpsim.nn.gpt import analyse
from tpsim.plan import Layout, LayoutError, analyse_layout, bubble_fraction, check_layout, compare, simulate
from tpsim.plan.dp import gradient_sync
from tpsim.plan.layout import analyse_stage
from tpsim.plan.pipeline import PipelineError, stage_ops
from tpsim.plan.pp import stage_sends

SMALL = PRESETS["gpt3-1.3b"]


def test_gpipe_two_stages_two_microbatches_by_hand():
    # t_f = 1, t_b = 2: stage 1 starts F0 when stage 0 ends it; backward runs from the last stage down
    run = simulate("gpipe", 2, 2, 1.0, 2.0)
    assert sorted(run.events) == sorted(
        [
            (0, "F", 0, 0, 1),
            (0, "F", 1, 1, 2),
            (1, "F", 0, 1, 2),
            (1, "F", 1, 2, 3),
            (1, "B", 0, 3, 5),
            (1, "B", 1, 5, 7),
            (0, "B", 0, 5, 7),
            (0, "B", 1, 7, 9),
        ]
    )
    assert run.makespan == 9 and run.bubble == pytest.approx(1 / 3) == bubble_fraction(2, 2)


def test_1f1b_order_on_each_stage():
    assert stage_ops("1f1b", 3, 4, 0) == [
        ("F", 0),
        ("F", 1),
        ("F", 2),
        ("B", 0),
        ("F", 3),
        ("B", 1),
        ("B", 2),
        ("B", 3),
    ]
    assert stage_ops("1f1b", 3, 4, 2) == [
        ("F", 0),
        ("B", 0),
        ("F", 1),
        ("B", 1),
        ("F", 2),
        ("B", 2),
        ("F", 3),
        ("B", 3),
    ]


@given(
    st.sampled_from(["gpipe", "1f1b"]),
    st.integers(1, 8),
    st.integers(1, 24),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_bubble_of_the_run_schedule_is_the_formula(schedule, p, m, tf, tb):
    run = simulate(schedule, p, m, float(tf), float(tb))
    assert run.makespan == (m + p - 1) * (tf + tb)
    assert run.bubble == pytest.approx(bubble_fraction(p, m)) == pytest.approx((p - 1) / (m + p - 1))
    want = [m] * p if schedule == "gpipe" else [min(p - s, m) for s in range(p)]
    assert list(run.peak_in_flight) == want  # GPipe holds every microbatch; 1F1B at most p - s


def test_sends_lengthen_the_pipeline():
    assert simulate("1f1b", 4, 8, 1.0, 2.0, 0.5).makespan > simulate("1f1b", 4, 8, 1.0, 2.0).makespan


def test_pipeline_errors():
    with pytest.raises(PipelineError, match="unknown pipeline schedule 'zb'"):
        simulate("zb", 2, 2, 1, 1)
    with pytest.raises(PipelineError, match="microbatches = 0"):
        bubble_fraction(2, 0)


@given(st.integers(1, 6), st.sampled_from([1, 2]), st.sampled_from([1, 2]), st.integers(1, 50))
def test_dp_bytes_are_2_d_minus_1_over_d_of_the_grads_on_a_ring(d, tp, pp, k):
    n = d * 8 * k  # parameters per device, a multiple of d so the ring's chunks are equal
    topo = presets.fully_connected(tp * d * pp, alpha=1e-6, bandwidth=1e9)
    mesh = Mesh((pp, d, tp), names=("pp", "dp", "tp"), topology=topo)
    out = gradient_sync(mesh, n, "bfloat16", algorithm="ring")
    assert out["grad_bytes"] == 2 * n
    assert out["sent_per_device"] == 2 * (d - 1) * (2 * n) // d
    assert out["time"] == pytest.approx(costs.ring_all_reduce(d, 2 * n, 1e-6, 1e9))
    mesh2 = Mesh((pp, d, tp), names=("pp", "dp", "tp"), topology=topo)
    assert gradient_sync(mesh2, n, "bfloat16", zero1=True)["sent_per_device"] == out["sent_per_device"]


def test_dp_groups_share_nics_on_multi_node():
    # 2 nodes x 8; dp = 2 puts each pair on two nodes: 8 pairs at once, each device on its own NIC
    mesh = Mesh((1, 2, 8), names=("pp", "dp", "tp"), topology=presets.multi_node(2, 8))
    out = gradient_sync(mesh, 1 << 20, "bfloat16")
    assert out["time"] == pytest.approx(
        costs.ring_all_reduce(2, 2 << 20, presets.NIC_ALPHA, presets.NDR_BANDWIDTH)
    )


@pytest.mark.parametrize("pp", [2, 3, 4])
def test_pp_sends_one_activation_each_way_per_boundary(pp):
    topo = presets.fully_connected(2 * pp, alpha=1e-6, bandwidth=1e9)
    mesh = Mesh((pp, 1, 2), names=("pp", "dp", "tp"), topology=topo)
    out = stage_sends(mesh, (16, 2, 8), "bfloat16")
    act = 16 * 2 * 8 * 2
    assert out["send_bytes"] == act
    assert out["sent_per_device_per_microbatch"] == (2 * act if pp > 2 else act)  # a middle stage sends both
    assert out["send_time"] == pytest.approx(1e-6 + act / 1e9)
    assert sum(c.wire_bytes for c in mesh.trace.collectives) == 2 * (pp - 1) * 2 * act  # 2 tp ranks


def test_layout_without_dp_and_pp_is_analyse():
    topo = presets.nvlink_node(8)
    r = analyse_layout("gpt3-175b", Layout(8), topology=topo, global_batch=4)
    a = analyse("gpt3-175b", 8, topology=topo)
    assert r["traffic_detail"]["tp"]["per_microbatch"] == a["bytes_sent"]
    assert r["traffic_per_device"]["tp"] == 4 * (a["bytes_sent"]["forward"] + a["bytes_sent"]["backward"])
    assert r["traffic_per_device"]["dp"] == r["traffic_per_device"]["pp"] == 0
    mem = r["memory_per_device"]
    assert mem["weights"] == mem["grads"] == a["memory"]["weights"]
    assert mem["optimizer"] == 12 * a["memory"]["weights"] // 2 and mem["bytes_per_parameter"] == 16
    assert mem["activations"] == a["memory"]["activations"]  # one microbatch at a time without PP
    assert r["time"]["microbatch_forward"] == a["time"]["forward"]
    assert r["time"]["step"] == pytest.approx(4 * a["time"]["step"])


def test_stage_extended_from_two_layers_equals_the_full_run():
    topo = presets.nvlink_node(4)
    full = analyse_stage(SMALL, 4, True, 6, device="h100", topology=topo, exact=True)
    fast = analyse_stage(SMALL, 4, True, 6, device="h100", topology=topo, exact=False)
    assert fast["extrapolated"] and not full["extrapolated"]
    for key in ("parameters", "bytes_sent", "collectives"):
        assert fast[key] == full[key]
    for key in ("weights", "grads", "activations"):
        assert fast["memory"][key] == full["memory"][key]
    for key in ("forward", "backward", "step", "comm", "compute"):
        assert fast["time"][key] == pytest.approx(full["time"][key], rel=1e-9)


def test_pipeline_memory_holds_p_or_m_microbatches():
    topo = presets.multi_node(1, 8)
    kw = dict(topology=topo, global_batch=16)
    one = analyse_layout(SMALL, Layout(2, 1, 4), schedule="1f1b", **kw)["memory_per_device"]
    gp = analyse_layout(SMALL, Layout(2, 1, 4), schedule="gpipe", **kw)["memory_per_device"]
    assert one["microbatches_held"] == 4 and gp["microbatches_held"] == 16
    assert gp["activations"] == 4 * one["activations"] == 16 * one["activations_per_microbatch"]


def test_zero1_divides_the_optimizer_state_by_dp():
    topo = presets.multi_node(2, 8)
    plain = analyse_layout(SMALL, Layout(2, 4, 2), topology=topo, global_batch=16)["memory_per_device"]
    z = analyse_layout(SMALL, Layout(2, 4, 2), topology=topo, global_batch=16, zero1=True)[
        "memory_per_device"
    ]
    assert z["optimizer"] * 4 == plain["optimizer"] and z["weights"] == plain["weights"]


@pytest.mark.parametrize(
    ("layout", "devices", "match"),
    [
        (Layout(8, 2, 2), 16, r"tp \* dp \* pp = 8 \* 2 \* 2 = 32, but --devices is 16"),
        (Layout(5), None, r"--tp 5 does not divide gpt3-1.3b's num_heads = 16"),
        (Layout(2, 1, 5), None, r"--pp 5 does not divide gpt3-1.3b's 24 layers"),
        (Layout(1, 2, 1, sp=True), None, r"--sp needs --tp > 1"),
    ],
)
def test_check_layout_names_the_bad_degree(layout, devices, match):
    with pytest.raises(LayoutError, match=match):
        check_layout(SMALL, layout, devices)


def test_tp_stays_inside_a_node_unless_told():
    topo = presets.multi_node(2, 8)
    with pytest.raises(LayoutError, match="TP group of 16 would span nodes of 8"):
        check_layout(SMALL, Layout(16), topology=topo)
    check_layout(SMALL, Layout(16), topology=topo, tp_across_nodes=True)
    with pytest.raises(LayoutError, match="global batch 10 does not split into dp = 4"):
        analyse_layout(SMALL, Layout(2, 4, 2), topology=topo, global_batch=10)


def test_compare_ranks_fitting_layouts_first_by_step_time():
    r = compare(SMALL, 16, presets.multi_node(2, 8), global_batch=64)
    rows = r["rows"]
    assert [x["rank"] for x in rows] == list(range(1, len(rows) + 1))
    assert all(x["tp"] * x["dp"] * x["pp"] == 16 and x["tp"] <= 8 for x in rows)
    keys = [(not x["memory_per_device"]["fits"], x["time"]["step"]) for x in rows]
    assert keys == sorted(keys)
    names = {x["layout"] for x in rows} | {s["layout"] for s in r["skipped"]}
    assert {"TP1 DP16 PP1", "TP8 DP2 PP1 SP", "TP16 DP1 PP1"} <= names
    assert any("span nodes" in s["reason"] for s in r["skipped"])


def _gpt_extras(c: GPTConfig) -> int:
    """What the GPT stand-in has and a Llama lacks: biases, LayerNorm betas, learned positions."""
    h, f = c.hidden, c.ffn
    per_layer = (3 * h + h + f + h) + 2 * h  # qkv, o, fc1, fc2 biases; two LayerNorm betas
    return c.num_layers * per_layer + h + c.seq_len * h  # final LayerNorm's beta; position embeddings


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("llama2-7b", (32000, 4096, 32, 32, 32, 11008)),
        ("llama2-70b", (32000, 8192, 80, 64, 8, 28672)),
        ("llama3-8b", (128256, 4096, 32, 32, 8, 14336)),
        ("llama3-70b", (128256, 8192, 80, 64, 8, 28672)),
    ],
)
def test_llama_stand_ins_hold_the_llamas_linear_weights(name, shape):
    cfg = PRESETS[name]
    assert cfg.parameters() - _gpt_extras(cfg) == llama_parameters(*shape)
    assert not cfg.tied_embeddings and "stand-in" in cfg.notes and cfg.num_query_groups == shape[4]


def test_published_llama_sizes():
    assert llama_parameters(32000, 4096, 32, 32, 32, 11008) == 6_738_415_616  # Llama-2-7b
    assert llama_parameters(128256, 4096, 32, 32, 8, 14336) == 8_030_261_248  # Llama-3-8B


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_files(tmp_path, suffix):
    fields = dict(vocab_size=1000, hidden=64, num_layers=2, num_heads=8, seq_len=32, micro_batch=2)
    path = tmp_path / f"toy{suffix}"
    path.write_text(
        json.dumps(fields) if suffix == ".json" else "\n".join(f"{k} = {v}" for k, v in fields.items())
    )
    assert load_config(path) == GPTConfig(**fields, name="toy") == resolve(str(path))
    path.write_text(json.dumps({**fields, "hiden": 3}) if suffix == ".json" else "hiden = 3")
    with pytest.raises(ConfigError, match="unknown field 'hiden'; valid: vocab_size"):
        load_config(path)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="num_layers = 0; valid: an integer >= 1"):
        load_config(_write(tmp_path, dict(vocab_size=10, hidden=8, num_layers=0, num_heads=2, seq_len=4)))
    with pytest.raises(ConfigError, match="missing field 'seq_len'"):
        load_config(_write(tmp_path, dict(vocab_size=10, hidden=8, num_layers=1, num_heads=2)))
    with pytest.raises(ConfigError, match="unknown model 'gpt5'; valid: a preset"):
        resolve("gpt5")


def _write(tmp_path, d):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(d))
    return p
