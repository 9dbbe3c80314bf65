"""A GPT split into pipeline stages that compute (Megatron's pipeline parallelism, numerically).

    mesh (pp, tp):  stage 0      embedding, layers of stage 0               ─ send x ─▶
                    stage i      its layers                                 ─ send x ─▶
                    stage p-1    its layers, final_layernorm, output_layer (its own copy of the
                                 word-embedding table), loss
                    backward: dx sent the other way; then the embedding group {first, last stage}
                    all-reduces the two copies' weight grads (Megatron's _allreduce_word_embedding_grads)

Stage i is a `GPTStage` (gpt_stage.py) on its own t-device mesh: device r of it is device (i, r) of
the (pp, tp) mesh, and its tensor-parallel collectives run there.  Bytes between stages go only
through the (pp, tp) mesh's engine, the one door: a send is a direct broadcast in a group of two,
(i, r) -> (i+1, r), for every r at once (as tpsim/plan/pp.py sends), and the embedding-group
all-reduce runs in the groups ((0, r), (p-1, r)).  So the (pp, tp) mesh's trace holds every byte
that crossed a stage boundary.

The output layer on the last stage uses its own copy of the tied table: the same seeded numbers
(Megatron zeroes it and all-reduces the embedding group once at setup; the seed gives the same
numbers, which the tests check).  Each copy's grad holds only its own stage's use of the table (the
lookup on stage 0, the logits on the last), so the all-reduce is what makes both the true grad.

The schedule is GPipe: every microbatch forward, then every microbatch backward.  A stage keeps
each microbatch's saved activations apart (`_microbatch`), as autograd keeps one graph per microbatch.
The mean loss over all tokens is the mean of the microbatches' means; each microbatch's loss
backward starts from d(mean)/d(loss) = 1 / (s b), as Megatron divides by the number of microbatches.
A step starts from zero grads, as Megatron zeroes its grad buffers before each iteration.

Time: each stage's mesh keeps its own clocks and the (pp, tp) mesh those of the sends, so this file
says what is computed and what crosses the stage boundaries, not how long the pipeline takes; the
schedules' makespan and bubble are tpsim/plan/pipeline.py's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from tpsim.collectives import all_reduce, broadcast
from tpsim.darray import DArray, from_local
from tpsim.errors import PipelineError, ShapeError
from tpsim.mesh import Mesh
from tpsim.nn.config import GPTConfig
from tpsim.nn.gpt_stage import GPTStage
from tpsim.nn.module import Module, local
from tpsim.placement import Replicate, chunk_offsets, chunk_sizes


class PipelinedGPT:
    """`mean = model.step(ids, targets)`: forward and backward of every microbatch over the pp stages,
    then `finalize_grads` (the embedding-group all-reduce).  `mesh` has dims `pp` (>= 2) and `tp`."""

    def __init__(
        self,
        mesh: Mesh,
        config: GPTConfig,
        *,
        microbatches: int = 1,
        sequence_parallel=False,
        seed: int = 0,
        init: str | None = "normal",
        pp_dim="pp",
        tp_dim="tp",
        name: str = "gpt",
    ):
        self.world, self.config, self.name = mesh, config, name
        self.pp, self.tp = mesh.dim_index(pp_dim), mesh.dim_index(tp_dim)
        p, t = mesh.shape[self.pp], mesh.shape[self.tp]
        if mesh.ndim != 2 or self.pp == self.tp or p < 2:
            raise PipelineError(f"PipelinedGPT needs a 2-d mesh (pp, tp) with pp >= 2 stages; got {mesh}")
        if not isinstance(microbatches, int) or isinstance(microbatches, bool) or microbatches < 1:
            raise PipelineError(f"PipelinedGPT: microbatches = {microbatches!r}; valid: an int >= 1")
        self.microbatches, self.sequence_parallel = microbatches, sequence_parallel
        counts, starts = chunk_sizes(config.num_layers, p), chunk_offsets(config.num_layers, p)
        self.stages = [
            GPTStage(
                Mesh(t, names=(mesh.names[self.tp],), device=mesh.spec),
                config,
                range(starts[i], starts[i] + counts[i]),
                pre_process=i == 0,
                post_process=i == p - 1,
                sequence_parallel=sequence_parallel,
                seed=seed,
                init=init,
                name=name,
            )
            for i in range(p)
        ]

    def device(self, stage: int, tp_rank: int) -> int:
        coord = [0, 0]
        coord[self.pp], coord[self.tp] = stage, tp_rank
        return self.world.device_at(tuple(coord))

    def step(self, ids, targets) -> DArray:
        """GPipe over the microbatches (split along the batch), then finalize_grads; the mean loss
        over every token, 0-d on the last stage's mesh."""
        ids, targets = np.asarray(ids), np.asarray(targets)
        m = self.microbatches
        if ids.ndim != 2 or ids.shape[1] % m or targets.shape != ids.shape:
            raise ShapeError(
                f"{self.name}: ids {ids.shape}, targets {targets.shape}; valid: ids (s, b) whose batch b "
                f"splits into microbatches = {m} equal parts, and targets of the ids' shape"
            )
        s, b = ids.shape
        self.zero_grad()
        pieces = [slice(j * (b // m), (j + 1) * (b // m)) for j in range(m)]
        last, stash = len(self.stages) - 1, dict[tuple[int, int], list]()
        losses: list = []
        for j, cut in enumerate(pieces):  # forward: F(j) on every stage, sends between them
            x: np.ndarray | DArray = ids[:, cut]
            for i, stage in enumerate(self.stages):
                if i:
                    x = self.send(x, i - 1, i, "forward")  # type: ignore[arg-type]  # a DArray past stage 0
                with _microbatch(stage, stash, (i, j)):
                    x = stage(x, targets[:, cut]) if i == last else stage(x)
            losses.append(x)
        dloss = np.full((s, b // m), 1.0 / (s * b), dtype=self.config.dtype)  # d(mean of all) / d(loss)
        for j in range(m):  # backward: B(j) from the last stage down, dx sent back
            dy: np.ndarray | DArray = dloss
            for i in range(last, -1, -1):
                if i < last:
                    dy = self.send(dy, i + 1, i, "backward")  # type: ignore[arg-type]  # dx: a DArray
                with _microbatch(self.stages[i], stash, (i, j)):
                    dy = self.stages[i].backprop(dy)
        self.finalize_grads()
        mesh = self.stages[last].mesh
        return local(
            mesh, "loss_mean", lambda *ls: _mean(ls, s * b), *losses, placements=[Replicate()], shape=()
        )

    def send(self, x: DArray, src: int, dst: int, direction: str) -> DArray:
        """x's pieces from stage src's devices to stage dst's, tp rank r to tp rank r: a direct
        broadcast in each pair ((src, r), (dst, r)) on the (pp, tp) mesh's engine."""
        t = len(x.shards)
        pairs = [(self.device(src, r), self.device(dst, r)) for r in range(t)]
        out = _in_pairs(
            broadcast,
            {a: x.shards[r] for r, (a, _) in enumerate(pairs)},
            self.world,
            pairs,
            root=0,
            algorithm="direct",
            label=f"pp.send_{direction}.{src}->{dst}",
            direction=direction,
        )
        mesh = self.stages[dst].mesh
        return from_local([out[b] for _, b in pairs], mesh, x.placements, shape=x.shape, run_check=False)

    def finalize_grads(self) -> None:
        """Megatron's finalize_model_grads, the pipeline part: the tied copies' grads all-reduced."""
        self.allreduce_word_embedding_grads()

    def allreduce_word_embedding_grads(self) -> None:
        """dE_first + dE_last on both stages: an all-reduce in each group ((0, r), (p-1, r))."""
        first, last = self.stages[0].embedding.word_embeddings, self.stages[-1].output_layer
        g0, g1 = first.grads["weight"], last.grads["weight"]
        pairs = [(self.device(0, r), self.device(len(self.stages) - 1, r)) for r in range(len(g0.shards))]
        buffers = {a: g0.shards[r] for r, (a, _) in enumerate(pairs)}
        buffers.update({b: g1.shards[r] for r, (_, b) in enumerate(pairs)})
        out = _in_pairs(
            all_reduce, buffers, self.world, pairs, label="embedding_group.all_reduce", direction="backward"
        )
        for table, g, side in ((first, g0, 0), (last, g1, 1)):
            shards = [out[pair[side]] for pair in pairs]
            table.grads["weight"] = from_local(shards, g.mesh, g.placements, shape=g.shape, run_check=False)
            table.grads["weight"].recategorize("grads")

    def named_parameters(self) -> Iterator[tuple[str, DArray]]:
        for stage in self.stages:
            yield from stage.named_parameters()

    def named_grads(self) -> Iterator[tuple[str, DArray]]:
        for stage in self.stages:
            yield from stage.named_grads()

    def zero_grad(self) -> None:
        for stage in self.stages:
            stage.zero_grad()


def _mean(losses, count: int) -> np.ndarray:
    """Every microbatch's per-token losses summed, in microbatch order, over all tokens (0-d)."""
    return np.asarray(sum(np.asarray(a, np.float64).sum() for a in losses) / count, losses[0].dtype)


def _in_pairs(collective, buffers: dict, mesh: Mesh, pairs: list, **kw) -> list:
    """Run `collective` in the groups `pairs` only: a receiver without a buffer passes None, a device
    outside the pairs an empty buffer, which the engine never packs (it moves only the groups' pieces).
    Pairs whose pieces differ in shape (an uneven vocab split) run apart, as the engine runs uneven groups."""
    dtype, out = next(iter(buffers.values())).dtype, [None] * mesh.size
    for shape in dict.fromkeys(buffers[a].shape for a, _ in pairs):
        alike = [pair for pair in pairs if buffers[pair[0]].shape == shape]
        inside = {d for pair in alike for d in pair}
        full = [buffers.get(d) if d in inside else np.empty((0,), dtype) for d in range(mesh.size)]
        for d, r in enumerate(collective(full, mesh, groups=alike, **kw)):
            out[d] = r if d in inside else out[d]
    return out


@contextlib.contextmanager
def _microbatch(stage: Module, store: dict, key) -> Iterator[None]:
    """Inside, every module of `stage` saves into microbatch `key`'s own dicts (kept in `store`)."""
    modules = list(_tree(stage))
    outer = [m._saved for m in modules]
    mine = store.get(key) or [{} for _ in modules]  # a fresh dict per module at F(j)
    for m, saved in zip(modules, mine, strict=True):
        m._saved = saved
    try:
        yield
    finally:
        store[key] = [m._saved for m in modules]
        for m, saved in zip(modules, outer, strict=True):
            m._saved = saved


def _tree(m: Module) -> Iterator[Module]:
    yield m
    for c in m.children.values():
        yield from _tree(c)
