"""Half precision end to end: every tpsim.nn layer keeps bfloat16 / float16, forward and backward.

The rule (tpsim/nn/ops.py): a local op on bfloat16 or float16 computes in float32 and rounds once to
the input's dtype.  So no output, input gradient, parameter gradient or collective may come out (or
move) in float32: a silent switch would double the bytes on the wire and break the comparison with
the reference.  The ops-level tests check the "computes in float32, rounds once" half of the rule on
inputs where rounding at every step would give another answer.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from tpsim import Mesh, Replicate, Shard, distribute
from tpsim import nn as t_nn
from tpsim.dtypes import bfloat16
from tpsim.meta import MetaArray
from tpsim.nn import ops

DTYPES = ["bfloat16", "float16"]
S, B, H, HEADS, FFN, VOCAB = 5, 2, 8, 4, 12, 11


def _build(layer: str, mesh, dtype: str, sp: bool):
    """(module, owner of the grads, input kind, input shape, input placement) for one layer."""
    kw = dict(dtype=dtype, seed=3)
    seq = Shard(0) if sp else Replicate()
    if layer == "column":
        m = t_nn.ColumnParallelLinear(mesh, H, FFN, sequence_parallel=sp, **kw)
    elif layer == "row":
        m = t_nn.RowParallelLinear(mesh, FFN, H, sequence_parallel=sp, **kw)
        return m, m, "x", (S, B, FFN), Shard(2)
    elif layer == "mlp":
        m = t_nn.ParallelMLP(mesh, H, FFN, sequence_parallel=sp, **kw)
    elif layer == "attention":
        m = t_nn.ParallelAttention(mesh, H, HEADS, sequence_parallel=sp, attention_dropout=0.2, **kw)
    elif layer == "layernorm":
        m = t_nn.LayerNorm(mesh, H, sequence_parallel=sp, **kw)
    elif layer == "dropout":
        m = t_nn.Dropout(mesh, 0.3, tracker=t_nn.RNGTracker(1))
    elif layer == "block":
        m = t_nn.TransformerBlock(mesh, H, HEADS, FFN, dropout=0.1, sequence_parallel=sp, **kw)
    elif layer == "embedding":
        m = t_nn.VocabParallelEmbedding(mesh, VOCAB, H, sequence_parallel=sp, **kw)
        return m, m, "ids", (S, B), Replicate()
    elif layer == "logits":
        table = t_nn.VocabParallelEmbedding(mesh, VOCAB, H, sequence_parallel=sp, **kw)
        return t_nn.VocabParallelLogits(table), table, "x", (S, B, H), seq
    elif layer == "loss":
        padded = t_nn.padded_vocab_size(VOCAB, mesh.size, 4)
        m = t_nn.VocabParallelCrossEntropy(mesh, label_smoothing=0.1, vocab_size=VOCAB)
        return m, m, "logits", (S, B, padded), Shard(2)
    elif layer == "gpt":
        cfg = t_nn.GPTConfig(vocab_size=VOCAB, hidden=H, num_layers=2, num_heads=HEADS, seq_len=S,
                             ffn_hidden=FFN, micro_batch=B, dtype=dtype, dropout=0.1)
        m = t_nn.GPT(mesh, cfg, sequence_parallel=sp, pad_to_multiple_of=4, seed=3)
        return m, m, "ids+targets", (S, B), Replicate()
    return m, m, "x", (S, B, H), seq


LAYERS = ["column", "row", "mlp", "attention", "layernorm", "dropout", "block", "embedding", "logits",
          "loss", "gpt"]


def _all_dtypes(arr) -> set[str]:
    return {str(s.dtype) for s in arr.shards} | {str(arr.dtype)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sp", [False, True])
@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_keeps_half_precision_forward_and_backward(layer, sp, dtype):
    mesh = Mesh(2)
    module, owner, kind, shape, placement = _build(layer, mesh, dtype, sp)
    rng = np.random.default_rng(0)
    want = {dtype}
    if kind == "ids+targets":
        ids, targets = rng.integers(0, VOCAB, size=shape), rng.integers(0, VOCAB, size=shape)
        y = module(ids, targets)
        dx = module.backprop()
    elif kind == "ids":
        y = module(rng.integers(0, VOCAB, size=shape))
        dx = module.backprop(distribute(rng.standard_normal(y.shape).astype(dtype), mesh, list(y.placements)))
    else:
        x = distribute(rng.standard_normal(shape).astype(dtype), mesh, [placement])
        if kind == "logits":
            y, mean = module(x, rng.integers(0, VOCAB, size=shape[:-1]))
            assert _all_dtypes(mean) == want
        else:
            y = module(x)
        dx = module.backprop(distribute(rng.standard_normal(y.shape).astype(dtype), mesh, list(y.placements)))
        assert _all_dtypes(dx) == want, f"{layer}: dx"
    assert _all_dtypes(y) == want, f"{layer}: out"
    grads = dict(owner.named_grads())
    assert grads or layer in ("dropout", "loss")
    for name, g in grads.items():
        assert _all_dtypes(g) == want, f"{layer}: grad {name}"
        assert all(np.isfinite(s.astype(np.float32)).all() for s in g.shards), name
    if kind == "ids+targets":
        assert dx is None and np.isfinite(float(y.shards[0].astype(np.float32)))
    moved = {c.dtype for c in mesh.trace.collectives}
    assert moved <= want, f"{layer}: collectives moved {moved}"  # never a float32 buffer on the wire


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_local_op_returns_its_input_dtype(dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4, 5)).astype(dtype)
    b = rng.standard_normal((3, 5, 2)).astype(dtype)
    outs = [ops.matmul(a, b), ops.elementwise(lambda u: 0.5 * u + 1.0, a), ops.sum_to(a, (5,)),
            ops.reduce_last(np.sum, a), ops.reduce_last(np.max, a, keepdims=False), ops.gelu(a),
            ops.gelu_grad(a, a), ops.transpose(a, (0, 2, 1))]
    for out, flops, nbytes in outs:
        assert out.dtype == np.dtype(dtype), out.dtype
        assert flops >= 0 and nbytes >= 0
    meta = MetaArray((3, 4, 5), dtype)
    assert ops.gelu(meta)[0].dtype == np.dtype(dtype)
    assert ops.matmul(meta, MetaArray((3, 5, 2), dtype))[0].dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_half_precision_accumulates_in_float32_and_rounds_once(dtype):
    # 1 followed by 512 copies of 1/512: a half-precision accumulator loses every 1/512 (1 + 2^-9
    # rounds back to 1 in bfloat16 and float16); a float32 one reaches exactly 2
    v = np.concatenate([[1.0], np.full(512, 1 / 512)]).astype(dtype)
    assert float(ops.matmul(v[None, :], np.ones((513, 1), dtype))[0][0, 0]) == 2.0
    assert float(ops.sum_to(v[:, None], (1,))[0][0]) == 2.0
    assert float(ops.reduce_last(np.sum, v)[0][0]) == 2.0
    x = np.linspace(-4, 4, 801).astype(dtype)
    wide = x.astype(np.float32)
    want = (0.5 * wide * (1 + np.tanh(ops.GELU_C * (wide + 0.044715 * wide**3)))).astype(dtype)
    np.testing.assert_array_equal(ops.gelu(x)[0], want)  # one rounding, at the end


def test_gelu_follows_torchs_rule_in_bfloat16():
    torch = pytest.importorskip("torch")

    def as_torch(a):
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)

    x = np.linspace(-6, 6, 2001).astype(bfloat16)
    ref = torch.nn.functional.gelu(as_torch(x), approximate="tanh")
    # torch's own bfloat16 GeLU is its float32 GeLU rounded once: the rule ops.py follows
    assert torch.equal(ref, torch.nn.functional.gelu(as_torch(x).float(), approximate="tanh").bfloat16())
    got = ops.gelu(x)[0]
    assert got.dtype == np.dtype(ml_dtypes.bfloat16)
    torch.testing.assert_close(as_torch(got), ref)  # bfloat16's default rtol 1.6e-2, atol 1e-5
    # bit for bit where float32 has no cancellation (|x| <= 2); past it 1 + tanh(.) -> 0 loses
    # digits, and NumPy's and torch's float32 tanh round those differently (a few % of elements)
    mid = np.abs(x.astype(np.float32)) <= 2
    np.testing.assert_array_equal(got[mid].view(np.int16), ref.view(torch.int16).numpy()[mid])
