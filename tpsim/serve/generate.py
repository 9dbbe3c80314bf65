"""Greedy generation with a Llama on virtual devices: prefill the prompt, then decode token by token,
each layer attending through its own KV cache (decode.py), sharded by KV heads.

    prefill   ids (s, b) -> every layer's cache filled with s tokens; the last position's logits
    decode    one token per sequence per step: (1, b, h) through every layer, one all-reduce after
              attention and one after the MLP per layer, and the embedding's; the logits (1, b, V'/t)
              all-gathered (S(-1) -> R) so every rank picks the same argmax, as vLLM gathers them

Forward only: nothing is kept for a backward (`inference` turns every module's `save` off for the
run), so the devices hold weights, the caches and the step's transient arrays.  No SP (decode
steps are one token long).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from tpsim.darray import DArray
from tpsim.nn import ops, regions
from tpsim.nn.llama import Llama, LlamaBlock
from tpsim.nn.module import Module
from tpsim.serve.decode import KVCache, attend, new_cache


@contextlib.contextmanager
def inference(model: Module) -> Iterator[None]:
    """Every module under `model` keeps nothing for backward while this is open."""
    mods, stack = [], [model]
    while stack:
        m = stack.pop()
        mods.append(m)
        stack.extend(m.children.values())
    for m in mods:
        m.save = _keep_nothing  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in mods:
            del m.save


def _keep_nothing(**tensors) -> None:
    return None


def block_step(block: LlamaBlock, x: DArray, cache: KVCache) -> DArray:
    a = attend(block.self_attention, block.input_layernorm(x), cache)
    r = block._add("residual_add", x, a)
    return block._add("residual_add", r, block.mlp(block.post_attention_layernorm(r)))


def step(model: Llama, ids, caches: list[KVCache]) -> DArray:
    """Logits (s, b, V'), R on TP (all-gathered), for the tokens `ids` (s, b), appending to the caches."""
    x = model.embedding(ids)
    for layer, cache in zip(model.layers, caches, strict=True):
        x = block_step(layer, x, cache)
    return regions.gather_from(model.output_layer(model.norm(x)), model.tp)


def next_tokens(model: Llama, ids, caches: list[KVCache]) -> np.ndarray:
    """The greedy next token of each sequence after `ids` (s, b), appending to the caches."""
    logits = step(model, ids, caches)
    last = model.local(
        "argmax",
        _argmax,
        logits,
        model.config.vocab_size,
        placements=[*logits.placements],
        shape=logits.shape[1:2],
    )
    return np.asarray(last.shards[0])


def generate(model: Llama, prompt: np.ndarray, steps: int) -> np.ndarray:
    """Greedy continuation (steps, b) of `prompt` (s, b): one prefill, then steps - 1 one-token decodes."""
    if model.sequence_parallel:
        raise ValueError(f"{model.name}: generation runs without sequence parallelism")
    s, b = prompt.shape
    caches = [new_cache(layer.self_attention, b, s + steps) for layer in model.layers]
    out = []
    with inference(model):
        tok = next_tokens(model, prompt, caches)
        out.append(tok)
        for _ in range(steps - 1):
            tok = next_tokens(model, tok[None, :], caches)
            out.append(tok)
    return np.stack(out)


def _argmax(logits, vocab: int):
    """The id of the largest logit of the last position, over the real vocab (padded rows excluded)."""
    last = ops.widen(logits[-1, :, :vocab])  # (b, V)
    return np.argmax(last, axis=-1), logits.shape[1] * vocab, last.nbytes
