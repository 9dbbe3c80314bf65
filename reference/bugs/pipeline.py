"""Tied embedding grads never all-reduced over the embedding group, on real ranks (tpsim/bugs/pipeline.py).

Rank (stage, r) = stage * t + r runs its stage of the catalogue's GPT (pp = 2, t = world_size / 2) on
gloo; `rank_run` returns its loss (last stage) and its stage's grads, named as tpsim names them, and
`jobs` / `as_tpsim` let reference/bugs/check.py judge them as it judges every other mutation.
"""

from __future__ import annotations

import torch

from reference.module import to_numpy
from reference.pipeline_stages import PipelinedGPT
from tpsim.bugs import pipeline
from tpsim.bugs.detect import rel_tol
from tpsim.darray import from_local
from tpsim.mesh import Mesh


class TiedEmbeddingGradsUnreduced(PipelinedGPT):
    def allreduce_word_embedding_grads(self) -> None:
        return None  # the bug: the embedding group is never reduced over


def rank_run(ctx, job: dict, cls) -> dict:
    """One step of `cls` (the bug or the correct pipeline) on this rank: {"out"?, "grad.<param>": ...}."""
    model = cls(
        pipeline.CONFIG,
        pp=2,
        microbatches=pipeline.MICROBATCHES,
        seed=pipeline.SEED,
        init="exact",
        backend=ctx.backend,
    )
    loss = model.step(job["tokens"], job["targets"])
    res = {} if loss is None else {"out": to_numpy(torch.tensor(loss, dtype=torch.float64))}
    for name, p in model.named_parameters():
        res["grad." + name] = to_numpy(p.grad if p.grad is not None else torch.zeros_like(p))
    return res


def jobs(m, t: int) -> tuple[list[dict], dict]:
    """The bug's and the correct pipeline's jobs (the whole ids and targets), and what judges them."""
    got, feed = pipeline.run_pipeline(m.build, t, m.inputs)
    sharded_truth, _ = pipeline.run_pipeline(m.truth, t, m.inputs)
    job = dict(name=m.name, pipelined=True, tokens=feed["tokens"], targets=feed["targets"])
    want, tol = pipeline.truth(m.inputs), rel_tol(got, m.inputs)
    ctx = dict(got=got, sharded_truth=sharded_truth, want=want, tol=tol)
    return [dict(job, which="bug"), dict(job, which="truth")], ctx


def as_tpsim(ranks: list[dict], like: dict) -> dict:
    """Each tensor from the ranks of the stage that holds it, as a DArray on a stage mesh with tpsim's
    placements (a bug's "R" may differ across ranks: that is what is checked)."""
    out = {}
    for name, g in like.items():
        pieces = [r[name] for r in ranks if name in r]  # one stage's t ranks, in tp order
        out[name] = from_local(pieces, Mesh(len(pieces)), list(g.placements), shape=g.shape, run_check=False)
    return out
