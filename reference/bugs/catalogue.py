"""The reference's side of tpsim.bugs.CATALOGUE: for each name, the buggy and the correct layer on one rank.

Same dims, seeds, init and dtype as tpsim/bugs/catalogue.py, so rank r holds tpsim device r's weights.
"""

from __future__ import annotations

from reference.bugs import gqa, linear, loss, norm, pipeline, rope
from reference.dropout import Dropout, RNGTracker
from reference.gqa import GroupedQueryAttention
from reference.linear import ColumnParallelLinear, RowParallelLinear
from reference.loss import VocabParallelCrossEntropy
from reference.norm import LayerNorm
from reference.pipeline_stages import PipelinedGPT
from tpsim.bugs.catalogue import GQA_H, PADDED, ROPE_D, VOCAB, H, S
from tpsim.nn.dropout import DEFAULT, MODEL_PARALLEL

EXACT = dict(init="exact", dtype="float64")


def _row(cls=RowParallelLinear, **o):
    return lambda comm: cls(comm, H, 6, seed=3, **EXACT, **o)


def _col(cls=ColumnParallelLinear, **o):
    return lambda comm: cls(comm, H, 6, seed=4, **EXACT, **o)


def _norm(cls=LayerNorm):
    return lambda comm: cls(comm, H, seed=5, sequence_parallel=True, **EXACT)


def _dropout(stream):
    return lambda comm: Dropout(comm, 0.25, tracker=RNGTracker(7, tp_rank=comm.rank), stream=stream)


def _ce(cls=VocabParallelCrossEntropy, **o):
    return lambda comm: cls(comm, **o)


def _gqa(cls=GroupedQueryAttention):
    return lambda comm: cls(comm, GQA_H, 12, 1, seed=6, **EXACT)


def _rope(cls=rope.SequenceRoPE):
    return lambda comm: cls(comm, H, ROPE_D, S)


# name -> (buggy layer, correct layer, double-count the grad norm?); the pipelined GPT's entry holds its
# classes instead, built on each rank by reference/bugs/pipeline.py

MIRROR = {
    "sp_norm_grad_unreduced": (_norm(norm.SPNormGradUnreduced), _norm(), False),
    "grad_norm_double_counted": (_row(), _row(), True),
    "row_bias_every_rank": (_row(linear.RowBiasEveryRank), _row(), False),
    "dropout_tp_local_same_seed": (_dropout(DEFAULT), _dropout(MODEL_PARALLEL), False),
    "dropout_replicated_different_seeds": (_dropout(MODEL_PARALLEL), _dropout(DEFAULT), False),
    "vocab_padding_unmasked": (
        _ce(loss.VocabPaddingUnmasked, vocab_size=VOCAB, padded_vocab_size=PADDED),
        _ce(vocab_size=VOCAB, padded_vocab_size=PADDED), False,
    ),
    "uneven_shard_padding": (_ce(loss.UnevenShardPadding, vocab=VOCAB), _ce(padded_vocab_size=VOCAB), False),
    "label_smoothing_per_rank": (
        _ce(loss.LabelSmoothingPerRank, label_smoothing=0.1), _ce(label_smoothing=0.1), False,
    ),
    "reduce_scatter_mean": (
        _row(linear.ReduceScatterMean, bias=False, sequence_parallel=True),
        _row(bias=False, sequence_parallel=True), False,
    ),
    "input_is_parallel_full_input": (
        _row(linear.InputIsParallelFullInput), _row(input_is_parallel=False), False,
    ),
    "sp_row_bias_grad_unreduced": (
        _row(linear.SPRowBiasGradUnreduced, sequence_parallel=True), _row(sequence_parallel=True), False,
    ),
    "column_input_grad_unreduced": (_col(linear.ColumnInputGradUnreduced), _col(), False),
    "gqa_kv_head_grads_unreduced": (_gqa(gqa.KVHeadGradsUnreduced), _gqa(), False),
    "rope_positions_restart": (_rope(rope.RoPEPositionsRestart), _rope(), False),
    "tied_embedding_grads_unreduced": (pipeline.TiedEmbeddingGradsUnreduced, PipelinedGPT, False),
}
