"""Tied embedding grads never all-reduced across the first and last pipeline stages (pipeline_stages.py).

Under pipeline parallelism the word-embedding table lives twice: on the first stage for the lookup
and, as `output_layer.weight`, on the last for the logits.  Each copy's grad holds only its own
stage's use of the table; Megatron sums them over the embedding group {first, last stage}
(finalize_model_grads -> _allreduce_word_embedding_grads).  Skip that all-reduce and nothing fails:
stage 0 steps without the logits' gradient, the last stage without the lookup's, and the two copies
of one weight drift apart from the first optimizer step on.

`run_pipeline` runs a `PipelinedGPT` (or the mutation) on a (pp = 2, tp = t / 2) mesh and names its
loss ("out") and every parameter grad as the detector does; `truth` runs the unsharded tpsim GPT on one
device, whose one tied grad is the truth for both copies ("grad.output_layer.weight" is added to it).
"""

from __future__ import annotations

from tpsim.bugs.detect import Inputs, Report, compare, draw, rel_tol
from tpsim.errors import WorldSizeError
from tpsim.mesh import Mesh
from tpsim.nn.config import GPTConfig
from tpsim.nn.gpt import GPT
from tpsim.nn.pipeline_stages import PipelinedGPT

# 2 layers (one per stage); V = 11 splits unevenly over tp = 2; 2 heads; b = 4 in 2 microbatches
CONFIG = GPTConfig(11, 8, 2, 2, 5, micro_batch=4, dtype="float64", dropout=0.0, name="pp-bugs")
MICROBATCHES, SEED = 2, 9
TABLE, COPY = "grad.embedding.word_embeddings.weight", "grad.output_layer.weight"


class TiedEmbeddingGradsUnreduced(PipelinedGPT):
    """finalize_grads without the embedding group's all-reduce: each copy keeps its own stage's grad."""

    def allreduce_word_embedding_grads(self) -> None:
        return None  # the bug: the embedding group is never reduced over


def pipelined(cls=PipelinedGPT):
    """mesh (pp, tp) -> the pipelined GPT of the catalogue, exact data (small integers, float64)."""
    return lambda mesh: cls(mesh, CONFIG, microbatches=MICROBATCHES, seed=SEED, init="exact")


def pp_mesh(world_size: int) -> Mesh:
    """Two stages of world_size / 2 tensor-parallel devices each."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2 or world_size % 2:
        raise WorldSizeError(
            f"a 2-stage pipeline needs an even world size >= 2 (pp = 2 stages of t / 2 devices), got "
            f"{world_size!r}"
        )
    return Mesh((2, world_size // 2), names=("pp", "tp"))


def run_pipeline(build, world_size: int, inputs: Inputs, seed: int = 0) -> tuple[dict, dict]:
    """One step of `build(pp_mesh(world_size))`: ({"out": mean loss, "grad.<param>": ...}, the feed)."""
    model = build(pp_mesh(world_size))
    feed = draw(inputs, seed)
    named: dict = {"out": model.step(feed["tokens"], feed["targets"])}
    for name, g in model.named_grads():
        named["grad." + name.removeprefix(model.name + ".")] = g
    return named, feed


def truth(inputs: Inputs, seed: int = 0) -> dict:
    """The unsharded GPT on one device, same weights: its loss and grads; the tied grad for both copies."""
    gpt = GPT(Mesh(1), CONFIG, seed=SEED, init="exact", tp_dim=-1)
    feed = draw(inputs, seed)
    named: dict = {"out": gpt(feed["tokens"], feed["targets"])}
    gpt.backprop()
    for name, g in gpt.named_grads():
        named["grad." + name.removeprefix(gpt.name + ".")] = g
    named[COPY] = named[TABLE]
    return named


def detect_pipeline(build, inputs: Inputs, *, world_size: int = 2, seed: int = 0) -> Report:
    """`build` pipelined over pp = 2 stages against the unsharded GPT, every tensor by name."""
    got, _ = run_pipeline(build, world_size, inputs, seed)
    return compare(got, truth(inputs, seed), rel_tol(got, inputs))
