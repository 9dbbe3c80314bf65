"""The decoder-only language model's step, shared by GPT and Llama: they differ in what they build.

    ids (s, b) -> embedding -> layers -> final norm -> output layer (s, b, V') S(-1) -> vocab-parallel loss

A subclass builds `embedding`, `layers`, `output_layer` and `loss`, and names its final norm
(`final_norm`: GPT's `final_layernorm`, Llama's `norm`, as Megatron and Hugging Face call them).
"""

from __future__ import annotations

from tpsim.darray import DArray
from tpsim.nn.module import Module

LAYER_SEED = 100  # layer i draws its weights from seed + LAYER_SEED * (i + 1) onwards


def layer_seed(seed: int, i: int) -> int:
    """Where layer i (0-based) draws its weights from, and at i = num_layers what sits above the layers
    (final norm, untied logits): one rule for both engines, the whole model and each pipeline stage."""
    return seed + LAYER_SEED * (i + 1)


class DecoderLM(Module):
    embedding: Module
    layers: list  # of blocks, each a Module
    output_layer: Module
    loss: Module

    @property
    def final_norm(self) -> Module:
        raise NotImplementedError

    def forward(self, ids, targets) -> DArray:
        x = self.embedding(ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.output_layer(self.final_norm(x))  # (s, b, V') S(-1)
        del x
        _, mean = self.loss(logits, targets)
        return mean

    def backward(self) -> None:
        dx = self.final_norm.backprop(self.output_layer.backprop(self.loss.backprop()))
        for layer in reversed(self.layers):
            dx = layer.backprop(dx)
        self.embedding.backprop(dx)
