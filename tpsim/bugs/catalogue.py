"""The catalogue: each silent TP bug as a named mutation of a correct layer, and how it is caught.

A `Mutation` holds the buggy layer's builder and the correct layer's (the truth), the inputs, the
grad-norm function, and the record a reader needs: what goes wrong, who reported it (only sources
read and verified are cited), the symptom a user sees, and which tensors the detector flags.
`reference.bugs` builds the same names on real torch.distributed ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tpsim.bugs import gqa, linear, loss, norm, pipeline, rope
from tpsim.bugs.detect import Inputs, Report, detect
from tpsim.bugs.grad_norm import double_counted_grad_norm, grad_norm
from tpsim.nn import (
    ColumnParallelLinear,
    Dropout,
    GroupedQueryAttention,
    LayerNorm,
    RNGTracker,
    RowParallelLinear,
    VocabParallelCrossEntropy,
)
from tpsim.nn.dropout import DEFAULT, MODEL_PARALLEL
from tpsim.placement import Replicate, Shard

S, B, H, VOCAB, PADDED = 5, 2, 8, 11, 12  # s uneven over 2; h and the padded vocab divide by 1, 2, 4
GQA_H, ROPE_D = 24, 4  # GQA: 12 heads of 2 features; RoPE: 2 heads of 4
EXACT = dict(init="exact", dtype="float64")


@dataclass(frozen=True)
class Mutation:
    name: str
    build: Callable[..., Any]  # mesh -> the buggy layer
    truth: Callable[..., Any]  # mesh -> the correct layer
    inputs: Inputs
    what: str
    source: str
    symptom: str
    caught_by: tuple[str, ...]  # tensors the detector must flag
    norm: Callable[..., float] = grad_norm
    stochastic: bool = False  # dropout: the truth runs on the same mesh
    same_layout: bool = False  # the truth runs on the same mesh: the layer's layout depends on t
    view: Callable[[dict], dict] | None = None  # more tensors to compare (see detect)
    pipelined: bool = False  # build(mesh) is a whole GPT over pp = 2 stages (bugs/pipeline.py)

    @property
    def truth_on_same_mesh(self) -> bool:
        return self.stochastic or self.same_layout

    @property
    def check(self) -> str:
        """Which check finds it: the tier of its data, what it is compared with, and the tensors."""
        truth = "the unsharded truth"
        if self.pipelined:
            truth = "the unsharded GPT on one device (pp = 2 stages of t/2 devices against it)"
        elif self.stochastic:
            truth = "the correct RNG streams on the same mesh"
        elif self.same_layout:
            truth = "the correct layer on the same mesh (itself tested against the unsharded one)"
        return f"exact data (tier 1) against {truth}: {', '.join(self.caught_by)}"

    def detect(self, world_size: int = 2, seed: int = 0) -> Report:
        if self.pipelined:
            return pipeline.detect_pipeline(self.build, self.inputs, world_size=world_size, seed=seed)
        return detect(self.build, self.truth, self.inputs, world_size=world_size, seed=seed, norm=self.norm,
                      truth_on_same_mesh=self.truth_on_same_mesh, view=self.view)

    def detect_correct(self, world_size: int = 2, seed: int = 0) -> Report:
        """The correct layer through the same check: it must pass."""
        if self.pipelined:
            return pipeline.detect_pipeline(self.truth, self.inputs, world_size=world_size, seed=seed)
        return detect(self.truth, self.truth, self.inputs, world_size=world_size, seed=seed,
                      truth_on_same_mesh=self.truth_on_same_mesh, view=self.view)


def _row(cls=RowParallelLinear, **o):
    return lambda mesh: cls(mesh, H, 6, seed=3, **EXACT, **o)


def _col(cls=ColumnParallelLinear, **o):
    return lambda mesh: cls(mesh, H, 6, seed=4, **EXACT, **o)


def _norm(cls=LayerNorm):
    return lambda mesh: cls(mesh, H, seed=5, sequence_parallel=True, **EXACT)


def _dropout(stream):
    return lambda mesh: Dropout(mesh, 0.25, tracker=RNGTracker(7), stream=stream)


def _ce(cls=VocabParallelCrossEntropy, **o):
    return lambda mesh: cls(mesh, **o)


def _gqa(cls=GroupedQueryAttention):
    """Multi-query: n = 12 heads (t = 1..4 divide it), one KV head, replicated on every rank when t > 1."""
    return lambda mesh: cls(mesh, GQA_H, 12, 1, seed=6, **EXACT)


def _rope(cls=rope.SequenceRoPE):
    return lambda mesh: cls(mesh, H, ROPE_D)


x_feat = Inputs("x", (S, B, H), Shard(2))
x_seq = Inputs("x", (S, B, H), Shard(0))
x_rep = Inputs("x", (S, B, H), Replicate())

CATALOGUE: tuple[Mutation, ...] = (
    Mutation(
        "sp_norm_grad_unreduced", _norm(norm.SPNormGradUnreduced), _norm(), x_seq,
        "SP LayerNorm: each rank's dw, db sum only its own sequence rows and are never all-reduced",
        "NVIDIA/Megatron-LM#1446 (final_layernorm main_grad differs across TP ranks with TP+SP); "
        "NVIDIA/TransformerEngine#435 (the all-reduce is left to the framework)",
        "norm weights drift apart across TP ranks: each rank's grad sums only its own s/t rows",
        ("grad.weight", "grad.bias", "grad_norm"),
    ),
    Mutation(
        "grad_norm_double_counted", _row(), _row(), x_feat,
        "the grad norm adds replicated params' squares on every TP rank: counted t times",
        "ROCm/TransformerEngine#715 (1.36x and 1.52x too large at TP=8); NVIDIA-NeMo/RL#3788",
        "grad norm x sqrt(1 + (t - 1) r), r the replicated grads' share of ||g||^2 (TE's 1.36-1.52 at t = 8: "
        "r = 12-19%); clipping fires too early; the loss is unchanged",
        ("grad_norm",), norm=double_counted_grad_norm,
    ),
    Mutation(
        "row_bias_every_rank", _row(linear.RowBiasEveryRank), _row(), x_feat,
        "row-parallel bias added to each rank's partial sum, before the all-reduce: t b instead of b",
        "huggingface/text-generation-inference#1036; Wenyueh/MinivLLM#80; PaddlePaddle/Paddle#35186",
        "output off by (t - 1) b; invisible at t = 1 and while the bias is zero (its usual init)",
        ("out",),
    ),
    Mutation(
        "dropout_tp_local_same_seed", _dropout(DEFAULT), _dropout(MODEL_PARALLEL), x_seq,
        "dropout on a sequence-sharded (SP) activation draws from the seed every TP rank shares",
        "NVIDIA/Megatron-LM#1256 (Megatron Core 0.9.0 known issue: SP dropout outside the right RNG "
        "context); PaddlePaddle/PaddleFleetX#1005",
        "every sequence shard gets the same mask pattern: correlated dropout, no error, no crash",
        ("out", "dx"), stochastic=True,
    ),
    Mutation(
        "dropout_replicated_different_seeds", _dropout(MODEL_PARALLEL), _dropout(DEFAULT), x_rep,
        "dropout on a replicated activation draws from the per-rank (model-parallel) seed",
        "tenstorrent/tt-metal#55947 (per-device seeds on devices that hold replicated TP activations)",
        "the replicas of one activation differ across TP ranks and drift apart",
        ("out", "dx"), stochastic=True,
    ),
    Mutation(
        "vocab_padding_unmasked", _ce(loss.VocabPaddingUnmasked, vocab_size=VOCAB),
        _ce(vocab_size=VOCAB), Inputs("logits", (S, B, PADDED), Shard(2), VOCAB),
        "the padded vocab columns enter the softmax's max and sum and get a gradient",
        "NVIDIA/Megatron-LM#1754 (vocab not divisible by TP: TP=2 loss diverges from TP=1; "
        "root cause not stated in the thread); #1736 (the same reporter asks how to tell rounding "
        "from a silent TP failure)",
        "loss too large by log(1 + sum of the padding's exps / sumexp); depends on the padding",
        ("out", "mean", "dx"),
    ),
    Mutation(
        "uneven_shard_padding", _ce(loss.UnevenShardPadding), _ce(),
        Inputs("logits", (S, B, VOCAB), Shard(2)),
        "an uneven vocab split is zero-padded to equal widths and the zeros enter the sum of exps",
        "NVIDIA/Megatron-LM#1754 reports the symptom for a vocab that does not divide by t (root cause "
        "not stated there); the zero padding of equal-size collectives is constructed",
        "loss depends on t: the zero columns add exp(-m) each to the softmax denominator",
        ("out", "mean", "dx"),
    ),
    Mutation(
        "label_smoothing_per_rank", _ce(loss.LabelSmoothingPerRank, label_smoothing=0.1),
        _ce(label_smoothing=0.1), Inputs("logits", (S, B, PADDED), Shard(2)),
        "the smoothing term mean_j(-log p_j) averages each rank's own columns, never all-reduced",
        "NVIDIA/Megatron-LM#737; #7464; #7452 (finding 1)",
        "each TP rank reports a different loss; the logged loss depends on t",
        ("out", "mean"),
    ),
    Mutation(
        "reduce_scatter_mean", _row(linear.ReduceScatterMean, bias=False, sequence_parallel=True),
        _row(bias=False, sequence_parallel=True), x_feat,
        "the SP reduce-scatter after a row-parallel layer averages where it must sum",
        "vllm-project/vllm#33088 ('avg' instead of 'sum' in the async-TP fused GEMM + reduce-scatter)",
        "activations t times too small after every row-parallel layer",
        ("out",),
    ),
    Mutation(
        "input_is_parallel_full_input", _row(linear.InputIsParallelFullInput),
        _row(input_is_parallel=False), x_rep,
        "input_is_parallel=True fed the whole replicated input: every rank cuts the same first in/t features",
        "none verified (constructed)",
        "y = x_0 (sum_r W_r)^T: wrong output and weight grads; the shapes fit, nothing crashes",
        ("out", "dx", "grad.weight"),
    ),
    Mutation(
        "sp_row_bias_grad_unreduced", _row(linear.SPRowBiasGradUnreduced, sequence_parallel=True),
        _row(sequence_parallel=True), x_feat,
        "SP row-parallel bias: each rank's db sums only its own sequence rows and is never all-reduced",
        "NVIDIA/Megatron-LM#236 (the maintainers: the SP bias grads are all-reduced with the other "
        "sequence-parallel grads, outside the layer)",
        "the replicated bias drifts apart across TP ranks; each rank steps on its own rows' gradient",
        ("grad.bias",),
    ),
    Mutation(
        "column_input_grad_unreduced", _col(linear.ColumnInputGradUnreduced), _col(), x_rep,
        "copy_to (Megatron's f) loses its backward all-reduce: each rank's dx is a partial sum",
        "none verified (constructed: the conjugate of f, as in the Megatron paper's f/g pair)",
        "the layers before it get partial input gradients that differ across ranks",
        ("dx",),
    ),
    Mutation(
        "gqa_kv_head_grads_unreduced", _gqa(gqa.KVHeadGradsUnreduced), _gqa(),
        Inputs("x", (S, B, GQA_H), Replicate()),
        "KV heads replicated over r = t/g ranks (t > g): each copy's weight grad sums only its rank's query "
        "heads and is never all-reduced over the r ranks that share the head",
        "bigcode-project/Megatron-LM#37 (MQA under TP: the KV grads need a reduction over the TP ranks; "
        "valid loss 3.74 before the fix, 2.64 after, 2.64 at TP=1)",
        "the copies of one KV projection drift apart across ranks; the loss trains worse, nothing crashes",
        ("grad.query_key_value.weight", "grad.query_key_value.weight[kv]"),
        same_layout=True, view=gqa.kv_rows(GQA_H // 12),
    ),
    Mutation(
        "rope_positions_restart", _rope(rope.RoPEPositionsRestart), _rope(), x_seq,
        "RoPE on a sequence shard (SP / context parallel) at positions 0 .. s/t - 1 on every rank, not the "
        "shard's global offset",
        "vllm-project/speculators#871 (review: Ulysses SP position_ids built from the local length, "
        "asking for the SP rank's offset); NVIDIA/Megatron-LM#560 (question: RoPE's per-rank cos and sin "
        "under context parallelism)",
        "every shard but the first is rotated by the wrong angles: attention sees wrong relative positions",
        ("out", "dx"),
    ),
    Mutation(
        "tied_embedding_grads_unreduced", pipeline.pipelined(pipeline.TiedEmbeddingGradsUnreduced),
        pipeline.pipelined(), Inputs("tokens", (pipeline.CONFIG.seq_len, pipeline.CONFIG.micro_batch),
                                     vocab=pipeline.CONFIG.vocab_size),
        "pipeline stages: the word-embedding table's two copies (stage 0's lookup, the last stage's output "
        "layer) keep their own stage's grad; the embedding group {first, last stage} never all-reduces them",
        "NVIDIA/Megatron-LM#299 (a maintainer: the first and last stages' copies are kept in sync by "
        "all-reducing their grads); #656 (tied LM-head weights found untied during training; root cause "
        "not stated in the thread); #844 and #4641 (other faults in the same embedding-group sync make the "
        "copies diverge); the skipped all-reduce itself is constructed",
        "the loss is right, but stage 0's table grad misses the logits' term and the last stage's copy "
        "misses the lookup's; after one optimizer step the two copies of one weight differ and keep drifting",
        (pipeline.TABLE, pipeline.COPY), pipelined=True,
    ),
)

BY_NAME = {m.name: m for m in CATALOGUE}

SKIPPED: dict[str, str] = {}  # name -> why a known bug is not in the catalogue (none left)
