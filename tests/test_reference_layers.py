"""The reference layers against tpsim's, forward and backward, on real gloo ranks (world sizes 1-4).

The oracle is the other engine: rank d of the reference must hold what tpsim's device d holds, for the
output, the input gradient and every parameter gradient.  Hypothesis draws one case per layer (dims
uneven where tpsim allows it, options, exact or float data); all of them run in ONE spawn per world
size.  What must hold is what `reference.check` claims (its docstring): exact-math layers bitwise on
exact data, the others within assert_close; the same collectives in the same order; replicated
results the same bits on every rank; in schedule mode every collective bitwise equal to tpsim's engine
on the same operands, with equal bytes.

Bad input is refused by both engines alike, before any collective (no spawn needed for that).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_oracle import draw_llama_case

from reference import attention as r_attention
from reference import embedding as r_embedding
from reference import linear as r_linear
from reference import loss as r_loss
from reference.cases import EXACT_MATH, LAYERS, Case, default_cases
from reference.check import check
from reference.llama_cases import LAYERS as LLAMA_LAYERS
from tpsim import Mesh
from tpsim import nn as t_nn
from tpsim.errors import PlacementError, ShapeError, TokenIdError


@st.composite
def layer_case(draw, layer: str, t: int) -> Case:
    """One case of `layer` for TP degree t: dims that need not divide t are drawn freely."""
    s, b = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    sp = draw(st.booleans())
    dims, opts = dict(s=s, b=b), dict(sequence_parallel=sp)
    if layer in ("column", "row"):
        dims.update(inp=draw(st.integers(1, 9)), out=draw(st.integers(1, 9)))
        if layer == "column" and not sp:
            opts.update(gather_output=draw(st.booleans()), bias=draw(st.booleans()))
        if layer == "row" and not sp:
            opts.update(input_is_parallel=draw(st.booleans()))
    elif layer == "mlp":
        dims.update(hidden=draw(st.integers(1, 8)), ffn=draw(st.integers(1, 12)))
    elif layer in ("attention", "block"):
        heads = t * draw(st.integers(1, 2))  # whole heads per rank: the one dim that must divide
        dims.update(hidden=heads * draw(st.integers(1, 3)), heads=heads)
        if layer == "block":
            dims.update(ffn=draw(st.integers(1, 8)))
            opts.update(dropout=draw(st.sampled_from([0.0, 0.2])))
        else:
            opts.update(attention_dropout=draw(st.sampled_from([0.0, 0.3])))
    elif layer in ("embedding", "logits"):
        dims.update(vocab=draw(st.integers(1, 13)), hidden=draw(st.integers(1, 6)))
        opts.update(pad_to_multiple_of=draw(st.sampled_from([None, 2, 4])))
    elif layer == "loss":
        dims.update(vocab=draw(st.integers(1, 13)))
        opts = dict(pad_to_multiple_of=draw(st.sampled_from([None, 4])),
                    label_smoothing=draw(st.sampled_from([0.0, 0.1])))
    elif layer == "layernorm":
        dims.update(hidden=draw(st.integers(1, 8)))
    elif layer == "dropout":
        dims.update(hidden=draw(st.integers(1, 6)))
        opts.update(p=draw(st.sampled_from([0.1, 0.5])))
    elif layer == "gpt":  # small: every layer above, twice, plus positions, tied logits and the loss
        heads = t * draw(st.integers(1, 2))
        dims.update(vocab=draw(st.integers(1, 13)), hidden=heads * draw(st.integers(1, 2)), heads=heads,
                    ffn=draw(st.integers(1, 8)), layers=draw(st.integers(1, 2)))
        dims.update(seq_len=s + draw(st.integers(0, 2)))  # positions past s: rows with zero gradient
        opts.update(untied=draw(st.booleans()), pad_to_multiple_of=draw(st.sampled_from([None, 4])),
                    dropout=draw(st.sampled_from([0.0, 0.2])))
    elif layer in LLAMA_LAYERS:
        draw_llama_case(draw, layer, t, dims, opts)
    data = draw(st.sampled_from(["exact", "float"]))
    return Case(layer, dims, opts, data, "float32", seed=draw(st.integers(0, 2**16)))


def failures(result: dict) -> str:
    bad = [r for r in result["rows"] if not r["ok"]] + [c for c in result["cases"] if not c["ok"]]
    return "\n".join(map(str, bad))


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("world_size, comm", [(1, "native"), (2, "schedule"), (3, "schedule"), (4, "native")])
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_layer_matches_tpsim(world_size, comm, data):
    cases = [data.draw(layer_case(layer, world_size), label=layer) for layer in LAYERS]
    result = check(world_size, cases, comm=comm, device="cpu", timeout=240)
    assert result["ok"], failures(result)
    rows = result["rows"]
    assert {r["layer"] for r in rows} == set(LAYERS)
    for r in rows:  # the claim itself, spelled out
        if r["data"] == "exact" and r["layer"] in EXACT_MATH:
            assert r["bitwise"], r
        assert r["close"], r
        assert r["ranks_agree"] is not False, r
    for c in result["cases"]:
        assert c["counts_equal"] and not c["record_problems"], c
        if comm == "schedule":
            assert c["replay_bitwise"] and c["replay_bytes_equal"], c


class FakeComm:
    """Rank `rank` of `size`, for constructor and input checks that must fail before any collective."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    def __getattr__(self, name):
        raise AssertionError(f"a rejected call must not reach the collective {name}")


