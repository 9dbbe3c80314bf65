"""PipelinedGPT (tpsim/nn/pipeline_stages.py) against the unsharded tpsim GPT: the loss and every grad.

Exact data (init="exact", float64): inputs and weights are small integers, so the pipelined run and the
unsharded one differ only by summation order (microbatches summed apart, TP's partial sums), and the
detector's derived bound holds: rel_tol = n^2 u, n the numbers the model reads (tpsim/bugs/detect.py).
One microbatch on one TP rank adds in the unsharded order, so that run is bitwise equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.bugs.detect import Inputs, compare, draw, rel_tol
from tpsim.errors import PipelineError
from tpsim.mesh import Mesh
from tpsim.nn.config import GPTConfig
from tpsim.nn.gpt import GPT
from tpsim.nn.pipeline_stages import PipelinedGPT

# V = 13 splits unevenly over t = 2 and 4; 4 heads of 2 features; 3 layers over 2 or 3 stages
CFG = GPTConfig(13, 8, 3, 4, 5, micro_batch=4, dtype="float64", dropout=0.0, name="pp-test")
TABLE, COPY = "grad.embedding.word_embeddings.weight", "grad.output_layer.weight"


def named(model, loss) -> dict:
    out = {"out": loss}
    for name, g in model.named_grads():
        out["grad." + name.removeprefix("gpt.")] = g
    return out


def unsharded(feed) -> dict:
    gpt = GPT(Mesh(1), CFG, seed=3, init="exact", tp_dim=-1)
    loss = gpt(feed["tokens"], feed["targets"])
    gpt.backprop()
    want = named(gpt, loss)
    want[COPY] = want[TABLE]  # the tied weight's one grad: the truth for both copies
    return want


def pipelined(pp, tp, m, sp=False, cls=PipelinedGPT):
    model = cls(
        Mesh((pp, tp), names=("pp", "tp")), CFG, microbatches=m, sequence_parallel=sp, seed=3, init="exact"
    )
    return model


INPUTS = Inputs("tokens", (CFG.seq_len, CFG.micro_batch), vocab=CFG.vocab_size)


@settings(max_examples=12, deadline=None)
@given(
    pp=st.sampled_from([2, 3]),
    tp=st.sampled_from([1, 2, 4]),
    m=st.sampled_from([1, 2, 4]),
    sp=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pipelined_loss_and_every_grad_match_the_unsharded_gpt(pp, tp, m, sp, seed):
    feed = draw(INPUTS, seed)
    model = pipelined(pp, tp, m, sp)
    got = named(model, model.step(feed["tokens"], feed["targets"]))
    want = unsharded(feed)
    assert got.keys() == want.keys()  # every parameter, and the last stage's copy of the table
    report = compare(got, want, rel_tol(got, INPUTS))
    assert report.ok, report.format()


def test_one_microbatch_on_one_rank_per_stage_is_bitwise_the_unsharded_gpt():
    """The same sums in the same order; the embedding group adds lookup + logits, as GPT accumulates them."""
    feed = draw(INPUTS, 0)
    model = pipelined(2, 1, 1)
    got = named(model, model.step(feed["tokens"], feed["targets"]))
    want = unsharded(feed)
    for name, g in got.items():
        np.testing.assert_array_equal(g.full(), want[name].full(), err_msg=name)


def test_a_second_step_starts_from_zero_grads():
    """Megatron zeroes its grad buffers each iteration: two steps on the same batch give the same grads."""
    feed = draw(INPUTS, 4)
    model = pipelined(2, 2, 2)
    first = {k: g.full() for k, g in named(model, model.step(feed["tokens"], feed["targets"])).items()}
    again = named(model, model.step(feed["tokens"], feed["targets"]))
    for name, g in again.items():
        np.testing.assert_array_equal(g.full(), first[name], err_msg=name)


@pytest.mark.parametrize("tp", [1, 2])
def test_the_two_copies_start_and_stay_identical(tp):
    """Same numbers at setup, the same grad after the embedding group: one SGD step keeps them equal."""
    model = pipelined(2, tp, 2)
    first = model.stages[0].embedding.word_embeddings.params["weight"]
    last = model.stages[-1].output_layer.params["weight"]
    assert [np.array_equal(a, b) for a, b in zip(first.shards, last.shards, strict=True)] == [True] * tp
    feed = draw(INPUTS, 1)
    model.step(feed["tokens"], feed["targets"])
    g0 = model.stages[0].embedding.word_embeddings.grads["weight"]
    g1 = model.stages[-1].output_layer.grads["weight"]
    for a, b, w0, w1 in zip(g0.shards, g1.shards, first.shards, last.shards, strict=True):
        np.testing.assert_array_equal(w0 - 0.1 * a, w1 - 0.1 * b)


@pytest.mark.parametrize(("pp", "tp", "m"), [(2, 1, 2), (2, 2, 2), (3, 2, 1)])
def test_every_stage_boundary_byte_crosses_the_pp_tp_mesh(pp, tp, m):
    """Each microbatch: one send per boundary forward and one back, (s, b/m, h) per TP rank (no SP), from
    (i, r) to (i +- 1, r); then the embedding group's all-reduce of the table's pieces between (0, r) and
    (p-1, r), one run per shape of piece (V = 13 splits 7 + 6 over t = 2)."""
    model = pipelined(pp, tp, m)
    feed = draw(INPUTS, 2)
    model.step(feed["tokens"], feed["targets"])
    world = model.world
    records = world.trace.collectives
    sends = [c.index for c in records if c.label.startswith("pp.send_")]
    reduces = [c.index for c in records if c.label == "embedding_group.all_reduce"]
    assert len(sends) == 2 * (pp - 1) * m and len(records) == len(sends) + len(reduces)
    assert len(reduces) == len({-(-CFG.vocab_size // tp), CFG.vocab_size // tp})
    piece = CFG.seq_len * (CFG.micro_batch // m) * CFG.hidden * 8  # float64
    assert {records[i].wire_bytes for i in sends} == {tp * piece}
    t = world.trace.transfers()
    for i, src, dst in zip(t["collective"], t["src"], t["dst"], strict=True):
        (a, r), (b, q) = world.coordinate(int(src)), world.coordinate(int(dst))
        assert r == q and (abs(a - b) == 1 if i in sends else {a, b} == {0, pp - 1})


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: PipelinedGPT(Mesh((2, 2, 1), names=("pp", "tp", "dp")), CFG), "2-d mesh"),
        (lambda: PipelinedGPT(Mesh((1, 2), names=("pp", "tp")), CFG), "pp >= 2"),
        (lambda: PipelinedGPT(Mesh((2, 1), names=("pp", "tp")), CFG, microbatches=0), "microbatches = 0"),
    ],
)
def test_bad_layouts_are_refused(make, says):
    with pytest.raises(PipelineError, match=says):
        make()
