"""LayerNorm and Dropout under TP and SP.

The oracles: torch's layer_norm with autograd, and Megatron's rules for which RNG stream a mask comes from.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal
from torch.testing import assert_close

import tpsim
from tpsim.darray import distribute
from tpsim.errors import PlacementError
from tpsim.mesh import Mesh
from tpsim.nn.dropout import Dropout, RNGTracker, hidden_stream
from tpsim.nn.norm import LayerNorm
from tpsim.placement import Partial, Replicate, Shard

ALL_REDUCE_BACKWARD = ("all_reduce", "backward", "tp")


def torch_layernorm(x, w, b, dy, eps):
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(xt, (x.shape[-1],), wt, bt, eps)
    y.backward(torch.tensor(dy))
    return y.detach(), xt.grad, wt.grad, bt.grad


def ln_collectives(mesh, ln):
    return [c for c in mesh.trace.collectives if c.label == ln.name]


@given(
    st.integers(1, 8),
    st.booleans(),
    st.booleans(),
    st.sampled_from([0, 1]),
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
    st.integers(0, 2**16),
    st.data(),
)
def test_layernorm_matches_torch(t, sp, dp, seq_dim, shape, seed, data):
    mesh = Mesh((2, t), names=("dp", "tp")) if dp else Mesh(t, names=("tp",))
    on_tp = Shard(seq_dim) if sp else Replicate()
    placements = [Shard(1 - seq_dim), on_tp] if dp else [on_tp]  # dp splits the batch dim
    floats = st.floats(-4, 4, allow_nan=False, width=64)
    x = data.draw(hnp.arrays(np.float64, shape, elements=floats))
    dy = data.draw(hnp.arrays(np.float64, shape, elements=floats))

    ln = LayerNorm(
        mesh, shape[-1], seed=seed, init="exact", dtype="float64", sequence_parallel=sp, seq_dim=seq_dim
    )
    y = ln(distribute(x, mesh, placements))
    assert ln_collectives(mesh, ln) == []  # no forward collective, SP or not
    dx = ln.backprop(distribute(dy, mesh, placements))

    w, b = ln.params["weight"].full(), ln.params["bias"].full()
    want = torch_layernorm(x, w, b, dy, ln.eps)
    got = (y.full(), dx.full(), ln.grads["weight"].full(), ln.grads["bias"].full())
    for g, wnt in zip(got, want, strict=True):
        assert_close(torch.from_numpy(g), wnt)

    for grad in (ln.grads["weight"], ln.grads["bias"]):
        assert grad.placements[-1] == Replicate()  # every TP rank holds the whole grad ...
        for group in mesh.groups("tp"):  # ... and the same bits
            for d in group:
                assert_array_equal(grad.shards[d], grad.shards[group[0]])
    if not sp:  # each rank normalized the whole activation: identical bits everywhere on TP
        for group in mesh.groups("tp"):
            for d in group:
                assert_array_equal(y.shards[d], y.shards[group[0]])
                assert_array_equal(dx.shards[d], dx.shards[group[0]])

    records = ln_collectives(mesh, ln)
    if sp:  # one fused all-reduce of [dw; db] over TP, in backward
        assert [(c.collective, c.direction, c.mesh_dim) for c in records] == [ALL_REDUCE_BACKWARD]
        assert records[0].nbytes == 2 * shape[-1] * 8
    else:
        assert records == []
    if dp:  # the data-parallel reduction is left to the DP step
        assert ln.grads["weight"].placements[0] == Partial()


@pytest.mark.parametrize("sp", [False, True])
def test_layernorm_shape_only(sp):
    t, (s, b, h) = 4, (8, 2, 16)
    mesh = Mesh(t, names=("tp",))
    ln = LayerNorm(mesh, h, init=None, sequence_parallel=sp)
    x = distribute(tpsim.meta((s, b, h)), mesh, [Shard(0) if sp else Replicate()])
    y = ln(x)
    rows = (s // t if sp else s) * b
    for dev in mesh.devices:  # saved: x (float32) and the per-row mean and rstd (float32)
        assert dev.in_use["activations"] == rows * h * 4 + rows * 2 * 4
    dx = ln.backprop(y)
    assert dx.is_meta and dx.shape == (s, b, h) and ln.grads["bias"].shape == (h,)
    assert len(ln_collectives(mesh, ln)) == (1 if sp else 0)


@pytest.mark.parametrize("sp, placement", [(True, Replicate()), (False, Shard(0)), (False, Shard(2))])
def test_layernorm_rejects_wrong_placement(sp, placement):
    mesh = Mesh(2)
    ln = LayerNorm(mesh, 4, sequence_parallel=sp)
    with pytest.raises(PlacementError):
        ln(distribute(np.zeros((4, 2, 4), np.float32), mesh, [placement]))


def masks_of(y, x):
    """The keep-mask each device applied, read back from y = x * mask / (1 - p) with x > 0."""
    return [ys != 0 for ys, xs in zip(y.shards, x.shards, strict=True)]


@pytest.mark.parametrize("t", [2, 3, 8])
def test_default_stream_same_mask_on_every_tp_rank(t):
    mesh = Mesh(t)
    drop = Dropout(mesh, 0.5, tracker=RNGTracker(7))
    x = distribute(np.ones((16, 2, 8)), mesh, [Replicate()])
    masks = masks_of(drop(x), x)
    for m in masks:
        assert_array_equal(m, masks[0])


@pytest.mark.parametrize("t", [2, 4])
def test_model_parallel_stream_differs_on_tp_and_agrees_on_dp(t):
    mesh = Mesh((2, t), names=("dp", "tp"))
    drop = Dropout(mesh, 0.5, tracker=RNGTracker(7), stream="model-parallel", tp_dim="tp")
    x = distribute(np.ones((16, 2, 8)), mesh, [Replicate(), Replicate()])
    masks = masks_of(drop(x), x)
    for r in range(t):
        assert_array_equal(masks[mesh.device_at((0, r))], masks[mesh.device_at((1, r))])
        for q in range(r):
            assert not np.array_equal(masks[mesh.device_at((0, r))], masks[mesh.device_at((0, q))])


def test_sequence_parallel_needs_the_model_parallel_stream():
    """Under SP each rank holds a different piece of the sequence: "default" would repeat one mask pattern."""
    mesh, t = Mesh(4), 4
    x = distribute(np.ones((16, 2, 8)), mesh, [Shard(0)])
    same = masks_of(Dropout(mesh, 0.5, tracker=RNGTracker(1), stream=hidden_stream(False))(x), x)
    indep = masks_of(Dropout(mesh, 0.5, tracker=RNGTracker(1), stream=hidden_stream(True))(x), x)
    assert all(np.array_equal(m, same[0]) for m in same)
    assert not any(np.array_equal(indep[i], indep[j]) for i in range(t) for j in range(i))


def test_fork_switches_the_current_stream():
    mesh = Mesh((2, 2), names=("dp", "tp"))
    x = distribute(np.ones((8, 8)), mesh, [Replicate(), Replicate()])
    tracker, twin = RNGTracker(3), RNGTracker(3)
    drop = Dropout(mesh, 0.5, tracker=tracker, stream=None, tp_dim="tp")
    with tracker.fork():
        forked = masks_of(drop(x), x)
    plain = masks_of(drop(x), x)
    expect_mp = twin.masks("model-parallel", mesh, 1, x.shards, 0.5)
    expect_default = twin.masks("default", mesh, 1, x.shards, 0.5)
    for d in range(mesh.size):
        assert_array_equal(forked[d], expect_mp[d])
        assert_array_equal(plain[d], expect_default[d])


@given(st.integers(0, 2**31), st.sampled_from(["default", "model-parallel"]), st.integers(1, 4))
def test_same_seed_same_masks_and_draws_advance(seed, stream, t):
    mesh = Mesh(t)
    x = distribute(np.ones((6, 5)), mesh, [Shard(0)])
    runs = []
    for _ in range(2):
        drop = Dropout(mesh, 0.5, tracker=RNGTracker(seed), stream=stream)
        runs.append([masks_of(drop(x), x) for _ in range(2)])
    for a, b in zip(runs[0], runs[1], strict=True):
        for ma, mb in zip(a, b, strict=True):
            assert_array_equal(ma, mb)
    first, second = runs[0]
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_probability(p):
    mesh = Mesh(2)
    x = distribute(np.ones((200, 100)), mesh, [Shard(0)])
    masks = masks_of(Dropout(mesh, p, tracker=RNGTracker(0))(x), x)
    kept = np.mean(np.concatenate([m.ravel() for m in masks]))
    assert abs(kept - (1 - p)) < 0.02  # 20000 draws: the standard error is below 0.0036


@given(st.floats(0.05, 0.95), st.integers(0, 2**16), st.integers(1, 4))
def test_backward_uses_the_saved_mask(p, seed, t):
    mesh = Mesh(t)
    shape = (8, 3, 4)
    x = distribute(np.ones(shape), mesh, [Replicate()])
    drop = Dropout(mesh, p, tracker=RNGTracker(seed))
    y = drop(x)  # = mask / (1 - p)
    g = np.random.default_rng(seed).standard_normal(shape)
    dx = drop.backprop(distribute(g, mesh, [Replicate()]))
    assert_array_equal(dx.full(), g * y.full())
    for dev in mesh.devices:
        assert dev.in_use.get("activations", 0) == 0  # backward let the mask go


@pytest.mark.parametrize("p, training", [(0.0, True), (0.3, False)])
def test_identity_when_p_is_zero_or_not_training(p, training):
    mesh = Mesh(2)
    tracker = RNGTracker(0)
    drop = Dropout(mesh, p, tracker=tracker)
    drop.training = training
    x = distribute(np.arange(12.0).reshape(3, 4), mesh, [Replicate()])
    assert drop(x) is x
    assert drop.backprop(x) is x
    assert tracker.draws == {"default": 0, "model-parallel": 0}


def test_shape_only_counts_the_mask_as_activations():
    t, (s, b, h) = 4, (64, 2, 32)
    mesh = Mesh(t)
    drop = Dropout(mesh, 0.1, tracker=RNGTracker(0), stream="model-parallel")
    y = drop(distribute(tpsim.meta((s, b, h)), mesh, [Shard(0)]))
    assert y.is_meta and y.shape == (s, b, h)
    for dev in mesh.devices:  # 1 byte per element, as Korthikanti et al. count it
        assert dev.in_use["activations"] == s // t * b * h
    assert drop.backprop(y).is_meta


def test_dropout_rejects_partial_sums():
    mesh = Mesh(2)
    drop = Dropout(mesh, 0.1, tracker=RNGTracker(0))
    with pytest.raises(PlacementError):
        drop(distribute(np.ones((2, 2)), mesh, [Partial()]))