def test_heads_that_do_not_divide_are_refused_by_both_engines():
    with pytest.raises(ShapeError, match=r"num_heads = 4 does not divide by the TP degree 3.*\[1, 2, 4\]"):
        t_nn.ParallelAttention(Mesh(3), 8, 4)
    with pytest.raises(ShapeError, match=r"rank 1\): num_heads = 4 does not divide by the TP degree 3"):
        r_attention.ParallelAttention(FakeComm(1, 3), 8, 4)


def test_wrong_features_name_the_rank_and_what_it_takes():
    layer = r_linear.RowParallelLinear(FakeComm(2, 3), 7, 4)  # in 7 over 3 ranks: 3, 3, 1
    want = r"rank 2 of 3\): input has 3 features .* takes its piece of in_features = 1"
    with pytest.raises(ShapeError, match=want):
        layer(torch.zeros(2, 3))


def test_token_ids_out_of_range_are_refused_before_the_all_reduce():
    table = r_embedding.VocabParallelEmbedding(FakeComm(0, 2), 10, 4)
    with pytest.raises(TokenIdError, match=r"rank 0\): token id 10 at position \(1,\) .* valid ids are 0..9"):
        table(torch.tensor([3, 10]))


def test_loss_refuses_logits_of_the_wrong_width_for_this_rank():
    ce = r_loss.VocabParallelCrossEntropy(FakeComm(1, 3), padded_vocab_size=10)  # 4, 4, 2 columns
    with pytest.raises(PlacementError, match=r"rank 1\): logits hold 3 vocab columns .* give rank 1 4"):
        ce(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))


def test_uneven_vocab_pieces_follow_torch_chunk():
    sizes = [r_embedding.VocabParallelEmbedding(FakeComm(r, 4), 10, 3).weight.shape[0] for r in range(4)]
    assert sizes == [3, 3, 3, 1]
    assert sizes == [c.shape[0] for c in torch.arange(10).chunk(4)]


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_every_layer_on_cuda():
    cases = [data for layer in LAYERS for data in (
        Case(layer, *_FIXED[layer], data="exact"), Case(layer, *_FIXED[layer], data="float"))]
    result = check(1, cases, comm="native", device="cuda", timeout=240)
    assert result["ok"], failures(result)


_FIXED = {
    "column": (dict(s=5, b=2, inp=7, out=5), dict(sequence_parallel=True)),
    "row": (dict(s=5, b=2, inp=7, out=5), {}),
    "mlp": (dict(s=5, b=2, hidden=6, ffn=10), {}),
    "attention": (dict(s=5, b=2, hidden=4, heads=2), dict(attention_dropout=0.2)),
    "embedding": (dict(s=5, b=2, vocab=11, hidden=6), dict(pad_to_multiple_of=4)),
    "logits": (dict(s=5, b=2, vocab=11, hidden=6), {}),
    "loss": (dict(s=5, b=2, vocab=11), dict(label_smoothing=0.1)),
    "layernorm": (dict(s=5, b=2, hidden=6), {}),
    "dropout": (dict(s=5, b=2, hidden=6), dict(p=0.25)),
    "block": (dict(s=5, b=2, hidden=4, heads=2, ffn=6), dict(dropout=0.1)),
    "gpt": (dict(s=5, b=2, vocab=11, hidden=8, heads=2, ffn=6, layers=2, seq_len=6), dict(dropout=0.1)),
    "rmsnorm": (dict(s=5, b=2, hidden=6), {}),
    "swiglu": (dict(s=5, b=2, hidden=6, ffn=4), {}),
    "gqa": (dict(s=5, b=2, hidden=8, heads=4, kv=1), dict(qkv_bias=True)),
    "llama_block": (dict(s=5, b=2, hidden=8, heads=4, kv=2, ffn=4), {}),
    "llama": (dict(s=5, b=2, vocab=11, hidden=8, heads=4, kv=1, ffn=4, layers=2), {}),
}


@pytest.mark.multiprocess
@pytest.mark.slow
def test_every_layer_in_bfloat16_at_world_size_2():
    """bfloat16, both data kinds, every layer and GPT, schedule mode: what check.py claims must hold.
    The engines follow one precision rule (tpsim/nn/ops.py), so on top of the claims every collective
    moves bfloat16 (as many bytes as tpsim), never a float32 that a dtype switch would have left."""
    cases = [c for data in ("exact", "float") for c in default_cases(2, data, "bfloat16")]
    result = check(2, cases, comm="schedule", device="cpu", timeout=240)
    assert result["ok"], failures(result)
    assert {r["layer"] for r in result["rows"]} == set(LAYERS)
    for r in result["rows"]:
        assert r["dtype"] == "bfloat16"
        if r["data"] == "exact" and r["layer"] in EXACT_MATH:
            assert r["bitwise"], r
        if r["data"] == "float":
            assert r["close"], r
    for c in result["cases"]:
        assert c["replay_bitwise"] and c["replay_bytes_equal"] and not c["record_problems"], c
        assert c["ref_bytes"] == c["tpsim_bytes"], c
