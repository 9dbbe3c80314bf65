"""TransformerBlock and GPT against their definitions: TP=1 tpsim, and torch.autograd on the full weights.

The torch model is written out here from `params[...].full()`: layer_norm, linear, scaled-dot-product
attention (or an explicit softmax when dropout masks are replayed), tanh GeLU and cross_entropy.

Why TP=t is not bitwise TP=1 on normal floats: the row-parallel linears (dense, fc2) and the dx of
the column-parallel ones sum over their input features in t pieces plus an all-reduce, where TP=1 runs
one matmul; the order shows in the last bits (float64: ~1e-16 relative).  test_nn_attention.py shows
the exact-arithmetic case is bitwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose, assert_array_equal
from torch.testing import assert_close

from tpsim import Mesh, Replicate, Shard, distribute
from tpsim.nn import comm_table
from tpsim.nn.block import TransformerBlock
from tpsim.nn.config import PRESETS
from tpsim.nn.dropout import RNGTracker
from tpsim.nn.gpt import GPT

TINY = PRESETS["tiny"].with_(dtype="float64")  # V 97, h 32, 2 layers, 4 heads, s 16, b 2
MESHES = [(1,), (2,), (4,), (2, 2)]  # TP degrees dividing the 4 heads; (2, 2) is dp x tp


def mesh_of(shape) -> Mesh:
    return Mesh(shape, names=("dp", "tp")[-len(shape) :])


def placements(mesh, sp: bool, seq_dim: int = 0) -> list:
    """x (s, b, h): R or S(seq) on TP, the batch split over dp."""
    on_tp = Shard(seq_dim) if sp else Replicate()
    return [Shard(1 - seq_dim), on_tp] if mesh.ndim == 2 else [on_tp]


def relative(named) -> dict[str, np.ndarray]:
    return {n.split(".", 1)[1]: a.full() for n, a in named}


def torch_block(x, w, heads, masks=None, p=0.0):
    """Pre-LN GPT layer on (s, b, h); `masks` replays tpsim's dropout masks (keep = True)."""
    s, b, h = x.shape

    def linear(a, name):
        return F.linear(a, w[f"{name}.weight"], w[f"{name}.bias"])

    def layer_norm(a, name):
        return F.layer_norm(a, (h,), w[f"{name}.weight"], w[f"{name}.bias"], 1e-5)

    def dropout(a, key):
        return a if masks is None else a * masks[key] / (1 - p)

    qkv = linear(layer_norm(x, "input_layernorm"), "self_attention.query_key_value")
    q, k, v = qkv.reshape(s, b, heads, 3, h // heads).permute(3, 1, 2, 0, 4)  # each (b, n, s, d)
    if masks is None:
        c = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        scores = q @ k.transpose(-1, -2) / (h // heads) ** 0.5
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
        c = dropout(torch.softmax(scores, -1), "attention") @ v
    r = x + dropout(linear(c.permute(2, 0, 1, 3).reshape(s, b, h), "self_attention.dense"), "post_attention")
    hid = F.gelu(linear(layer_norm(r, "post_attention_layernorm"), "mlp.fc1"), approximate="tanh")
    return r + dropout(linear(hid, "mlp.fc2"), "post_mlp")


def run_block(shape, sp, x, dy, seq_dim=0, **kw):
    mesh = mesh_of(shape)
    kw.update(init="normal", dtype="float64", sequence_parallel=sp, seq_dim=seq_dim, tp_dim=-1, name="block")
    blk = TransformerBlock(mesh, TINY.hidden, TINY.num_heads, **kw)
    y = blk(distribute(x, mesh, placements(mesh, sp, seq_dim)))
    dropouts = [blk.self_attention.attention_dropout, blk.post_attention_dropout, blk.post_mlp_dropout]
    saved = [None if m is None else m._saved.get("mask") for m in dropouts]  # peek: what backward will use
    masks = dict(zip(["attention", "post_attention", "post_mlp"], saved, strict=True))
    dx = blk.backprop(distribute(dy, mesh, y.placements))
    return blk, {"y": y.full(), "dx": dx.full(), **relative(blk.named_grads())}, masks  # masks: DArrays


def torch_of(blk, x, dy, masks=None, p=0.0) -> dict:
    """y, dx and every weight grad of `blk`'s weights run through torch_block."""
    xt = torch.tensor(x, requires_grad=True)
    wt = {n: torch.tensor(a, requires_grad=True) for n, a in relative(blk.named_parameters()).items()}
    y = torch_block(
        xt, wt, TINY.num_heads, masks and {k: torch.tensor(m.full()) for k, m in masks.items()}, p
    )
    y.backward(torch.tensor(dy))
    return {"y": y.detach(), "dx": xt.grad, **{n: t.grad for n, t in wt.items()}}


TIGHT = dict(rtol=1e-12, atol=1e-13)  # TP=t against TP=1: the summation order, in float64


def assert_all_close(got: dict, want: dict, **tol) -> None:
    assert got.keys() == want.keys()
    for name, g in got.items():
        if isinstance(want[name], torch.Tensor):
            assert_close(torch.tensor(g), want[name], msg=name)
        else:
            assert_allclose(g, want[name], err_msg=name, **tol)


def x_shape() -> tuple[int, int, int]:
    return TINY.seq_len, TINY.micro_batch, TINY.hidden


def data(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("shape", MESHES)
@pytest.mark.parametrize("sp", [False, True])
def test_block_matches_tp1_and_torch(shape, sp):
    x, dy = data(x_shape(), 1), data(x_shape(), 2)
    blk, got, _ = run_block(shape, sp, x, dy)
    assert len(got) == 2 + 12  # y, dx and the grads of 6 weights and 6 biases
    assert_all_close(got, run_block((1,), False, x, dy)[1], **TIGHT)
    assert_all_close(got, torch_of(blk, x, dy))


def test_block_with_batch_second_layout():
    x, dy = data(x_shape(), 3), data(x_shape(), 4)
    _, got, _ = run_block((2,), True, x.swapaxes(0, 1), dy.swapaxes(0, 1), seq_dim=1)
    got["y"], got["dx"] = got["y"].swapaxes(0, 1), got["dx"].swapaxes(0, 1)
    assert_all_close(got, run_block((1,), False, x, dy)[1], **TIGHT)


@pytest.mark.parametrize("sp", [False, True])
def test_block_dropout_replays_in_torch_and_uses_megatrons_streams(sp):
    """tpsim's masks, replayed in torch, give the same output and grads; the streams are dropout.py's."""
    x, dy = data(x_shape(), 5), data(x_shape(), 6)
    blk, got, masks = run_block((2,), sp, x, dy, dropout=0.25)
    assert_all_close(got, torch_of(blk, x, dy, masks, 0.25))
    assert masks["attention"].placements == (Shard(1),)  # (b, n, s, s): each rank masks its own heads
    for key in ("post_attention", "post_mlp"):
        first, second = masks[key].shards
        # SP: each sequence shard draws its own mask from the model-parallel stream; without SP the
        # activation is replicated and every rank draws the same mask from the default stream
        assert np.array_equal(first, second) != sp
    again = run_block((2,), sp, x, dy, dropout=0.25)[1]
    assert_array_equal(again["y"], got["y"])  # the same seed, the same masks
    other = run_block((2,), sp, x, dy, dropout=0.25, tracker=RNGTracker(1))[1]  # the same weights
    assert not np.array_equal(other["y"], got["y"])


def block_communication(t: int, sp: bool, s=8, b=2, h=16):
    """comm_table rows (direction, module:collective, calls, bytes) of one block step, and bytes sent."""
    mesh = Mesh(t)
    blk = TransformerBlock(mesh, h, 8, dtype="float64", sequence_parallel=sp, name="block")
    y = blk(distribute(data((s, b, h), 0), mesh, [Shard(0) if sp else Replicate()]))
    blk.backprop(distribute(data((s, b, h), 1), mesh, y.placements))
    table = comm_table(blk)
    rows = [(r.direction, f"{r.module[6:]}:{r.collective}", r.count, r.nbytes) for r in table]
    return rows, sum(r.sent_per_device for r in table)


@pytest.mark.parametrize("t", [2, 4, 8])
def test_block_communication_without_sp_is_two_all_reduces_each_way(t):
    rows, sent = block_communication(t, False)
    n = 8 * 2 * 16 * 8  # s b h elements of 8 bytes
    assert rows == [
        ("forward", "mlp.fc2:all_reduce", 1, n),
        ("forward", "self_attention.dense:all_reduce", 1, n),
        ("backward", "mlp.fc1:all_reduce", 1, n),
        ("backward", "self_attention.query_key_value:all_reduce", 1, n),
    ]
    assert sent == 8 * n * (t - 1) // t  # 4 ring all-reduces, 2 (t-1)/t of the buffer each


@pytest.mark.parametrize("t", [2, 4])
def test_block_communication_with_sp(t):
    rows, sent = block_communication(t, True)
    n, ln = 8 * 2 * 16 * 8, 2 * 16 * 8  # s b h activations; a LayerNorm's [dw; db], (2, h)
    # the biases need no all-reduce: the row-parallel ones see the gathered dy, the column-parallel
    # ones are split by feature; the LayerNorms' [dw; db] are partial sums over the sequence
    assert rows == [
        ("forward", "mlp.fc1:all_gather", 1, n),
        ("forward", "mlp.fc2:reduce_scatter", 1, n),
        ("forward", "self_attention.dense:reduce_scatter", 1, n),
        ("forward", "self_attention.query_key_value:all_gather", 1, n),
        ("backward", "input_layernorm:all_reduce", 1, ln),
        ("backward", "mlp.fc1:all_gather", 1, n),  # x again, for dW1
        ("backward", "mlp.fc1:reduce_scatter", 1, n),  # dx
        ("backward", "mlp.fc2:all_gather", 1, n),  # dy
        ("backward", "post_attention_layernorm:all_reduce", 1, ln),
        ("backward", "self_attention.dense:all_gather", 1, n),
        ("backward", "self_attention.query_key_value:all_gather", 1, n),
        ("backward", "self_attention.query_key_value:reduce_scatter", 1, n),
    ]
    assert sent == 10 * n * (t - 1) // t + 2 * 2 * ln * (t - 1) // t  # 10 all-gathers/reduce-scatters, 2 AR


def run_gpt(shape, sp, tied=True, cfg=TINY, pad=None, seed=0):
    """One step of a GPT: the model, its ids and targets, {"loss": the mean loss, **every grad}."""
    kw = dict(sequence_parallel=sp, tied_embeddings=tied, pad_to_multiple_of=pad, seed=seed, tp_dim=-1)
    gpt = GPT(mesh_of(shape), cfg, **kw)
    rng = np.random.default_rng(7)
    ids, targets = (rng.integers(0, cfg.vocab_size, (cfg.seq_len, cfg.micro_batch)) for _ in range(2))
    loss = gpt(ids, targets)
    assert loss.shape == () and loss.placements == (Replicate(),) * len(shape)
    gpt.backprop()
    return gpt, ids, targets, {"loss": loss.full(), **relative(gpt.named_grads())}


def torch_gpt(gpt, ids, targets):
    """The same GPT in torch from the full weights; padded vocab rows are cut off (never real)."""
    cfg, V = gpt.config, gpt.config.vocab_size
    w = {n: torch.tensor(a, requires_grad=True) for n, a in relative(gpt.named_parameters()).items()}
    table, positions = w["embedding.word_embeddings.weight"], w["embedding.position_embeddings"]
    x = table[torch.tensor(ids)] + positions[: len(ids), None]
    for i in range(cfg.num_layers):
        layer = {n.removeprefix(f"layers.{i}."): t for n, t in w.items() if n.startswith(f"layers.{i}.")}
        x = torch_block(x, layer, cfg.num_heads)
    x = F.layer_norm(x, (cfg.hidden,), w["final_layernorm.weight"], w["final_layernorm.bias"], 1e-5)
    out = table if gpt.tied else w["output_layer.weight"]
    loss = F.cross_entropy((x @ out[:V].T).reshape(-1, V), torch.tensor(targets).reshape(-1))
    loss.backward()
    return {"loss": loss.detach(), **{n: t.grad for n, t in w.items()}}


@pytest.mark.parametrize("shape", MESHES)
@pytest.mark.parametrize("sp", [False, True])
@pytest.mark.parametrize("tied", [True, False])
def test_gpt_matches_tp1_and_torch(shape, sp, tied):
    gpt, ids, targets, got = run_gpt(shape, sp, tied)
    assert len(got) == 1 + 2 + 12 * TINY.num_layers + 2 + (not tied)  # loss, embeddings, layers, final LN
    assert_all_close(got, run_gpt((1,), False, tied)[3], rtol=1e-12, atol=1e-14)
    assert_all_close(got, torch_gpt(gpt, ids, targets))


@pytest.mark.parametrize("t", [1, 2, 4])
def test_gpt_vocab_padding_changes_nothing_real(t):
    gpt, _, _, got = run_gpt((t,), False, pad=8)
    assert gpt.padded_vocab_size == -(-97 // (8 * t)) * 8 * t  # Megatron's make_vocab_size_divisible_by
    table = "embedding.word_embeddings.weight"
    assert not got[table][97:].any()  # padded rows: never looked up, their logits masked out of the loss
    got[table] = got[table][:97]
    assert_all_close(got, run_gpt((1,), False)[3], rtol=1e-12, atol=1e-14)


def test_gpt_with_dropout_is_reproducible_by_seed():
    # TP=1 and TP=2 draw different masks (the model-parallel stream is seeded per TP rank), so only a
    # rerun with the same seed can be compared bit for bit
    cfg = TINY.with_(dropout=0.1)
    for shape, sp in [((1,), False), ((2,), False), ((2,), True)]:
        got = run_gpt(shape, sp, cfg=cfg)[3]
        assert_all_close(run_gpt(shape, sp, cfg=cfg)[3], got, rtol=0, atol=0)
        assert run_gpt(shape, sp, cfg=cfg, seed=1)[3]["loss"] != got["loss"]


def test_gpt_in_eval_mode_has_no_dropout():
    cfg = TINY.with_(dropout=0.5)
    mesh = Mesh(2)
    gpt = GPT(mesh, cfg).eval()
    ids = np.arange(cfg.seq_len * cfg.micro_batch).reshape(cfg.seq_len, -1) % cfg.vocab_size
    plain = GPT(Mesh(2), TINY)
    assert_array_equal(gpt(ids, ids).full(), plain(ids, ids).full())


LAYER_FORWARD = {
    False: "self_attention.dense:all_reduce mlp.fc2:all_reduce",
    True: "self_attention.query_key_value:all_gather self_attention.dense:reduce_scatter "
    "mlp.fc1:all_gather mlp.fc2:reduce_scatter",
}
LAYER_BACKWARD = {
    False: "mlp.fc1:all_reduce self_attention.query_key_value:all_reduce",
    True: "mlp.fc2:all_gather mlp.fc1:all_gather mlp.fc1:reduce_scatter post_attention_layernorm:all_reduce "
    "self_attention.dense:all_gather self_attention.query_key_value:all_gather "
    "self_attention.query_key_value:reduce_scatter input_layernorm:all_reduce",
}


@pytest.mark.parametrize("sp", [False, True])
def test_gpt_collectives_in_order(sp):
    gpt, *_ = run_gpt((2,), sp)
    calls = [
        (c.direction, f"{c.label.removeprefix('gpt.')}:{c.collective}", c.nbytes)
        for c in gpt.mesh.trace.collectives
    ]
    layers = range(TINY.num_layers)
    forward = ["embedding.word_embeddings:all_reduce"]
    forward += [f"layers.{i}.{c}" for i in layers for c in LAYER_FORWARD[sp].split()]
    forward += ["output_layer:all_gather"] * sp + ["loss:all_reduce"] * 3  # max, target logit, sum of exp
    backward = ["output_layer:all_gather", "output_layer:reduce_scatter", "final_layernorm:all_reduce"]
    backward = backward if sp else ["output_layer:all_reduce"]
    backward += [f"layers.{i}.{c}" for i in reversed(layers) for c in LAYER_BACKWARD[sp].split()]
    backward += ["embedding:all_gather"] * sp  # scatter_to_sequence_parallel_region's backward
    assert [c[:2] for c in calls] == [("forward", c) for c in forward] + [("backward", c) for c in backward]
    if not sp:  # embedding all-reduce + 2 per layer + 3 for the loss
        assert len(forward) == 1 + 2 * TINY.num_layers + 3
    s, b, h = x_shape()
    for _, name, nbytes in calls:  # (s, b, h) float64 activations, (s, b) per-token losses, LN's (2, h)
        assert nbytes == 8 * (s * b if "loss" in name else 2 * h if "layernorm" in name else s * b * h)
