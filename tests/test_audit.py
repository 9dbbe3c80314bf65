"""`python -m reference.audit`: a correct plan passes, a plan with a catalogue bug is named by parameter,
and the collectives CommDebugMode counts are the ones tpsim predicts for the plan."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from reference import audit_examples as ex  # noqa: E402
from reference.audit import audit, format_report, tolerance  # noqa: E402
from reference.audit_predict import predict, unplanned_norms  # noqa: E402

WS = 2


@pytest.fixture(scope="module")
def correct_mlp():
    """The correct MLP plan, audited together with a double-counting grad-norm function (one spawn)."""
    return audit("reference.audit_examples:mlp", "reference.audit_examples:mlp_plan", WS,
                 grad_norm="reference.audit_examples:grad_norm_double_counted")


@pytest.fixture(scope="module")
def missing_norm():
    return audit("reference.audit_examples:block", "reference.audit_examples:block_sp_plan_missing_norm", WS,
                 input_layout="shard0", output_layout="shard0")


def test_correct_mlp_plan_passes(correct_mlp):
    plan_rows = [r for r in correct_mlp["rows"] if r["tensor"] != "grad_norm (yours)"]
    assert all(r["ok"] for r in plan_rows), format_report(correct_mlp)
    names = {r["tensor"] for r in correct_mlp["rows"]}
    assert {"out", "dx", "grad.fc1.weight", "grad.fc2.bias", "grad_norm"} <= names
    assert correct_mlp["comm"]["dtensor"] == correct_mlp["comm"]["tpsim"] == {"all_reduce": 2}


def test_missing_sequence_parallel_norm_is_named(missing_norm):
    """The norm left out of the SP plan keeps per-rank partial grads: exactly its two params fail."""
    bad = {r["tensor"] for r in missing_norm["rows"] if not r["ok"]}
    assert bad == {"grad.post_attention_layernorm.weight", "grad.post_attention_layernorm.bias", "grad_norm"}
    assert all(r["rel_error"] > 1e6 * missing_norm["tol"] for r in missing_norm["rows"] if not r["ok"])
    assert missing_norm["unplanned_norms"] == ["post_attention_layernorm"]
    assert not missing_norm["ok"] and "MISMATCH" in format_report(missing_norm)
    # the plan's own collectives are what tpsim predicts for it: the bug is in what the plan leaves out
    assert missing_norm["comm"]["ok"]


def test_prediction_for_the_correct_sp_block():
    """SP block: 2 all-gathers and 2 reduce-scatters each way, and 2 all-reduces per SP norm."""
    m = ex.block()
    counts, skipped = predict(m, ex.block_sp_plan(), WS, 4, 2)
    assert not skipped and counts == {"all_gather": 4, "reduce_scatter": 4, "all_reduce": 4}
    assert unplanned_norms(m, ex.block_sp_plan()) == []
    assert unplanned_norms(m, ex.mlp_plan()) == []  # no sequence sharding: nothing to warn about


def test_tolerance_is_derived_from_the_model():
    """2 d n u: d = 6 layers (4 Linear, 2 norms), n = 3 h = 24 (the QKV width) in the block."""
    m = ex.block()
    assert tolerance(m, (4, 2, 8), torch.float64) == 2 * 6 * 24 * torch.finfo(torch.float64).eps / 2
    assert tolerance(m, (4, 2, 8), torch.float32) > 1e8 * tolerance(m, (4, 2, 8), torch.float64)


def test_your_double_counting_grad_norm_is_named_with_its_factor(correct_mlp):
    """--grad-norm: a norm that all-reduces every rank's local squares counts the Rowwise bias t = 2 times:
    sqrt(1 + r) times the truth, r the bias's share of ||g||^2 in the unsharded run."""
    bad = {r["tensor"]: r for r in correct_mlp["rows"] if not r["ok"]}
    assert set(bad) == {"grad_norm (yours)"}
    torch.manual_seed(0)
    m = ex.mlp().double()
    gen = torch.Generator().manual_seed(0)
    y = m(torch.randn((4, 2, 8), generator=gen, dtype=torch.float64))
    y.backward(torch.randn(y.shape, generator=gen, dtype=torch.float64))
    total = sum(float(p.grad.square().sum()) for p in m.parameters())
    r = float(m.fc2.bias.grad.square().sum()) / total
    assert bad["grad_norm (yours)"]["rel_error"] == pytest.approx((1 + r) ** 0.5 - 1, rel=1e-9)


@pytest.fixture(scope="module")
def llama():
    return audit("reference.audit_examples:llama_block", "reference.audit_examples:llama_plan", WS)


@pytest.fixture(scope="module")
def llama_kv_replicated():
    ex_ = "reference.audit_examples:"
    return audit(ex_ + "llama_mqa_block", ex_ + "llama_plan_kv_replicated", WS)


def test_llama_block_plan_passes_with_the_predicted_collectives(llama):
    """RMSNorm, GQA (4 heads on 2 KV heads, RoPE), SwiGLU: Colwise q/k/v/gate/up, Rowwise o/down at t = 2.
    tpsim predicts DTensor's counts: one all-reduce per Colwise dx (5) and per Rowwise output (2)."""
    assert llama["ok"], format_report(llama)
    names = {r["tensor"] for r in llama["rows"]}
    assert {"grad.self_attn.k_proj.weight", "grad.mlp.gate_proj.weight", "grad.input_layernorm.weight"} \
        <= names
    comm = llama["comm"]
    assert comm["modelled"] and comm["dtensor"] == comm["tpsim"] == {"all_reduce": 7}


def test_replicated_kv_head_left_out_of_the_plan_is_named(llama_kv_replicated):
    """One KV head at t = 2, k_proj and v_proj kept whole on every rank (left out of the plan): the forward
    is right, but their grads are each rank's own query heads' share (tpsim.bugs'
    gqa_kv_head_grads_unreduced), and so is the input grad they pass back through the norm."""
    r = llama_kv_replicated
    bad = {row["tensor"]: row for row in r["rows"] if not row["ok"]}
    assert {"grad.self_attn.k_proj.weight", "grad.self_attn.v_proj.weight"} <= set(bad), format_report(r)
    assert set(bad) == {"grad.self_attn.k_proj.weight", "grad.self_attn.v_proj.weight", "dx",
                        "grad.input_layernorm.weight", "grad_norm"}
    assert all("ranks differ" in bad[k]["note"] for k in ("grad.self_attn.k_proj.weight",
                                                          "grad.self_attn.v_proj.weight"))
    assert all(row["rel_error"] > 1e6 * r["tol"] for row in bad.values())
    assert next(row for row in r["rows"] if row["tensor"] == "out")["ok"]
    assert r["comm"]["ok"] and r["comm"]["dtensor"] == {"all_reduce": 5}  # the plan's own: none is missing
