"""The Llama block and model: sharded equals unsharded, shape-only at full size, and the presets'
parameter counts against the published ones (each from the model's config.json; see llama_config.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from reference.cases_bounds import RoundingDepth, rounding_bounds
from tpsim import Mesh
from tpsim.cli import main
from tpsim.meta import meta
from tpsim.nn.llama import Llama
from tpsim.nn.llama_config import LLAMA_PRESETS, PUBLISHED, LlamaConfig

# name: (hidden, layers, heads, kv heads, ffn, vocab, tied, rope theta) as each config.json gives them
CONFIG_JSON = {
    "llama3-8b": (4096, 32, 32, 8, 14336, 128256, False, 500000.0),
    "llama3-70b": (8192, 80, 64, 8, 28672, 128256, False, 500000.0),
    "llama3-405b": (16384, 126, 128, 8, 53248, 128256, False, 500000.0),
    "mistral-7b": (4096, 32, 32, 8, 14336, 32000, False, 10000.0),
    "qwen2.5-72b": (8192, 80, 64, 8, 29568, 152064, False, 1000000.0),
}


@pytest.mark.parametrize("name", sorted(LLAMA_PRESETS))
def test_preset_parameter_counts_are_the_published_ones(name):
    """The count the model holds (shape-only, nothing allocated) is the config arithmetic, and rounds to
    the count the model card publishes, at the digits it publishes."""
    cfg = LLAMA_PRESETS[name]
    h, layers, heads, kv, ffn, vocab, tied, theta = CONFIG_JSON[name]
    assert (cfg.hidden, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_hidden) == (
        h,
        layers,
        heads,
        kv,
        ffn,
    )
    assert (cfg.vocab_size, cfg.tied_embeddings, cfg.rope_theta) == (vocab, tied, theta)
    assert cfg.source.startswith("https://huggingface.co/") and cfg.source.endswith("config.json")
    model = Llama(Mesh(1, memory=1 << 62), cfg.with_(num_layers=1), init=None)
    one_layer = model.num_parameters()
    per_layer = (
        one_layer - Llama(Mesh(1, memory=1 << 62), cfg.with_(num_layers=0), init=None).num_parameters()
    )
    counted = one_layer + (layers - 1) * per_layer
    assert counted == cfg.parameters()
    published, _ = PUBLISHED[name]
    digits = 2 if published < 1e10 else 1  # 8.03B and 7.24B; 70.6B, 405.9B, 72.7B
    assert round(counted / 1e9, digits) == round(published / 1e9, digits)


def test_exact_counts():
    counts = {k: c.parameters() for k, c in LLAMA_PRESETS.items()}
    assert counts == {
        "llama3-8b": 8_030_261_248,
        "llama3-70b": 70_553_706_496,
        "llama3-405b": 405_853_388_800,
        "mistral-7b": 7_241_732_096,
        "qwen2.5-72b": 72_706_203_648,  # with the 10,240 QKV biases of each layer
    }


def tiny(kv: int, tied: bool) -> LlamaConfig:
    return LlamaConfig(13, 16, 2, 4, kv, 8, 5, rope_theta=100.0, dtype="float64", tied_embeddings=tied)


@given(t=st.sampled_from((2, 4)), kv=st.sampled_from((1, 2, 4)), sp=st.booleans(), tied=st.booleans())
def test_sharded_model_equals_the_unsharded_one(t, kv, sp, tied):
    """Loss and the grads of every weight that is not fused per rank, TP t against TP 1 (KV heads split or
    replicated; SP over an uneven sequence of 5).

    Tolerance: each run is within the rounding tier's forward error bound of the exact value
    (reference/cases_bounds.py: 2 (n_acc u) max|T|, n_acc counted from the ops each run executed), so the
    two runs are within half the sum of their two bounds."""
    rng = np.random.default_rng(t * 10 + kv)
    ids, targets = (rng.integers(0, 13, size=(5, 2)) for _ in range(2))
    out = {}
    for tp in (1, t):
        with RoundingDepth() as depth:
            mesh = Mesh(tp)
            m = Llama(mesh, tiny(kv, tied), sequence_parallel=sp and tp > 1, init="exact", seed=3)
            loss = m(ids, targets)
            m.backprop()
            depth.finish(mesh)
        grads = {"grad." + n.removeprefix("llama."): [g.full()] for n, g in m.named_grads()}
        grads = {n: g for n, g in grads.items() if "query_key_value" not in n and "linear_fc1" not in n}
        results = {"out": [loss.full()], **grads}
        out[tp] = results, rounding_bounds(list(results), results, depth, "llama", np.float64)
    (r1, b1), (rt, bt) = out[1], out[t]
    assert r1.keys() == rt.keys()
    for name in r1:
        assert_allclose(
            rt[name][0], r1[name][0], rtol=0, atol=(b1[name].value + bt[name].value) / 2, err_msg=name
        )


def test_llama3_70b_over_16_ranks_shape_only():
    """Llama-3 70B at TP 16 (2 of its layers): each KV head on 2 ranks, one all-reduce of its grads per
    layer in 8 groups of 2, and the weights per device those copies add."""
    cfg = LLAMA_PRESETS["llama3-70b"].with_(num_layers=2, seq_len=128)
    mesh = Mesh(16, memory=1 << 62)
    m = Llama(mesh, cfg, init=None)  # 128256 = 16 x 8016: no padding
    ids = meta((cfg.seq_len, 1), "int64")
    m(ids, ids)
    m.backprop()
    kv = [c for c in mesh.trace.collectives if c.group_size == 2]
    assert len(kv) == 2 and all(c.num_groups == 8 and c.direction == "backward" for c in kv)
    assert kv[0].nbytes == 2 * 128 * 8192 * 2  # (2 d, h) in bfloat16
    qkv = m.layers[0].self_attention.query_key_value.params["weight"]
    assert qkv.shards[0].shape == ((64 // 16 + 2) * 128, 8192)  # 4 query heads and the one K and V
    assert m.num_parameters() == cfg.parameters()  # each replicated KV head counted once
    assert math.prod(qkv.shape) == (64 + 2 * 8 * 2) * 128 * 8192  # the expanded weight, copies counted


def test_cli_model_llama3_70b_tp16(capsys):
    assert main(["model", "llama3-70b", "--tp", "16", "--tp-across-nodes", "--fast", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tp"] == 16 and "replicated on 2 ranks" in r["notes"]


def test_analyse_llama_counts_the_replicated_kv_copies():
    """Llama-3 70B (2 layers) at TP 16 with SP, shape-only: the stored weights hold one extra copy of each
    KV head per layer; device memory is 1/16 of the split weights plus every (replicated) RMSNorm."""
    from tpsim.nn.llama_analyse import analyse_llama

    cfg = LLAMA_PRESETS["llama3-70b"].with_(num_layers=2, seq_len=1024)
    r = analyse_llama(cfg, 16, True)
    copies = 2 * (16 // 8 - 1) * 2 * 8 * 128 * cfg.hidden  # layers x extra copies x (K, V) x g x d x h
    assert r["parameters_stored"] - r["parameters"] == copies
    norms = (2 * cfg.num_layers + 1) * cfg.hidden
    assert r["memory"]["weights"] == 2 * ((r["parameters_stored"] - norms) // 16 + norms)
    kv = r["collectives"]["backward"]["all_reduce"]
    assert kv["count"] >= cfg.num_layers  # the KV grads' all-reduce, once per layer (and SP's dw ones)
