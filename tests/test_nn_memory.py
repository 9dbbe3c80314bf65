"""Memory by category, against closed forms: Korthikanti et al.'s activations, the sharded weights.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", Sec. 4)
count per layer, in 16-bit, with dropout on: sbh(34 + 5as/h) unsharded, sbh(10 + 24/t + 5as/(ht))
with TP and sbh(34 + 5as/h)/t with TP and SP.  tpsim saves the same arrays (see attention.py and
block.py), plus one deliberate difference: each LayerNorm also keeps its per-row mean and rstd in
float32 (apex's fused LayerNorm does), 2 * 4 * s * b bytes per LayerNorm, split by t under SP.
"""

from __future__ import annotations

import numpy as np
import pytest

from tpsim import Mesh, Replicate, Shard, distribute, meta
from tpsim.nn.block import TransformerBlock
from tpsim.nn.config import PRESETS, GPTConfig, korthikanti_activation_bytes
from tpsim.nn.gpt import GPT, analyse

GPT3 = PRESETS["gpt3-175b"]
LAYERS = [GPT3, PRESETS["gpt3-1.3b"].with_(micro_batch=4), GPTConfig(1000, 64, 1, 8, 32, micro_batch=3)]
CASES = [(1, False), (2, False), (8, False), (2, True), (8, True)]


def layer_norm_stats(cfg: GPTConfig, t: int, sp: bool) -> int:
    """Two LayerNorms, each a float32 (mean, rstd) per row: the one thing Korthikanti does not count."""
    return 2 * 2 * 4 * cfg.seq_len * cfg.micro_batch // (t if sp else 1)


def block_forward(cfg: GPTConfig, t: int, sp: bool, dropout: float = 0.1):
    mesh = Mesh(t)
    blk = TransformerBlock(
        mesh,
        cfg.hidden,
        cfg.num_heads,
        cfg.ffn,
        dropout=dropout,
        sequence_parallel=sp,
        init=None,
        dtype="bfloat16",
    )
    x = distribute(
        meta((cfg.seq_len, cfg.micro_batch, cfg.hidden), "bfloat16"), mesh, [Shard(0) if sp else Replicate()]
    )
    return blk, blk(x)


def in_use(mesh, category: str) -> int:
    values = {d.in_use.get(category, 0) for d in mesh.devices}
    assert len(values) == 1  # every TP rank holds the same
    return values.pop()


@pytest.mark.parametrize("cfg", LAYERS, ids=lambda c: c.name)
@pytest.mark.parametrize(("t", "sp"), CASES)
def test_activations_of_a_layer_are_korthikantis(cfg, t, sp):
    blk, _ = block_forward(cfg, t, sp)  # the block keeps what it saved until backward
    want = korthikanti_activation_bytes(cfg, t, sp) + layer_norm_stats(cfg, t, sp)
    assert in_use(blk.mesh, "activations") == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize(("t", "sp"), CASES)
def test_without_dropout_the_masks_and_the_dropped_probabilities_are_not_kept(t, sp):
    s, b, h, a = GPT3.seq_len, GPT3.micro_batch, GPT3.hidden, GPT3.num_heads
    blk, _ = block_forward(GPT3, t, sp, dropout=0.0)
    masks = 2 * s * b * h // (t if sp else 1) + a * s * s * b // t  # 1 byte each: 2 hidden, 1 attention
    dropped = 2 * a * s * s * b // t  # P' = dropout(P), 16-bit
    want = korthikanti_activation_bytes(GPT3, t, sp) - masks - dropped + layer_norm_stats(GPT3, t, sp)
    assert in_use(blk.mesh, "activations") == want


def sharded_layer_params(h: int, f: int) -> tuple[int, int]:
    """(split by t, replicated) parameter counts of one layer: the weights and the biases that split."""
    split = (3 * h * h + 3 * h) + h * h + (f * h + f) + f * h  # W_qkv, b_qkv, W_o, W1, b1, W2
    return split, 4 * h + h + h  # two LayerNorms' (w, b); the row-parallel biases b_o and b2


