"""One pipeline stage of a GPT (Megatron's pre_process / post_process): the layers it owns, on its mesh.

    stage 0 (pre_process)     ids (s, b) -> embedding -> its layers -> x (s, b, h)
    middle stages             x -> its layers -> x
    last (post_process)       x -> its layers -> final_layernorm -> output_layer -> loss (s, b)

Names and seeds are tpsim.nn.GPT's (decoder.layer_seed: layer i from seed + 100 (i + 1), the final
LayerNorm above them), so every parameter has the same numbers and name as in the unsharded GPT. The
last stage's output layer holds its own copy of the tied word-embedding table, `output_layer.weight`, as
Megatron's last stage does; its grad there holds only the logits' use of the table (pipeline_stages.py
all-reduces it with stage 0's).
"""

from __future__ import annotations

from tpsim.darray import DArray
from tpsim.nn.block import TransformerBlock
from tpsim.nn.config import GPTConfig
from tpsim.nn.decoder import layer_seed
from tpsim.nn.dropout import RNGTracker
from tpsim.nn.embedding import VocabParallelEmbedding, VocabParallelLogits
from tpsim.nn.gpt import GPTEmbedding
from tpsim.nn.loss import VocabParallelCrossEntropy
from tpsim.nn.module import Module
from tpsim.nn.norm import LayerNorm


class GPTStage(Module):
    """Layers `layers` of a GPT on one stage's mesh; `pre_process`: the embedding, `post_process`: the
    head and loss (Megatron's flags).  Names and seeds are GPT's, so a parameter has the same numbers
    and the same name as in tpsim.nn.GPT; the last stage's table copy is `output_layer.weight`."""

    def __init__(
        self,
        mesh,
        cfg: GPTConfig,
        layers: range,
        *,
        pre_process: bool,
        post_process: bool,
        sequence_parallel: bool = False,
        seed: int = 0,
        init: str | None = "normal",
        name="gpt",
    ):
        super().__init__(mesh, name)
        sp = sequence_parallel
        kw: dict = dict(init=init, dtype=cfg.dtype, tp_dim=None)
        self.pre_process, self.post_process = pre_process, post_process
        self.tracker = RNGTracker(seed)
        if pre_process:
            embedding = GPTEmbedding(
                mesh,
                cfg,
                tracker=self.tracker,
                sequence_parallel=sp,
                pad_to_multiple_of=None,
                seed=seed,
                kw=kw,
            )
            self.embedding = self.child("embedding", embedding)
        self.layers = [
            self.child(
                f"layers.{i}",
                TransformerBlock(
                    mesh,
                    cfg.hidden,
                    cfg.num_heads,
                    cfg.ffn,
                    seed=layer_seed(seed, i),
                    dropout=cfg.dropout,
                    tracker=self.tracker,
                    sequence_parallel=sp,
                    **kw,
                ),
            )
            for i in layers
        ]
        if post_process:
            top = layer_seed(seed, cfg.num_layers)
            final = LayerNorm(mesh, cfg.hidden, seed=top, sequence_parallel=sp, **kw)
            self.final_layernorm = self.child("final_layernorm", final)
            # the copy of the tied table: GPT's word embeddings, the same seed (module docstring)
            table = VocabParallelEmbedding(mesh, cfg.vocab_size, cfg.hidden, seed=seed, **kw)
            self.output_layer = self.child("output_layer", table)
            self.logits = self.child("logits", VocabParallelLogits(table))
            self.logits.sequence_parallel = sp
            self.loss = self.child("loss", VocabParallelCrossEntropy(mesh, vocab_size=cfg.vocab_size))

    def forward(self, x, targets=None):
        """Stage 0 takes ids (s, b); the others the previous stage's x.  The last returns the per-token
        loss (s, b), the others x (s, b, h)."""
        if self.pre_process:
            x = self.embedding(x)
        for layer in self.layers:
            x = layer(x)
        if not self.post_process:
            return x
        loss, _ = self.loss(self.logits(self.final_layernorm(x)), targets)
        return loss

    def backward(self, dy) -> DArray | None:
        """The last stage takes d(mean)/d(loss) (s, b); the others the next stage's dx."""
        if self.post_process:
            dy = self.final_layernorm.backprop(self.logits.backprop(self.loss.backprop(dy)))
        for layer in reversed(self.layers):
            dy = layer.backprop(dy)
        if self.pre_process:
            self.embedding.backprop(dy)
            return None
        return dy
