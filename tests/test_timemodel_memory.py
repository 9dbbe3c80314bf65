"""Training memory and FLOPs: activations against Korthikanti et al. 2022, parameters against
GPTConfig.parameters, bytes per parameter against ZeRO, GEMM FLOPs against Megatron's formulas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.nn.config import GPTConfig
from tpsim.plan import flops as fl
from tpsim.plan.activations import RecomputeError, korthikanti, layer_activation_bytes
from tpsim.plan.kernels import KernelsError, backward_gemms, layer_gemms, layer_passes
from tpsim.plan.layout import Layout
from tpsim.plan.memory_train import in_flight, stage_parameters, training_memory

t_and_heads = st.sampled_from([1, 2, 4, 8]).flatmap(
    lambda t: st.tuples(st.just(t), st.integers(1, 8).map(t.__mul__))
)


@given(
    ta=t_and_heads,
    d=st.integers(1, 16).map(lambda x: 8 * x),
    s=st.integers(1, 4096),
    b=st.integers(1, 16),
    sp=st.booleans(),
    recompute=st.sampled_from(["none", "selective", "full"]),
)
def test_activations_per_layer_are_korthikantis(ta, d, s, b, sp, recompute):
    """sbh(34 + 5as/h) at t = 1; sbh(10 + 24/t + 5as/(ht)) with TP; sbh(34/t + 5as/(ht)) with TP + SP;
    selective drops the 5as/h term; full keeps the layer's input, 2sbh (/t with SP)."""
    t, a = ta
    h = a * d
    got = layer_activation_bytes(s, b, h, a, t, sp, recompute)
    assert got == pytest.approx(korthikanti(s, b, h, a, t, sp, recompute), rel=1e-12)


def test_korthikanti_closed_forms_by_hand():
    s, b, h, a, t = 2048, 1, 12288, 96, 8  # GPT-3 175B, the paper's Table 3 setting
    sbh = s * b * h
    assert korthikanti(s, b, h, a) == sbh * (34 + 5 * a * s / h)
    assert korthikanti(s, b, h, a, t) == sbh * (10 + 24 / t + 5 * a * s / (h * t))
    assert korthikanti(s, b, h, a, t, sp=True) == pytest.approx(sbh * (34 / t + 5 * a * s / (h * t)))
    assert korthikanti(s, b, h, a, t, sp=True, recompute="selective") == pytest.approx(sbh * 34 / t)


def test_unknown_recompute_mode_is_refused():
    with pytest.raises(RecomputeError, match="valid: none, selective, full"):
        layer_activation_bytes(8, 1, 8, 1, recompute="some")


def test_stage_parameters_match_the_config_with_tied_embeddings():
    cfg = GPTConfig(51200, 1536, 40, 16, 1024)
    # GPTConfig.parameters counts an untied output layer and the final LayerNorm; Megatron ties the output
    assert stage_parameters(cfg, 1, 1) == cfg.parameters() - cfg.vocab_size * cfg.hidden - 2 * cfg.hidden


@pytest.mark.parametrize("zero1", [False, True])
def test_mixed_precision_adam_is_16_bytes_per_parameter_and_zero1_shards_12(zero1):
    cfg = GPTConfig(51200, 1536, 40, 16, 1024)
    mem = training_memory(cfg, Layout(2, 4), 1, 4, 80 << 30, zero1=zero1)
    per_param = (mem["weights"] + mem["grads"] + mem["optimizer"]) / mem["parameters"]
    assert per_param == pytest.approx(4 + 12 / 4 if zero1 else 16)
    assert mem["fits"] == (mem["total"] <= 80 << 30)


def test_in_flight_microbatches():
    assert in_flight("1f1b", 1, 32) == 1
    assert in_flight("1f1b", 4, 32) == 4 and in_flight("1f1b", 4, 2) == 2
    assert in_flight("gpipe", 4, 32) == 32


def test_a_model_that_does_not_fit_says_so():
    cfg = GPTConfig(51200, 12288, 96, 96, 2048)  # 175B on one 80 GB device: 2.8 TB of weights and state
    mem = training_memory(cfg, Layout(1), 1, 1, 80 << 30)
    assert not mem["fits"] and mem["total"] > 16 * 170e9


@given(ta=t_and_heads, s=st.integers(1, 512), b=st.integers(1, 8), layers=st.integers(1, 4))
def test_gemm_flops_are_megatrons_model_flops(ta, s, b, layers):
    """Every TP rank's GEMMs, forward and backward, plus the logits: 72 B s l h^2 (1 + s/6h + V/12lh)."""
    t, a = ta
    h, V = 8 * a, 64 * t
    fwd = layer_gemms(s, b, h, a, t)
    per_rank = sum(2 * batch * m * n * k for _, batch, m, n, k in fwd + backward_gemms(fwd))
    logits = 3 * 2 * b * s * (V // t) * h
    total = t * (layers * per_rank + logits)
    assert total == pytest.approx(fl.model_flops(b, s, layers, h, V), rel=1e-12)


def test_full_recompute_hardware_flops_are_narayanan_eq3():
    B, s, L, h, V = 8, 1024, 40, 1536, 51200
    eq3 = 96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    assert fl.hardware_flops(B, s, L, h, V, "full") == pytest.approx(eq3, rel=1e-12)
    assert fl.hardware_flops(B, s, L, h, V, "none") == fl.model_flops(B, s, L, h, V)
    assert fl.recompute_flops(B, s, L, h, "selective") == L * 4 * B * s * s * h


def test_fused_kernels_move_fewer_bytes_and_unknown_sets_are_refused():
    unfused, fused, flash = (
        sum(layer_passes(1024, 8, 1536, 16, 1, False, k).values()) for k in ("unfused", "fused", "flash")
    )
    assert flash < fused < unfused
    with pytest.raises(KernelsError, match="valid: unfused, fused, flash"):
        layer_passes(8, 1, 8, 1, 1, False, "cudnn")