@pytest.mark.parametrize(("t", "sp"), CASES)
def test_weights_and_grads_are_the_sharded_parameters(t, sp):
    cfg = LAYERS[2]
    blk, y = block_forward(cfg, t, sp)
    mesh = blk.mesh
    split, replicated = sharded_layer_params(cfg.hidden, cfg.ffn)
    want = 2 * (split // t + replicated)
    assert in_use(mesh, "weights") == want
    blk.backprop(distribute(meta(y.shape, "bfloat16"), mesh, y.placements))
    assert in_use(mesh, "grads") == want
    del y
    assert in_use(mesh, "activations") == 0  # backward let every saved array go


def gpt_parameters(cfg: GPTConfig, t: int) -> tuple[int, int]:
    """(split by t, replicated) parameters of the tied GPT: the table (V' = V here) and every layer's."""
    split, replicated = sharded_layer_params(cfg.hidden, cfg.ffn)
    split = cfg.num_layers * split + cfg.vocab_size * cfg.hidden
    replicated = (
        cfg.num_layers * replicated + cfg.seq_len * cfg.hidden + 2 * cfg.hidden
    )  # positions, final LN
    assert split + replicated == cfg.parameters() - cfg.vocab_size * cfg.hidden  # minus the tied output
    return split, replicated


@pytest.fixture(scope="module")
def gpt3_analyses():
    return {sp: analyse("gpt3-175b", 8, sp) for sp in (False, True)}


@pytest.mark.parametrize("sp", [False, True])
def test_gpt3_175b_shape_only_analysis(gpt3_analyses, sp):
    report, t = gpt3_analyses[sp], 8
    s, b, h, L, V = GPT3.seq_len, GPT3.micro_batch, GPT3.hidden, GPT3.num_layers, GPT3.vocab_size
    split, replicated = gpt_parameters(GPT3, t)
    assert report["parameters"] == split + replicated == 174_615_846_912
    mem = report["memory"]
    assert mem["weights"] == mem["grads"] == 2 * (split // t + replicated)  # bf16

    per_layer = korthikanti_activation_bytes(GPT3, t, sp) + layer_norm_stats(GPT3, t, sp)
    k = t if sp else 1  # what SP splits: the rows outside the tensor-parallel regions
    outside = s * b * h // k + 2 * s * b * h // k + 8 * s * b // k + 2 * s * b * h // k  # see below
    ids = 2 * 8 * s * b  # int64 token ids and targets, replicated
    logits = 2 * s * b * V // t  # the loss keeps its softmax, split by vocab
    # outside: the embedding dropout's mask, the final LayerNorm's input and stats, the logits' input
    assert mem["activations"] == L * per_layer + outside + ids + logits
    assert mem["comm"] == 2 * s * b * h  # the largest buffer: one (s, b, h) bf16 activation
    assert mem["peak"] >= mem["weights"] + mem["activations"] and not mem["fits"]  # TP=8 alone: no

    if not sp:  # 2L + 1 ring all-reduces of s b h forward, 3 of s b for the loss; 2L + 1 backward
        assert report["collectives"]["forward"] == {
            "all_reduce": {"count": 2 * L + 4, "bytes": (2 * L + 1) * 2 * s * b * h + 3 * 2 * s * b}
        }
        assert (
            report["bytes_sent"]["forward"]
            == 2 * (t - 1) * ((2 * L + 1) * 2 * s * b * h + 3 * 2 * s * b) // t
        )
        assert report["bytes_sent"]["backward"] == 2 * (t - 1) * (2 * L + 1) * 2 * s * b * h // t
    time = report["time"]
    assert time["step"] == pytest.approx(time["forward"] + time["backward"])
    assert time["compute"] + time["comm"] == pytest.approx(time["step"], rel=1e-6)  # one serial timeline
    assert report["layers_simulated"] == L and not report["extrapolated"]


def test_sequence_parallelism_cuts_activations_by_t(gpt3_analyses):
    plain, sp = (gpt3_analyses[k]["memory"]["activations"] for k in (False, True))
    assert plain > 1.6 * sp  # 34 + 80 over 8, against 10 + 24/8 + 80/8: 14.25 vs 23 sbh per layer


@pytest.mark.parametrize(("t", "sp"), [(2, False), (2, True), (4, True)])
def test_shape_only_and_data_runs_report_the_same(t, sp):
    cfg = PRESETS["tiny"].with_(dropout=0.1)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (cfg.seq_len, cfg.micro_batch))
    runs = []
    for init, tokens in (("normal", ids), (None, meta(ids.shape, "int64"))):
        mesh = Mesh(t)
        gpt = GPT(mesh, cfg, sequence_parallel=sp, init=init)
        gpt(tokens, tokens)
        after_forward = [dict(d.in_use) for d in mesh.devices]
        gpt.backprop()
        runs.append(
            (
                after_forward,
                [(dict(d.in_use), d.peak) for d in mesh.devices],
                [
                    (c.collective, c.nbytes, c.label, c.direction, c.start, c.end)
                    for c in mesh.trace.collectives
                ],
                mesh.trace.per_device(),
                [(c.device, c.name, c.flops, c.nbytes, c.label) for c in mesh.trace.compute],
            )
        )
    assert runs[0] == runs[1]
