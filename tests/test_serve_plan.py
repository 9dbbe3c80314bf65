"""Inference planning: KV cache and weights per device, decode's all-reduce algorithms, serve-plan."""

from __future__ import annotations

import json
import math

import pytest

from tpsim import Mesh, presets
from tpsim.cli import main
from tpsim.nn.llama import Llama
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.serve import allreduce_times, kv_cache_bytes_per_token, max_cached_tokens, serve_plan, weight_bytes

L70 = LLAMA_PRESETS["llama3-70b"]


def test_kv_cache_per_token_stops_shrinking_past_the_kv_heads():
    """2 (K, V) x 80 layers x 8 KV heads x 128 x 2 bytes = 320 KiB per token for Llama-3 70B in bf16;
    split over t up to 8, and each of 16 ranks still holds one whole KV head."""
    whole = 2 * 80 * 8 * 128 * 2
    assert kv_cache_bytes_per_token(L70, 1) == whole == 320 * 1024
    per_t = [kv_cache_bytes_per_token(L70, t) for t in (2, 4, 8, 16)]
    assert per_t == [whole // 2, whole // 4, whole // 8, whole // 8]


@pytest.mark.parametrize("t", [1, 2, 8, 16])
def test_weight_bytes_are_the_models_shards(t):
    """The per-device count is what tpsim.nn.Llama puts on device 0 (2 layers, shape-only), scaled to 80."""
    cfg = L70.with_(num_layers=2)
    m = Llama(Mesh(t, memory=1 << 62), cfg, init=None)
    on_device0 = sum(math.prod(p.shards[0].shape) for _, p in m.named_parameters()) * 2
    assert weight_bytes(cfg, t) == on_device0
    if t == 16:  # the replicated K and V rows: one KV head per rank, not half of one
        assert weight_bytes(cfg, 16) * 16 > cfg.parameters() * 2


def test_max_cached_tokens_is_the_memory_left_after_the_weights():
    mem = 80 * 2**30
    free = int(0.9 * mem) - weight_bytes(L70, 8)
    assert max_cached_tokens(L70, 8, mem) == free // (40 * 1024)
    assert max_cached_tokens(L70, 1, mem) == 0  # 141 GB of weights do not fit


def test_small_messages_pick_one_shot_and_large_ones_do_not():
    topo = presets.nvlink_node(8, "h100")
    small, large = allreduce_times(8, 16 * 1024, topo), allreduce_times(8, 64 << 20, topo)
    assert small["one-shot"] < small["two-shot"] < small["ring"]  # 1, 2 and 14 alphas
    assert large["one-shot"] > large["two-shot"] and large["one-shot"] > large["ring"]  # 7 S vs 2 S 7/8 bytes
    assert allreduce_times(1, 1024, topo) == {"one-shot": 0.0, "two-shot": 0.0, "ring": 0.0}


def test_serve_plan_ranks_the_degrees():
    r = serve_plan("llama3-70b", 16)
    rows = {x["tp"]: x for x in r["rows"]}
    assert sorted(rows) == [1, 2, 4, 8, 16] and not rows[1]["fits"]
    assert rows[16]["kv_replicas"] == 2 and rows[16]["replicas"] == 1
    assert r["by_latency"][0] == 16  # more ranks read fewer weights per token
    assert rows[8]["throughput"] > rows[16]["throughput"]  # replicated KV heads cap TP 16's batch
    assert all(rows[t]["allreduce"] == "one-shot" for t in (2, 4, 8, 16))  # batch 1: 16 KiB messages
    sizes = r["allreduce_by_size"]
    assert sizes["tp"] == 16 and [x["bytes"] for x in sizes["rows"]][:2] == [16384, 8 * 16384]
    assert sizes["rows"][0]["fastest"] == "one-shot" and sizes["rows"][-1]["fastest"] != "one-shot"


def test_cli_serve_plan(capsys):
    assert main(["serve-plan", "llama3-70b", "--gpus", "8", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [x["tp"] for x in r["rows"]] == [1, 2, 4, 8] and r["by_latency"]
    assert main(["serve-plan", "mistral-7b", "--gpus", "2"]) == 0
    assert "by throughput" in capsys.readouterr().out


def test_prefill_is_compute_bound_and_its_all_reduces_are_large():
    """A 4096-token prompt: the linears' FLOPs bound its time (2 x layer params x tokens / t / peak), and
    its (4096, h) all-reduces are past one-shot's range, unlike decode's (1, h)."""
    r = serve_plan("llama3-70b", 8)
    row = next(x for x in r["rows"] if x["tp"] == 8)
    peak = 989.4e12  # H100 SXM dense bf16 (tpsim.hardware)
    layers = L70.parameters() - 2 * L70.vocab_size * L70.hidden  # the tables are not multiplied by tokens
    assert row["prefill"] >= 2 * layers * 4096 / 8 / peak
    assert row["prefill_allreduce"] in ("two-shot", "ring") and row["allreduce"] == "one-shot"
    assert row["prefill"] > 10 * row["latency"]
