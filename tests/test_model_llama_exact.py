"""`tpsim model` and `tpsim compare` analyse a Llama preset as the exact Llama (tpsim.nn.Llama), not the
GPT stand-in: the parameters each device holds are the Llama's, KV heads split or replicated.

Expected counts are derived here from the published config.json numbers alone (Meta-Llama-3-70B:
hidden 8192, 80 layers, 64 heads, 8 KV heads of 128, ffn 28672, vocabulary 128256, untied), with
Megatron's vocabulary padding to a multiple of 128 t.
"""

from __future__ import annotations

import json

import pytest

from tpsim.cli import main
from tpsim.nn.config import PRESETS, GPTConfig
from tpsim.nn.llama_config import LLAMA2_PRESETS, LLAMA_PRESETS, LlamaConfig
from tpsim.nn.models import EXACT, as_gpt, resolve_model
from tpsim.plan import Layout, analyse_layout, compare
from tpsim.presets import nvlink_node

H, LAYERS, HEADS, KV, D, FFN, VOCAB = 8192, 80, 64, 8, 128, 28672, 128256


def llama3_70b_per_device(t: int) -> int:
    """Embedding and output layer rows of the padded vocabulary, each layer's share, the final norm."""
    padded = -(-VOCAB // (128 * t)) * 128 * t
    kv_local = max(KV // t, 1)  # KV heads split, or one replicated KV head per rank past t = 8
    qkv = (HEADS // t + 2 * kv_local) * D * H
    layer = qkv + H * H // t + 3 * H * FFN // t + 2 * H  # q k v, o, gate up down, two RMSNorms
    return 2 * (padded // t) * H + LAYERS * layer + H


def model_json(capsys, *argv) -> dict:
    assert main(["model", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("tp", "extra"), [(8, ()), (16, ("--tp-across-nodes", "--fast"))])
def test_cli_holds_the_exact_llama3_70b_parameters_per_device(capsys, tp, extra):
    r = model_json(capsys, "llama3-70b", "--tp", str(tp), *extra)
    assert r["parameters_per_device"] == llama3_70b_per_device(tp)
    assert r["memory_per_device"]["weights"] == 2 * llama3_70b_per_device(tp)  # bfloat16
    assert "exact Llama" in r["notes"] and "stand-in" not in r["notes"]
    assert ("replicated on 2 ranks" in r["notes"]) == (tp == 16)


def test_the_stand_in_is_gone_but_the_gpt_path_is_unchanged(capsys):
    r = model_json(capsys, "gpt3-1.3b", "--tp", "2", "--fast")
    cfg = PRESETS["gpt3-1.3b"]
    assert resolve_model("gpt3-1.3b") is cfg and r["notes"] == cfg.notes
    # the GPT's weights per device: word + position embeddings, output layer, layers split by t
    h, f, v = cfg.hidden, cfg.ffn, -(-cfg.vocab_size // 256) * 256
    layer = (3 * h * h + 3 * h) // 2 + h * h // 2 + h + (h * f + f) // 2 + f * h // 2 + h + 4 * h
    tables = (v // 2) * h * (1 if cfg.tied_embeddings else 2) + cfg.seq_len * h
    assert r["parameters_per_device"] == tables + cfg.num_layers * layer + 2 * h


def test_every_llama_style_preset_resolves_to_its_exact_config():
    for name in ("llama2-7b", "llama2-13b", "llama2-70b", *LLAMA_PRESETS):
        cfg = resolve_model(name)
        assert isinstance(cfg, LlamaConfig) and cfg is EXACT[name]
        # the closed-form model's stand-in is the one config.py lists (its notes cite another source)
        assert as_gpt(cfg).with_(notes="") == PRESETS[name].with_(notes="")
    l2 = LLAMA2_PRESETS["llama2-70b"]
    assert (l2.vocab_size, l2.hidden, l2.num_layers, l2.num_heads, l2.num_kv_heads, l2.ffn_hidden) == (
        32000,
        8192,
        80,
        64,
        8,
        28672,
    )


def test_a_llama_config_file_is_the_exact_model(tmp_path):
    path = tmp_path / "small-llama.toml"
    path.write_text(
        "vocab_size = 256\nhidden = 64\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
        "ffn_hidden = 96\nseq_len = 16\n"
    )
    cfg = resolve_model(str(path))
    assert isinstance(cfg, LlamaConfig) and cfg.name == "small-llama"
    r = analyse_layout(str(path), Layout(4), topology=nvlink_node(4), global_batch=4)
    # t = 4 past 2 KV heads: each rank holds 1 query head and a copy of one KV head (16 features each)
    padded = -(-256 // 512) * 512
    layer = (1 + 2) * 16 * 64 + 64 * 64 // 4 + 3 * 64 * 96 // 4 + 2 * 64
    assert r["parameters_per_device"] == 2 * (padded // 4) * 64 + 2 * layer + 64
    gpt = tmp_path / "small-gpt.json"
    gpt.write_text('{"vocab_size": 256, "hidden": 64, "num_layers": 2, "num_heads": 4, "seq_len": 16}')
    assert isinstance(resolve_model(str(gpt)), GPTConfig)


def test_compare_ranks_the_exact_model():
    cfg = LLAMA_PRESETS["llama3-8b"].with_(num_layers=2, seq_len=64)
    out = compare(cfg, 2, nvlink_node(2), global_batch=4, sp="off")
    assert {r["layout"] for r in out["rows"]} == {"TP1 DP2 PP1", "TP2 DP1 PP1", "TP1 DP1 PP2"}
    assert "exact Llama" in out["notes"]
    tp2 = next(r for r in out["rows"] if r["tp"] == 2)
    assert tp2["parameters_per_device"] * 2 == tp2["memory_per_device"]["weights"]
