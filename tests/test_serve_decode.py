"""Prefill and decode with a KV cache sharded by KV heads: the same outputs as the causal forward over
the whole sequence, one all-reduce per step, and the cache's bytes on each device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from tpsim import Mesh, Replicate, distribute
from tpsim.errors import ShapeError
from tpsim.meta import meta
from tpsim.nn.gqa import GroupedQueryAttention
from tpsim.nn.llama import Llama
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig
from tpsim.serve import kv_cache_bytes_per_token
from tpsim.serve.decode import attend, new_cache
from tpsim.serve.generate import generate, inference, step

U = np.finfo(np.float64).eps / 2


@given(
    tg=st.sampled_from([(1, 2), (2, 2), (2, 1), (4, 2), (4, 1), (3, 3)]),
    prompt=st.integers(1, 4),
    new=st.integers(1, 3),
    bias=st.booleans(),
    data=st.data(),
)
def test_prefill_then_decode_equals_the_causal_forward(tg, prompt, new, bias, data):
    """Prefill `prompt` tokens, decode `new` more one at a time: each output is the causal forward's at
    that position (KV heads split or replicated; RoPE at the cached offset)."""
    t, g = tg
    n, d, b = 2 * max(t, g), 2, 2
    h, s = n * d, prompt + new
    mesh = Mesh(t)
    m = GroupedQueryAttention(mesh, h, n, g, qkv_bias=bias, init="exact", dtype="float64", seed=4)
    x = data.draw(hnp.arrays(np.float64, (s, b, h), elements=st.floats(-1, 1)))
    whole = m(distribute(x, mesh, [Replicate()])).full()
    cache = new_cache(m, b, s + 1)
    steps = [x[:prompt]] + [x[i : i + 1] for i in range(prompt, s)]
    before = len(mesh.trace.collectives)
    y = np.concatenate([attend(m, distribute(a, mesh, [Replicate()]), cache).full() for a in steps])
    after = mesh.trace.collectives[before:]
    assert [c.collective for c in after] == ["all_reduce"] * len(steps) and cache.length == s
    depth = 2 * h + s + s * d + h  # qkv, scores, softmax, context, dense
    assert_allclose(y, whole, rtol=0, atol=2 * depth * U * max(1.0, float(np.abs(whole).max())))


def test_cache_overflow_is_refused():
    mesh = Mesh(2)
    m = GroupedQueryAttention(mesh, 8, 4, 2, init="exact", dtype="float64")
    cache = new_cache(m, 1, 2)
    with pytest.raises(ShapeError, match="exceed the cache's 2"):
        attend(m, distribute(np.ones((3, 1, 8)), mesh, [Replicate()]), cache)


def test_llama3_70b_layer_decode_shape_only_at_tp16():
    """One layer of Llama-3 70B over 16 ranks: each holds one KV head's cache (2 ranks per head), the
    bytes kv_cache.py predicts, and a decode step all-reduces b h bf16 elements once."""
    cfg = LLAMA_PRESETS["llama3-70b"]
    mesh = Mesh(16, memory=1 << 62)
    m = GroupedQueryAttention(mesh, cfg.hidden, cfg.num_heads, cfg.num_kv_heads, init=None, dtype="bfloat16")
    b, max_len = 4, 1024
    cache = new_cache(m, b, max_len)
    per_layer = kv_cache_bytes_per_token(cfg, 16) // cfg.num_layers
    assert mesh.devices[0].in_use["kv_cache"] == per_layer * b * max_len
    attend(m, distribute(meta((100, b, cfg.hidden), "bfloat16"), mesh, [Replicate()]), cache)  # prefill
    attend(m, distribute(meta((1, b, cfg.hidden), "bfloat16"), mesh, [Replicate()]), cache)  # decode
    step = mesh.trace.collectives[-1]
    assert step.collective == "all_reduce" and step.nbytes == b * cfg.hidden * 2 and cache.length == 101


@pytest.mark.multiprocess
@pytest.mark.parametrize("g", [2, 1])
def test_reference_decode_matches_tpsim(g):
    """The reference's prefill + decode on 2 gloo ranks (KV heads split, then one replicated) gives
    tpsim's outputs on every rank, within two float64 engines' rounding of the same depth."""
    from reference.decode import run_decode
    from reference.launch import run

    spec = dict(hidden=8, num_heads=4, num_kv_heads=g, qkv_bias=True, seed=2, init="exact", dtype="float64")
    x = np.random.default_rng(g).uniform(-1, 1, (5, 2, 8))
    mesh = Mesh(2)
    m = GroupedQueryAttention(
        mesh, spec["hidden"], spec["num_heads"], g, qkv_bias=True, seed=2, init="exact", dtype="float64"
    )
    cache = new_cache(m, 2, 5)
    steps = [x[:3], x[3:4], x[4:5]]
    want = np.concatenate([attend(m, distribute(a, mesh, [Replicate()]), cache).full() for a in steps])
    ranks = run(run_decode, 2, spec, x, 3, timeout=120)
    depth = 2 * 8 + 5 + 5 * 2 + 8
    for got in ranks:
        assert_allclose(got, want, rtol=0, atol=2 * depth * U * max(1.0, float(np.abs(want).max())))


def full_logits(model, ids) -> tuple[np.ndarray, float]:
    """The causal forward over the whole sequence, no cache: (s, b, V'), and the largest magnitude on
    the residual stream, the scale that every layer's rounding errors are relative to."""
    x = model.embedding(ids)
    scale = float(np.abs(x.full()).max())
    for layer in model.layers:
        x = layer(x)
        scale = max(scale, float(np.abs(x.full()).max()))
    return model.output_layer(model.norm(x)).full(), scale


@given(
    t=st.sampled_from([1, 2, 4]),
    kv=st.sampled_from([1, 2, 4]),
    prompt=st.integers(1, 4),
    seed=st.integers(0, 99),
)
def test_model_prefill_and_decode_give_the_full_forwards_logits(t, kv, prompt, seed):
    """A 2-layer Llama: prefill, then decode one token at a time (fed the sequence's own next ids); the
    last position's logits at every step are the full causal forward's over the sequence so far."""
    cfg = LlamaConfig(13, 16, 2, 4, kv, 8, 12, rope_theta=100.0, dtype="float64")
    ids = np.random.default_rng(seed).integers(0, 13, (prompt + 3, 2))
    model = Llama(Mesh(t), cfg, init="exact", seed=seed)
    whole, stream = full_logits(Llama(Mesh(t), cfg, init="exact", seed=seed), ids)
    caches = [new_cache(layer.self_attention, 2, len(ids)) for layer in model.layers]
    with inference(model):
        got = [step(model, ids[:prompt], caches).full()[-1]]
        got += [step(model, ids[i : i + 1], caches).full()[-1] for i in range(prompt, len(ids))]
    depth = 2 * (2 * 16 + len(ids) + 8 + 4) + 16 + 13  # per layer: qkv, scores, ffn, context; norm; logits
    want = whole[prompt - 1 :]
    scale = max(1.0, stream, float(np.abs(want).max()))  # the residual stream can dwarf the logits
    assert_allclose(np.stack(got), want, rtol=0, atol=2 * depth * U * scale)
    assert model.mesh.devices[0].in_use.get("activations", 0) == 0  # inference keeps nothing for backward


def test_generate_is_the_same_on_every_tp_degree():
    """Greedy tokens over t = 1, 2, 4 (each step's top two logits differ by > 2e-3, rounding by ~1e-15)."""
    cfg = LlamaConfig(13, 16, 2, 4, 2, 8, 12, rope_theta=100.0, dtype="float64")
    prompt = np.random.default_rng(0).integers(0, 13, (4, 2))
    outs = [generate(Llama(Mesh(t), cfg, seed=1), prompt, 5) for t in (1, 2, 4)]
    assert all(np.array_equal(o, outs[0]) for o in outs) and outs[0].shape == (5, 2)
