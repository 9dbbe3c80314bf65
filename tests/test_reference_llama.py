"""`python -m reference.check` on the Llama layers at world size 2: RMSNorm, SwiGLU, GQA (KV heads split,
and one KV head replicated on both ranks with its grads all-reduced), the block and a 2-layer model,
with and without SP on an uneven sequence.  Exact data: every tensor within the rounding tier's derived
bound (these layers run exp, sqrt or cos); float data: assert_close; schedule mode: bitwise replay and
the bytes tpsim counted."""

from __future__ import annotations

import pytest

from reference.cases import default_cases
from reference.check import check
from reference.llama_cases import LAYERS

WS = 2


def cases():
    return [c for d in ("exact", "float") for c in default_cases(WS, d, "float32") if c.layer in LAYERS]


def test_every_llama_layer_has_cases_with_split_and_replicated_kv_heads():
    cs = cases()
    assert {c.layer for c in cs} == set(LAYERS)
    kv = {c.dims["kv"] for c in cs if c.layer == "gqa"}
    assert kv == {WS, 1}  # t divides the KV heads; t exceeds them (replicated)
    assert {c.sp for c in cs if c.layer == "gqa"} == {False, True}


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("comm", ["native", "schedule"])
def test_llama_layers_pass_the_equivalence_check(comm):
    result = check(WS, cases(), comm=comm, timeout=240)
    bad = [(r["case"], r["tensor"], r["max_abs"], r["bound"]) for r in result["rows"] if not r["ok"]]
    assert result["ok"], bad
    assert {r["layer"] for r in result["rows"]} == set(LAYERS)
    assert {r["claim"] for r in result["rows"]} == {"rounding", "close"}
    assert all(c["counts_equal"] and not c["record_problems"] for c in result["cases"])
    if comm == "schedule":
        assert all(c["replay_bitwise"] and c["ref_bytes"] == c["tpsim_bytes"] for c in result["cases"])
    # the replicated KV head's gradient all-reduce ran in both engines, counted alike
    gqa = [c for c in result["cases"] if "kv=1" in c["case"] and c["case"].startswith("gqa")]
    assert gqa and all(c["counts_equal"] for c in gqa)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_llama_layers_pass_in_bfloat16():
    """bfloat16 through RMSNorm, SiLU, RoPE and softmax: float32 inside, one rounding per op, in both."""
    cs = [c for d in ("exact", "float") for c in default_cases(WS, d, "bfloat16") if c.layer in LAYERS]
    result = check(WS, cs, comm="schedule", timeout=240)
    assert result["ok"], [(r["case"], r["tensor"]) for r in result["rows"] if not r["ok"]]
    assert all(r["dtype"] == "bfloat16" for r in result["rows"])
    assert all(c["ref_bytes"] == c["tpsim_bytes"] for c in result["cases"])


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("comm", ["native", "schedule"])
def test_kv_heads_shared_by_sub_groups_at_world_size_4(comm):
    """t = 4, g = 2: each KV head on 2 ranks, its grads all-reduced in 2 sub-groups; the reference's sub-group
    Comm enters its calls in the TP record, so counts, records, replay and bytes are checked as for any."""
    cs = [c for d in ("exact", "float") for c in default_cases(4, d, "float32") if c.layer == "gqa"]
    assert {c.dims["kv"] for c in cs} == {4, 2, 1}
    result = check(4, [c for c in cs if c.dims["kv"] == 2], comm=comm, timeout=240)
    assert result["ok"], [(r["case"], r["tensor"]) for r in result["rows"] if not r["ok"]]
    assert all(c["counts_equal"] and not c["record_problems"] for c in result["cases"])
    if comm == "schedule":
        assert all(c["replay_bitwise"] and c["ref_bytes"] == c["tpsim_bytes"] for c in result["cases"])
