"""VocabParallelEmbedding, VocabParallelLogits and VocabParallelCrossEntropy against their definitions.

The embedding is a row lookup on the full table and its gradient a scatter-add (bitwise, for every
TP degree, uneven vocab and padding); the loss and dlogits are torch's cross_entropy on the unpadded
logits (float64); the padded columns change nothing, where an unmasked loss would.
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
from tpsim.errors import PlacementError, ShapeError, TpsimError
from tpsim.nn import ColumnParallelLinear
from tpsim.nn.embedding import VocabParallelEmbedding, VocabParallelLogits, padded_vocab_size
from tpsim.nn.init import global_weight
from tpsim.nn.loss import VocabParallelCrossEntropy

R, S = tpsim.Replicate(), tpsim.Shard
PADS = st.sampled_from([None, 1, 3, 8])  # None: V' = V, split unevenly by the torch.chunk rule


@st.composite
def problems(draw):
    """A TP degree, a vocab (often not a multiple of it), a padding, and token ids (s, b)."""
    t, vocab, pad = draw(st.integers(1, 8)), draw(st.integers(1, 30)), draw(PADS)
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 3)))
    return t, vocab, pad, draw(hnp.arrays(np.int64, shape, elements=st.integers(0, vocab - 1)))


def test_padded_vocab_size_is_megatrons():
    assert padded_vocab_size(50257, 8, 128) == 51200  # GPT-2, make_vocab_size_divisible_by=128, t = 8
    assert padded_vocab_size(50257, 1, 128) == 50304
    assert padded_vocab_size(10, 4) == 10
    rows = [w.shape[0] for w in VocabParallelEmbedding(tpsim.Mesh(4), 10, 2).params["weight"].shards]
    assert rows == [3, 3, 3, 1]  # torch.chunk
    padded = VocabParallelEmbedding(tpsim.Mesh(4), 10, 2, pad_to_multiple_of=1).params["weight"]
    assert [w.shape[0] for w in padded.shards] == [3, 3, 3, 3]


@given(problems(), st.integers(1, 6), st.booleans())
def test_embedding_is_a_lookup_on_the_full_table(problem, hidden, sp):
    t, vocab, pad, ids = problem
    mesh = tpsim.Mesh(t)
    emb = VocabParallelEmbedding(mesh, vocab, hidden, seed=3, pad_to_multiple_of=pad, sequence_parallel=sp)
    table = global_weight((emb.padded_vocab_size, hidden), 3)  # (V', h)
    assert_array_equal(table[:vocab], global_weight((vocab, hidden), 3))  # real rows: whatever the padding
    y = emb(ids)
    assert y.placements == (S(0) if sp else R,)
    assert_array_equal(y.full(), table[ids])
    dy = np.random.default_rng(t).standard_normal(y.shape).astype(np.float32)
    assert emb.backprop(tpsim.distribute(dy, mesh, y.placements)) is None
    dtable = np.zeros_like(table)
    np.add.at(dtable, ids, dy)
    assert emb.grads["weight"].placements == (S(0),)
    assert_array_equal(emb.grads["weight"].full(), dtable)


@given(st.integers(1, 8), st.integers(1, 20), PADS, st.booleans())
def test_tied_logits_are_x_times_the_table(t, vocab, pad, sp):
    mesh = tpsim.Mesh(t)
    kw = dict(init="exact", dtype="float64", pad_to_multiple_of=pad, sequence_parallel=sp)
    emb = VocabParallelEmbedding(mesh, vocab, 3, **kw)
    head, table = VocabParallelLogits(emb), emb.params["weight"].full()
    rng = np.random.default_rng(vocab)
    x = rng.integers(-2, 3, (4, 2, 3)).astype(np.float64)  # small integers: every sum is exact
    z = head(tpsim.distribute(x, mesh, [S(0) if sp else R]))
    assert z.placements == (S(2),)
    assert_array_equal(z.full(), x @ table.T)
    dz = rng.integers(-2, 3, z.shape).astype(np.float64)
    dx = head.backprop(tpsim.distribute(dz, mesh, z.placements))
    assert dx.placements == (S(0) if sp else R,)
    assert_array_equal(dx.full(), dz @ table)
    assert_array_equal(emb.grads["weight"].full(), dz.reshape(-1, z.shape[-1]).T @ x.reshape(-1, 3))


def padded_logits(vocab: int, padded: int, shape, seed: int) -> np.ndarray:
    """(s, b, V') float64; the padded columns are large, so a loss that did not mask them would show it."""
    z = np.random.default_rng(seed).standard_normal((*shape, padded)) * 3
    z[..., vocab:] += 10
    return z


@given(problems(), st.sampled_from([0.0, 0.1, 0.3]), st.booleans())
def test_cross_entropy_is_torch_cross_entropy(problem, eps, of_mean):
    t, vocab, pad, targets = problem
    mesh = tpsim.Mesh(t)
    z = padded_logits(vocab, padded_vocab_size(vocab, t, pad), targets.shape, t)
    ce = VocabParallelCrossEntropy(mesh, label_smoothing=eps, vocab_size=vocab)
    loss, mean = ce(tpsim.distribute(z, mesh, [S(2)]), targets)
    weights = np.random.default_rng(1).standard_normal(targets.shape)
    dz = ce.backprop(None if of_mean else weights)
    zt = torch.tensor(z[..., :vocab], requires_grad=True)
    ref = F.cross_entropy(
        zt.flatten(0, 1), torch.tensor(targets).flatten(), label_smoothing=eps, reduction="none"
    ).view(targets.shape)
    (ref.mean() if of_mean else (ref * torch.tensor(weights)).sum()).backward()
    assert loss.placements == (R,) and dz.placements == (S(2),)
    assert_close(torch.tensor(loss.full()), ref.detach())
    assert_close(torch.tensor(mean.full()), ref.mean().detach())
    assert_close(torch.tensor(dz.full()[..., :vocab]), zt.grad)
    assert_array_equal(dz.full()[..., vocab:], 0)  # padded columns get no gradient


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_padding_does_not_change_the_loss(eps):
    """Tied logits at TP=1 (V' = 10) and TP=4, 3 (V' = 16, 24): one loss; unmasked, three."""
    vocab, ids = 10, np.arange(6).reshape(3, 2) * 7 % 10
    losses, naive = {}, {}
    for t, pad in [(1, None), (4, 4), (3, 8)]:
        mesh = tpsim.Mesh(t)
        emb = VocabParallelEmbedding(mesh, vocab, 4, dtype="float64", pad_to_multiple_of=pad)
        logits = VocabParallelLogits(emb)(emb(ids))  # the padded rows are random: their logits are not 0
        losses[t] = VocabParallelCrossEntropy(mesh, label_smoothing=eps, vocab_size=vocab)(logits, ids)[
            0
        ].full()
        z = logits.full()  # naive: max, sum-exp and the smoothing mean over all V' columns
        log_z = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        nll = log_z - np.take_along_axis(z, ids[..., None], -1)[..., 0]
        naive[t] = (1 - eps) * nll + eps * (log_z - z.mean(-1))
        assert z.shape[-1] == {1: 10, 4: 16, 3: 24}[t]
    assert_close(naive[1], losses[1])  # nothing to mask at TP=1
    for t in (4, 3):
        assert_close(losses[t], losses[1])
        assert not np.allclose(naive[t], losses[1])


@pytest.mark.parametrize("t", range(1, 9))
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_makes_three_all_reduces_forward_and_none_backward(t, eps):
    s, b, vocab = 3, 2, 11
    mesh = tpsim.Mesh(t)
    ce = VocabParallelCrossEntropy(mesh, label_smoothing=eps, vocab_size=vocab)
    logits = tpsim.distribute(padded_logits(vocab, vocab, (s, b), 0), mesh, [S(2)])
    ce(logits, np.zeros((s, b), np.int64))
    forward = [(c.collective, c.op, c.nbytes // 8, c.direction) for c in mesh.trace.collectives]
    with_sum = 2 if eps else 1  # smoothing: the sum of the shifted logits rides with the target logit
    assert forward == [
        ("all_reduce", "max", s * b, "forward"),
        ("all_reduce", "sum", with_sum * s * b, "forward"),
        ("all_reduce", "sum", s * b, "forward"),
    ]
    ce.backprop()
    assert len(mesh.trace.collectives) == 3


@pytest.mark.parametrize("t", range(1, 9))
@pytest.mark.parametrize("sp", [False, True])
def test_embedding_communication(t, sp):
    s, b, h = 5, 2, 4
    mesh = tpsim.Mesh(t)
    emb = VocabParallelEmbedding(mesh, 13, h, sequence_parallel=sp)
    y = emb(np.ones((s, b), np.int64))
    emb.backprop(y)
    got = [(c.collective, c.op, c.nbytes, c.direction) for c in mesh.trace.collectives]
    size = s * b * h * 4
    if sp:
        assert got == [("reduce_scatter", "sum", size, "forward"), ("all_gather", None, size, "backward")]
    else:
        assert got == [("all_reduce", "sum", size, "forward")]


def test_bad_input_names_the_value_and_changes_nothing():
    mesh = tpsim.Mesh(4)
    emb = VocabParallelEmbedding(mesh, 10, 4, pad_to_multiple_of=2)  # V' = 16: rows 10..15 are padding
    with pytest.raises(TpsimError, match=r"token id 12 at position \(1, 0\) is out of range.* 0\.\.9"):
        emb(np.array([[1, 2], [12, 3]]))
    ce = VocabParallelCrossEntropy(mesh, vocab_size=10)
    logits = tpsim.distribute(np.zeros((2, 2, 16)), mesh, [S(2)])
    with pytest.raises(TpsimError, match=r"target -1 at position \(0, 1\)"):
        ce(logits, np.array([[0, -1], [1, 2]]))
    with pytest.raises(TpsimError, match="integer dtype"):
        ce(logits, np.zeros((2, 2)))
    with pytest.raises(ShapeError, match="vocab_size = 20 but the logits have 16 columns"):
        VocabParallelCrossEntropy(mesh, vocab_size=20)(logits, np.zeros((2, 2), np.int64))
    with pytest.raises(ShapeError, match=r"targets have shape \(2, 3\)"):
        ce(logits, np.zeros((2, 3), np.int64))
    with pytest.raises(PlacementError, match="split by vocab"):
        ce(tpsim.distribute(np.zeros((2, 2, 16)), mesh, [R]), np.zeros((2, 2), np.int64))
    with pytest.raises(ShapeError, match=r"hidden size 3 .* hidden = 4"):
        VocabParallelLogits(emb)(tpsim.distribute(np.zeros((2, 2, 3), np.float32), mesh, [R]))
    assert mesh.trace.collectives == [] and mesh.trace.compute == []
    with pytest.raises(ShapeError, match="pad_to_multiple_of = 0"):
        VocabParallelEmbedding(mesh, 10, 4, pad_to_multiple_of=0)
    with pytest.raises(ShapeError, match="hidden = 0"):
        VocabParallelEmbedding(mesh, 10, 0)


@pytest.mark.parametrize(("t", "pad", "sp"), [(1, None, False), (3, None, True), (4, 8, True), (8, 1, False)])
def test_shape_only_run_records_the_same(t, pad, sp):
    """Embedding -> ColumnParallelLinear(h, V') -> loss and back, on data and on shapes only."""

    def run(meta: bool):
        mesh, init = tpsim.Mesh(t), None if meta else "normal"
        emb = VocabParallelEmbedding(mesh, 13, 6, init=init, pad_to_multiple_of=pad, sequence_parallel=sp)
        head = ColumnParallelLinear(
            mesh, 6, emb.padded_vocab_size, bias=False, init=init, sequence_parallel=sp
        )
        ce = VocabParallelCrossEntropy(mesh, label_smoothing=0.1, vocab_size=13)
        ids = tpsim.meta((4, 3), "int64") if meta else np.arange(12).reshape(4, 3)
        ce(head(emb(ids)), ids)
        emb.backprop(head.backprop(ce.backprop()))
        return (
            [(c.collective, c.op, c.nbytes, c.direction, c.label) for c in mesh.trace.collectives],
            [(c.device, c.name, c.flops, c.nbytes) for c in mesh.trace.compute],
            [d["peak"] for d in mesh.memory()],
        )

    assert run(meta=True) == run(meta=False)
