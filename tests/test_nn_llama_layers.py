"""GQA, SwiGLU, RMSNorm and RoPE against their unsharded definitions (tests/llama_oracle.py, torch
autograd in float64), forward and backward, for t = 1..4, uneven sequence shards under SP, KV heads
split (t divides them) and replicated (t exceeds them), and a data-parallel mesh dim beside TP.

Tolerance, derived rather than tuned: both sides run in float64, so each result differs from the exact
value by at most gamma_n sum|terms| ~ n u S (Higham eq. 4.4), n the terms summed on the longest path
(every matmul's inner dim and every reduction, added up) and S the result's scale; twice that for two
engines.
"""

from __future__ import annotations

import llama_oracle as oracle
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

from tpsim import Mesh, Replicate, Shard, distribute
from tpsim.errors import PlacementError, ShapeError
from tpsim.nn.fused import fuse_rows
from tpsim.nn.gqa import GroupedQueryAttention
from tpsim.nn.gqa_qkv import KVLayout, valid_tp
from tpsim.nn.init import global_weight
from tpsim.nn.rmsnorm import RMSNorm
from tpsim.nn.rope import apply_rope, positions, rope_tables
from tpsim.nn.swiglu import SwiGLUMLP

U = np.finfo(np.float64).eps / 2


def close(actual, expected, n: int, terms: float = 0.0) -> None:
    """|actual - expected| <= 2 n u S: two float64 engines, n terms deep, S the scale of the terms summed
    (max|expected|, or `terms` where the result cancels and is smaller than what was summed to get it)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)), terms)
    assert_allclose(actual, expected, rtol=0, atol=2 * n * U * scale)


def floats(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-1, 1))


def tensor(a):
    return torch.tensor(np.asarray(a), requires_grad=True)


def run(m, x, sp: bool, dy):
    """Forward and backward: x R on TP (S(0), the sequence, under SP), the batch split over dp."""
    y = m(distribute(x, m.mesh, m.placements(Shard(0) if sp else Replicate(), Shard(1))))
    dx = m.backprop(distribute(dy, m.mesh, list(y.placements)))
    return y.full(), dx.full(), {n.split(".", 1)[1]: g.full() for n, g in m.named_grads()}


@st.composite
def gqa_configs(draw):
    """t in 1..4 and (n, g) that fit it: KV heads split (t | g) or replicated (g | t, t > g)."""
    t = draw(st.integers(1, 4))
    g = draw(st.sampled_from(sorted({k * t for k in (1, 2)} | {k for k in (1, 2, 4) if t % k == 0})))
    n = g * draw(st.integers(1, 3))
    n = n if n % t == 0 else n * t
    d = 2 * draw(st.integers(1, 2))  # RoPE pairs features: d even
    return dict(
        t=t,
        dp=draw(st.sampled_from((1, 2))),
        n=n,
        g=g,
        d=d,
        s=draw(st.integers(1, 5)),
        b=2,
        sp=draw(st.booleans()),
        bias=draw(st.booleans()),
        theta=draw(st.sampled_from((1e4, 5e5))),
    )


@given(cfg=gqa_configs(), data=st.data())
def test_gqa_matches_the_unsharded_layer(cfg, data):
    t, n, g, d, s, b = (cfg[k] for k in ["t", "n", "g", "d", "s", "b"])
    h = n * d
    mesh = Mesh((cfg["dp"], t), names=("dp", "tp"))
    m = GroupedQueryAttention(
        mesh,
        h,
        n,
        g,
        qkv_bias=cfg["bias"],
        rope_theta=cfg["theta"],
        init="exact",
        dtype="float64",
        sequence_parallel=cfg["sp"],
        seed=5,
        tp_dim="tp",
    )
    x, dy = data.draw(floats((s, b, h))), data.draw(floats((s, b, h)))
    y, dx, grads = run(m, x, cfg["sp"], dy)

    w = [tensor(global_weight((k * d, h), 5 + i, "exact", "float64")) for i, k in enumerate((n, g, g))]
    bias = [tensor(global_weight((k * d,), 8 + i, "exact", "float64")) for i, k in enumerate((n, g, g))]
    wo, xt = tensor(global_weight((h, h), 11, "exact", "float64")), tensor(x)
    yt = oracle.gqa(xt, *w, wo, n, g, cfg["theta"], *(bias if cfg["bias"] else ()))
    yt.backward(torch.tensor(dy))
    depth = 2 * h + s + s * d + d  # qkv, scores, softmax, context, dense; backward adds the same again
    close(y, yt.detach(), depth)
    close(dx, xt.grad, 2 * depth)
    close(grads["dense.weight"], wo.grad, 2 * depth + s * b)
    layout = KVLayout(n, g, d, t)  # replicated KV rows: every copy holds the whole gradient
    close(grads["query_key_value.weight"], layout.fuse(*(a.grad for a in w)), 2 * depth + s * b)
    if cfg["bias"]:
        close(grads["query_key_value.bias"], layout.fuse(*(a.grad for a in bias)), 2 * depth + s * b)


def test_replicated_kv_heads_reduce_their_grads_in_groups():
    """MQA over t = 4 (r = 4 ranks share the one KV head) and GQA g = 2 over t = 4 (r = 2): one more
    all-reduce in backward, in groups of r, of each rank's (2d, h) K and V rows; none when t divides g."""
    for g, r in ((1, 4), (2, 2), (4, 1)):
        mesh = Mesh(4)
        m = GroupedQueryAttention(mesh, 16, 8, g, init="exact", dtype="float64")
        y = m(distribute(np.ones((3, 2, 16)), mesh, [Replicate()]))
        m.backprop(distribute(np.ones(y.shape), mesh, list(y.placements)))
        back = [
            (c.group_size, c.num_groups, c.nbytes)
            for c in mesh.trace.collectives
            if c.direction == "backward" and c.collective == "all_reduce"
        ]
        dx = (4, 1, 3 * 2 * 16 * 8)  # (s, b, h) float64 over all t
        kv = (r, 4 // r, 2 * 2 * 16 * 8)  # (2 d, h) float64: the K and V rows of one KV head
        assert back == ([kv, dx] if r > 1 else [dx])


@pytest.mark.parametrize("n, g, t", [(8, 8, 3), (8, 4, 3), (6, 4, 2), (8, 2, 16), (12, 8, 4)])
def test_counts_that_do_not_fit_are_refused_with_the_valid_degrees(n, g, t):
    with pytest.raises(ShapeError) as e:
        GroupedQueryAttention(Mesh(t), 4 * n, n, g, init=None)
    msg = str(e.value)
    if n % g == 0:
        assert f"num_heads = {n}" in msg and f"num_kv_heads = {g}" in msg and f"degree {t}" in msg
        assert f"valid t: {valid_tp(n, g)}" in msg
    else:
        assert "multiple of num_kv_heads" in msg


def test_valid_degrees_split_or_replicate():
    assert valid_tp(64, 8) == [1, 2, 4, 8, 16, 32, 64]  # Llama-3 70B: 16 replicates each KV head twice
    assert KVLayout(64, 8, 128, 16).replicas == 2 and KVLayout(64, 8, 128, 4).kv_local == 2
    assert valid_tp(8, 8) == [1, 2, 4, 8] and valid_tp(12, 8) == [1, 2, 4]


@given(t=st.integers(1, 4), k=st.integers(1, 3), s=st.integers(1, 5), sp=st.booleans(), data=st.data())
def test_swiglu_matches_the_unsharded_layer(t, k, s, sp, data):
    h, f, b = 3, 2 * t * k, 2
    mesh = Mesh((2, t), names=("dp", "tp"))
    m = SwiGLUMLP(mesh, h, f, init="exact", dtype="float64", sequence_parallel=sp, seed=1, tp_dim="tp")
    x, dy = data.draw(floats((s, b, h))), data.draw(floats((s, b, h)))
    y, dx, grads = run(m, x, sp, dy)
    wg, wu, wd = (
        tensor(global_weight(shape, 1 + i, "exact", "float64"))
        for i, shape in enumerate(((f, h), (f, h), (h, f)))
    )
    xt = tensor(x)
    yt = oracle.swiglu(xt, wg, wu, wd)
    yt.backward(torch.tensor(dy))
    close(y, yt.detach(), h + f)
    close(dx, xt.grad, 2 * (h + f))
    close(grads["linear_fc2.weight"], wd.grad, h + f + s * b)
    close(grads["linear_fc1.weight"], fuse_rows([wg.grad.numpy(), wu.grad.numpy()], t), 2 * (h + f) + s * b)


def test_swiglu_needs_ffn_divisible_by_t():
    with pytest.raises(ShapeError, match=r"ffn_hidden .* = 10 does not divide by the TP degree 4"):
        SwiGLUMLP(Mesh(4), 4, 10, init=None)


@given(t=st.integers(1, 4), s=st.integers(1, 7), h=st.integers(1, 5), sp=st.booleans(), data=st.data())
def test_rmsnorm_matches_the_unsharded_layer(t, s, h, sp, data):
    mesh = Mesh((2, t), names=("dp", "tp"))
    m = RMSNorm(mesh, h, eps=1e-6, init="exact", dtype="float64", sequence_parallel=sp, seed=2, tp_dim="tp")
    x, dy = data.draw(floats((s, 2, h))), data.draw(floats((s, 2, h)))
    y, dx, grads = run(m, x, sp, dy)
    w, xt = tensor(global_weight((h,), 2, "exact", "float64")), tensor(x)
    yt = oracle.rmsnorm(xt, w, 1e-6)
    yt.backward(torch.tensor(dy))
    close(y, yt.detach(), h)
    # dx = rstd (g - x-hat mean(g x-hat)) cancels when h is small: its terms are up to 2 rstd max|g|
    rstd = 1 / np.sqrt(np.mean(x * x, axis=-1) + 1e-6)
    close(dx, xt.grad, 2 * h, terms=2 * float(rstd.max()) * float(np.abs(dy * w.detach().numpy()).max()))
    close(grads["weight"], w.grad, h + 2 * s)
    sp_reduce = [
        c for c in mesh.trace.collectives if c.direction == "backward" and c.collective == "all_reduce"
    ]
    assert [c.group_size for c in sp_reduce] == ([t] if sp else [])  # SP: one all-reduce of dw's partial sums


@given(t=st.integers(1, 4), s=st.integers(1, 9), offset=st.integers(0, 100), data=st.data())
def test_rope_on_uneven_sequence_shards_uses_global_positions(t, s, offset, data):
    """x (b, n, s, d) split along s over t ranks (torch.chunk: uneven, some ranks empty): each rank
    rotates its rows by their global positions offset + its shard's start, as the unsharded rope does."""
    mesh = Mesh(t)
    x = data.draw(floats((2, 3, s, 4)))
    xs = distribute(x, mesh, [Shard(2)])
    pos = positions(xs, 2, offset)
    assert_array_equal(pos.full(), np.arange(offset, offset + s))
    y = np.concatenate([apply_rope(xs.shards[r], pos.shards[r], 1e4, 2)[0] for r in range(t)], axis=2)
    xt = tensor(x)
    yt = oracle.rope(xt, torch.arange(offset, offset + s), 1e4)
    close(y, yt.detach(), 4)
    dy = data.draw(floats(x.shape))
    yt.backward(torch.tensor(dy))
    dys = distribute(dy, mesh, [Shard(2)])
    dx = np.concatenate(
        [apply_rope(dys.shards[r], pos.shards[r], 1e4, 2, inverse=True)[0] for r in range(t)], 2
    )
    close(dx, xt.grad, 4)


def test_rope_tables_rotate_pairs_i_and_i_plus_half():
    cos, sin = rope_tables([0, 1], 4, 100.0, np.float64)
    assert_allclose(cos[1], np.cos([1, 0.1, 1, 0.1]), rtol=1e-15)
    assert_array_equal(cos[0], 1) and assert_array_equal(sin[0], 0)
    with pytest.raises(ShapeError, match="even"):
        rope_tables([0], 3, 1e4, np.float64)


def test_gqa_refuses_a_sequence_split_off_the_tp_dim():
    mesh = Mesh((2, 2), names=("dp", "tp"))
    m = GroupedQueryAttention(mesh, 8, 4, 2, init=None, tp_dim="tp")
    x = distribute(np.zeros((4, 2, 8), np.float32), mesh, [Shard(0), Replicate()])
    with pytest.raises(PlacementError, match="every query needs every key"):
        m(x)
