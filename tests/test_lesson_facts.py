"""What the lessons state, checked against what they print when executed (issue 17's errors).

Each test runs only the lesson it reads (lesson_runs.executed_one), so `-k lesson_4` costs one notebook.
The right number comes from the definition here (a closed form, a count), and each test fails on the
number or sentence the lesson printed before it was fixed.
"""

from __future__ import annotations

import re

import pytest
from lesson_runs import ROOT, outputs_text

from tpsim.nn.config import PRESETS

SOURCES = ROOT / "scripts" / "lesson_sources"
pytestmark = pytest.mark.slow


def gpt_parameters(cfg, tied: bool) -> int:
    h, f = cfg.hidden, cfg.ffn
    layer = (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    untied = 0 if tied else cfg.vocab_size * h
    return cfg.num_layers * layer + cfg.vocab_size * h + cfg.seq_len * h + 2 * h + untied


def test_lesson_1_counts_gpt3_with_its_tied_output_layer():
    """GPT-3 ties its output layer to the embedding: 174.6B parameters, not the untied 175.24B."""
    text = outputs_text("01_memory_wall.ipynb")
    tied, untied = gpt_parameters(PRESETS["gpt3-175b"], True), gpt_parameters(PRESETS["gpt3-175b"], False)
    assert f"(as GPT-3): {tied:,} = 174.6B" in text
    assert f"untied output layer it would be {untied:,}" in text
    assert "datasheet peak" in text


def test_lesson_3_summary_counts_the_layers_one_all_reduce():
    """The trace summary was printed after a second, checking all-reduce: 384 B instead of 192 B."""
    text = outputs_text("03_row_parallel.ipynb")
    sent = 2 * (4 - 1) / 4 * (4 * 8 * 4)  # ring all-reduce of y (4 x 8 float32) on 4 devices
    assert f"the layer ran 1 collective: an all_reduce of 128 B, {sent:.0f} B sent per device" in text
    summary = text[text.index("Devices\ndevice"):text.index("Busiest links")]
    assert re.findall(r"^\s+\d\s+(\d+) B", summary, re.M) == [f"{sent:.0f}"] * 4, summary
    assert "384 B" not in summary


def test_lesson_4_draws_closed_forms_only_where_they_hold():
    """The NVLink and ring plots drew the fully connected closed forms as if they described those
    topologies; now closed forms are drawn on the fully connected network, where the engine matches them."""
    source = (SOURCES / "04_collectives.py").read_text()
    assert not re.search(r'cost_curves\("all_reduce", 8, "(nvlink|ring)"', source)
    text = outputs_text("04_collectives.ipynb")
    gaps = re.search(r"fully connected, simulated / closed form: (\{.*\})", text).group(1)
    assert set(re.findall(r": ([\d.]+)", gaps)) == {"1.0"}
    nvlink = re.search(r"NVLink node, at most x the fully connected formula: (\{.*\})", text).group(1)
    assert "'direct': 6.99" in nvlink or "'direct': 7.0" in nvlink  # p - 1 sends share one port


def test_lesson_7_explains_the_backward_bytes_of_sp():
    """Lesson 7 said SP adds "no extra bytes", then printed 1.5x in backward without saying why."""
    source = (SOURCES / "07_sequence_parallelism.py").read_text()
    assert "The trick costs no extra bytes" not in source
    text = outputs_text("07_sequence_parallelism.ipynb")
    assert "with SP, re-gather of the SP input for the weight gradient: 2.00 units" in text
    assert "with SP, conjugate of a forward collective: 4.00 units" in text
    assert "activation-sized backward bytes, SP / no SP: 6.00 / 4.00 = 1.50" in text


GIB_ROW = r"\s+".join([r"([\d.]+) GiB"] * 5) + r"\s+80.00 GiB\s+(True|False)"  # weights .. total, of, fits


def memory_row(text: str, name: str) -> tuple[list[float], bool]:
    """(weights, grads, optimizer, activations, total) in GiB and fits, from a lesson's memory table row."""
    row = re.search(rf"^{re.escape(name)}\s+{GIB_ROW}$", text, re.M)
    assert row, name
    return [float(v) for v in row.groups()[:5]], row.group(6) == "True"


def check_memory_row(text: str, name: str) -> tuple[list[float], bool]:
    """The optimizer state is there, 12 B per parameter against the weights' 2; the parts add up; fits means
    the total is within the H100's 80 GiB."""
    (w, g, o, a, total), fits = memory_row(text, name)
    assert g == pytest.approx(w, abs=0.01) and o == pytest.approx(6 * w, rel=2e-3), name
    assert total == pytest.approx(w + g + o + a, abs=0.03) and fits == (total <= 80), name
    return [w, g, o, a, total], fits


def test_lesson_8_uses_every_rail_and_counts_adam():
    """Lesson 8's two-node all-reduce was one ring through 2 of 16 NICs, shown as the cluster's cost; then its
    TP-across-nodes all-reduce (4 of 16 NICs) and GPT-3 step (one ring per TP group) still were, and "TP = 16
    fits" left out Adam's state.  Now every cross-node figure uses all of a node's NICs and names its
    assumptions."""
    text = outputs_text("08_topology.ipynb")
    assert "NICs sending: 2 of 16" in text and "NICs sending: 16 of 16" in text
    factor = float(re.search(r"the single ring costs ([\d.]+)x the all-rails time", text).group(1))
    assert factor > 4
    assert "one ring per TP group (2 of 16 NICs)" not in text
    assert re.search(r"TP across nodes, per rail .* through 16 of 16 NICs", text)
    overstated = float(re.search(r"that figure overstates the cross-node cost ([\d.]+)×", text).group(1))
    assert overstated > 2
    # the cluster model that prices TP = 16 (every NIC) agrees with the simulated per-rail schedule
    gap = float(re.search(r"nominal\s+links: every rail simulated .*?\(([-+][\d.]+)%\)", text).group(1))
    assert abs(gap) < 1
    (w, *_), fits = check_memory_row(text, "TP 16, two DGX H100 (IB)")
    params = gpt_parameters(PRESETS["gpt3-175b"], tied=True)
    assert w == pytest.approx(2 * params / 16 / 2**30, rel=0.01)  # bf16 weights of a 1/16 share, ~1 %: LNs
    assert not fits and "16 B per parameter" in text and "**does not fit** either" in text
    for words in ("compute: realistic efficiency (H100", "TP comm not overlapped, DP overlap off",
                  "recompute none", "kernels fused", "links nominal (datasheet): 450 GB/s per GPU",
                  "8 NICs x 50 GB/s per node", "efficiency (h100, 2024): GEMM: 792.1 TFLOP/s",
                  "achievable: assumption: 90 % of the InfiniBand line rate"):
        assert words in text, words


def test_lesson_9_fits_counts_the_optimizer_state():
    """Lesson 9's "fits" is weights + grads + Adam's fp32 state + activations against the device, each part
    printed, and every time names its mode and settings."""
    text = outputs_text("09_tp_dp_pp.ipynb")
    (w, *_), fits = check_memory_row(text, "DP8")
    params = gpt_parameters(PRESETS["gpt3-13b"], tied=True)
    assert not fits and w == pytest.approx(2 * params / 2**30, rel=1e-3)
    for name in ("TP8", "TP8 + SP", "PP8", "TP2 DP2 PP2"):
        assert check_memory_row(text, name)[1], name
    assert "- **DP8 does not fit**" in text
    assert re.search(r"realistic / peak iteration time: from [\d.]+x .* to [\d.]+x", text)
    for words in ("iteration time at datasheet peak and at realistic efficiency", "DP overlap off",
                  "recompute none", "kernels fused", "micro-batch 1, 64 per step, global batch 64",
                  "ZeRO-1 off", "efficiency (h100, 2024)"):
        assert words in text, words
    zero1 = re.search(r"^TP8 DP2 PP1\s+ZeRO-1 .* ([\d.]+) GiB\s+True$", text, re.M)
    plain = re.search(r"^TP8 DP2 PP1\s+as above .* ([\d.]+) GiB\s+True$", text, re.M)
    assert float(zero1.group(1)) < float(plain.group(1))  # ZeRO-1 shards the optimizer state over dp


def test_lesson_12_prints_the_kv_cache_and_decode_figures_from_their_definitions():
    """KV bytes per token per device are 2 x layers x max(g/t, 1) x head_dim x 2 B, a decode all-reduce
    moves b h 2 B, and greedy decoding gives the same tokens at every t."""
    text = outputs_text("12_tp_for_inference.ipynb")
    for t, kv in ((1, 8), (8, 1), (16, 1)):
        per = 2 * 80 * kv * 128 * 2
        assert f"t = {t:>2}: 2 x 80 x {kv} x 128 x 2 B = {per / 1024:.2f} KiB per token per device" in text
    assert "all_reduce: 64.00 KiB = b x h x 2 B = 4 x 8192 x 2" in text
    assert "identical at t = 1, 2, 4: True" in text


TIMED = ["01_memory_wall", "02_column_parallel", "03_row_parallel", "04_collectives",
         "05_megatron_mlp_attention", "06_embeddings_and_loss", "07_sequence_parallelism", "08_topology",
         "09_tp_dp_pp", "10_simulator_to_real_devices", "12_tp_for_inference"]


@pytest.mark.parametrize("name", TIMED)
def test_printed_times_say_they_are_at_datasheet_peak(name):
    text = outputs_text(f"{name}.ipynb")
    assert "datasheet peak" in text or "datasheet bandwidth" in text
