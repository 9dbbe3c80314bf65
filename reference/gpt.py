"""A GPT on one rank: the mirror of tpsim/nn/gpt.py (GPTEmbedding, GPT), built from the reference layers.

    ids (s, b) ─ embedding ─ layers.0 ... layers.{L-1} ─ final_layernorm ─ output_layer ─ loss

embedding       word embeddings (VocabParallelEmbedding: one all-reduce) + learned position
                embeddings (a replicated (seq_len, h) parameter) + dropout
layers.i        TransformerBlock: 2 all-reduces forward, 2 backward (or SP's pairs)
output_layer    tied: VocabParallelLogits, logits_i = x E_i^T with this rank's rows of the table;
                untied: ColumnParallelLinear(h, V', bias=False).  Logits (s, b, V'_i): this rank's columns.
loss            VocabParallelCrossEntropy over the real vocab; forward returns the mean over tokens

Sequence parallelism as tpsim (and Megatron with learned positions): the word embedding is all-reduced,
the positions added on every rank, and the sum cut to this rank's rows of the sequence
(regions.sequence_scatter: no bytes forward, an all-gather of the gradient backward).

Weights: the same seeds as tpsim's GPT (tpsim.nn.decoder.layer_seed: layer i from seed + 100 (i + 1),
the final LayerNorm and the untied output layer above them), cut to this rank. One RNG tracker for the
whole model, drawn in tpsim's order (embedding dropout, then each layer's), so both engines drop the
same elements.
"""

from __future__ import annotations

import torch

from reference import regions
from reference.block import TransformerBlock
from reference.dropout import Dropout, RNGTracker
from reference.embedding import VocabParallelEmbedding, VocabParallelLogits
from reference.linear import ColumnParallelLinear
from reference.loss import VocabParallelCrossEntropy
from reference.module import Module
from reference.norm import LayerNorm
from tpsim.errors import ShapeError
from tpsim.nn.config import GPTConfig
from tpsim.nn.decoder import layer_seed
from tpsim.nn.dropout import hidden_stream


class GPTEmbedding(Module):
    """ids (s, b) -> (s, b, h): word + position embeddings, then dropout (whole, or this rank's rows
    with SP)."""

    def __init__(self, comm, cfg: GPTConfig, *, tracker: RNGTracker, sequence_parallel: bool,
                 pad_to_multiple_of: int | None, seed: int, init: str, name: str | None = None,
                 device=None):
        super().__init__(comm, name, device)
        self.sequence_parallel = sequence_parallel
        n = self.name
        # the table's lookup runs without SP: its output is all-reduced, then cut (module docstring)
        self.word_embeddings = VocabParallelEmbedding(
            comm, cfg.vocab_size, cfg.hidden, seed=seed, init=init, dtype=cfg.dtype,
            pad_to_multiple_of=pad_to_multiple_of, name=f"{n}.word_embeddings", device=device,
        )
        self.position_embeddings = self.seeded((cfg.seq_len, cfg.hidden), seed + 1, init, cfg.dtype, None)
        self.embedding_dropout = Dropout(comm, cfg.dropout, tracker=tracker,
                                         stream=hidden_stream(sequence_parallel),
                                         name=f"{n}.embedding_dropout", device=device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        words = self.word_embeddings(ids)  # (s, b, h), whole on every rank after the all-reduce
        pos = self.position_embeddings
        if words.shape[0] > pos.shape[0]:
            raise ShapeError(f"{self.name} (rank {self.tp_rank}): {words.shape[0]} tokens, but seq_len = "
                             f"{pos.shape[0]} positions")
        x = words + pos[: words.shape[0], None, :]  # (s, b, h) + (s, 1, h)
        if self.sequence_parallel:
            x = regions.sequence_scatter(x, self.comm, 0)  # this rank's rows: local, no bytes
        return self.embedding_dropout(x)


class GPT(Module):
    """`mean = model(ids, targets)`: the mean loss over tokens (0-d, the same on every rank);
    `mean.backward()` fills every grad."""

    def __init__(self, comm, config: GPTConfig, *, sequence_parallel: bool = False,
                 tied_embeddings: bool = True, pad_to_multiple_of: int | None = None, seed: int = 0,
                 init: str = "normal", name: str = "gpt", device=None):
        super().__init__(comm, name, device)
        cfg, sp = config, sequence_parallel
        self.config, self.sequence_parallel, self.tied = cfg, sp, tied_embeddings
        self.tracker = RNGTracker(seed, comm.rank)
        self.embedding = GPTEmbedding(comm, cfg, tracker=self.tracker, sequence_parallel=sp,
                                      pad_to_multiple_of=pad_to_multiple_of, seed=seed, init=init,
                                      name=f"{name}.embedding", device=device)
        kw = dict(init=init, dtype=cfg.dtype, device=device)
        self.layers = torch.nn.ModuleList(
            TransformerBlock(comm, cfg.hidden, cfg.num_heads, cfg.ffn, dropout=cfg.dropout,
                             tracker=self.tracker, sequence_parallel=sp, seed=layer_seed(seed, i),
                             name=f"{name}.layers.{i}", **kw)
            for i in range(cfg.num_layers)
        )
        top = layer_seed(seed, cfg.num_layers)
        self.final_layernorm = LayerNorm(comm, cfg.hidden, seed=top, sequence_parallel=sp,
                                         name=f"{name}.final_layernorm", **kw)
        table = self.embedding.word_embeddings
        self.padded_vocab_size = table.padded_vocab_size
        if tied_embeddings:
            self.output_layer = VocabParallelLogits(table, name=f"{name}.output_layer")
            self.output_layer.sequence_parallel = sp  # the table's lookup runs without SP
        else:
            self.output_layer = ColumnParallelLinear(comm, cfg.hidden, self.padded_vocab_size, bias=False,
                                                     seed=top + 10, sequence_parallel=sp,
                                                     name=f"{name}.output_layer", **kw)
        self.loss = VocabParallelCrossEntropy(comm, vocab_size=cfg.vocab_size,
                                              padded_vocab_size=self.padded_vocab_size, name=f"{name}.loss",
                                              device=device)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.output_layer(self.final_layernorm(x))  # (s, b, V'_i): this rank's vocab columns
        _, mean = self.loss(logits, targets)
        return mean
