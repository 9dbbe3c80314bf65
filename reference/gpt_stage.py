"""One pipeline stage of a GPT on one rank: the mirror of tpsim/nn/gpt_stage.py, from the reference layers.

    stage 0 (pre_process)     ids (s, b) -> embedding -> its layers -> x (s, b, h)   [SP: this rank's rows]
    middle stages             x -> its layers -> x
    last (post_process)       x -> its layers -> final_layernorm -> output_layer -> loss (s, b)

Names and seeds are tpsim's GPTStage's: layer i is `layers.i` (a ModuleDict keyed by the global index),
and the last stage's copy of the tied table is `output_layer.weight`, so every parameter has tpsim's name
and this rank's piece of tpsim's numbers.
"""

from __future__ import annotations

import torch

from reference.block import TransformerBlock
from reference.dropout import RNGTracker
from reference.embedding import VocabParallelEmbedding, VocabParallelLogits
from reference.gpt import GPTEmbedding
from reference.loss import VocabParallelCrossEntropy
from reference.module import Module
from reference.norm import LayerNorm
from tpsim.nn.config import GPTConfig
from tpsim.nn.decoder import layer_seed


class GPTStage(Module):
    def __init__(
        self,
        comm,
        cfg: GPTConfig,
        layers: range,
        *,
        pre_process: bool,
        post_process: bool,
        sequence_parallel: bool = False,
        seed: int = 0,
        init: str = "normal",
        name: str = "gpt",
        device=None,
    ):
        super().__init__(comm, name, device)
        sp, kw = sequence_parallel, dict(init=init, dtype=cfg.dtype, device=device)
        self.pre_process, self.post_process = pre_process, post_process
        self.tracker = RNGTracker(seed, comm.rank)
        if pre_process:
            self.embedding = GPTEmbedding(
                comm,
                cfg,
                tracker=self.tracker,
                sequence_parallel=sp,
                pad_to_multiple_of=None,
                seed=seed,
                init=init,
                name=f"{name}.embedding",
                device=device,
            )
        self.layers = torch.nn.ModuleDict(
            {
                str(i): TransformerBlock(
                    comm,
                    cfg.hidden,
                    cfg.num_heads,
                    cfg.ffn,
                    dropout=cfg.dropout,
                    tracker=self.tracker,
                    sequence_parallel=sp,
                    seed=layer_seed(seed, i),
                    name=f"{name}.layers.{i}",
                    **kw,
                )
                for i in layers
            }
        )
        if post_process:
            top = layer_seed(seed, cfg.num_layers)
            self.final_layernorm = LayerNorm(
                comm, cfg.hidden, seed=top, sequence_parallel=sp, name=f"{name}.final_layernorm", **kw
            )
            # the copy of the tied table: GPT's word embeddings, the same seed
            self.output_layer = VocabParallelEmbedding(
                comm, cfg.vocab_size, cfg.hidden, seed=seed, name=f"{name}.output_layer", **kw
            )
            self.logits = VocabParallelLogits(self.output_layer, name=f"{name}.logits")
            self.logits.sequence_parallel = sp
            self.loss = VocabParallelCrossEntropy(
                comm,
                vocab_size=cfg.vocab_size,
                padded_vocab_size=self.output_layer.padded_vocab_size,
                name=f"{name}.loss",
                device=device,
            )

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 0 takes ids, the others the previous stage's x; the last returns the per-token loss."""
        if self.pre_process:
            x = self.embedding(x)
        for layer in self.layers.values():
            x = layer(x)
        if not self.post_process:
            return x
        loss, _ = self.loss(self.logits(self.final_layernorm(x)), targets)
        return loss
