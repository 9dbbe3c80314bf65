"""A GPT over pipeline stages on real ranks: the mirror of tpsim/nn/pipeline_stages.py.

    rank = stage * t + r, as device (stage, r) of tpsim's (pp, tp) mesh
    tensor-parallel group   the t ranks of one stage (a Comm, as in every reference layer)
    stage boundary          torch.distributed send / recv, rank (i, r) <-> (i+1, r)
    embedding group         new_group([(0, r), (p-1, r)]): Megatron's embedding group, one per r

`step(ids, targets)` runs GPipe over the microbatches (every forward, then every backward), then
`finalize_grads`, the embedding group's all-reduce of the two tied copies' grads.  Each microbatch's
loss backward starts from d(mean)/d(loss) = 1 / (s b), as in tpsim.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from reference.comm import Comm
from reference.gpt_stage import GPTStage
from reference.module import to_torch
from tpsim.errors import PipelineError, ShapeError
from tpsim.nn.config import GPTConfig
from tpsim.placement import chunk_offsets, chunk_sizes


class PipelinedGPT:
    """This rank's stage of a GPT over `pp` stages of world_size / pp ranks each."""

    def __init__(
        self,
        config: GPTConfig,
        *,
        pp: int,
        microbatches: int = 1,
        sequence_parallel: bool = False,
        seed: int = 0,
        init: str = "normal",
        backend=None,
        name: str = "gpt",
    ):
        world, rank = dist.get_world_size(), dist.get_rank()
        if not isinstance(pp, int) or pp < 2 or world % pp:
            raise PipelineError(
                f"PipelinedGPT (rank {rank}): pp = {pp!r} stages on {world} ranks; valid: "
                "pp >= 2 dividing the world size"
            )
        if not isinstance(microbatches, int) or isinstance(microbatches, bool) or microbatches < 1:
            raise PipelineError(
                f"PipelinedGPT (rank {rank}): microbatches = {microbatches!r}; valid: an int >= 1"
            )
        t = world // pp
        self.config, self.pp, self.tp, self.microbatches, self.name = config, pp, t, microbatches, name
        self.stage, self.tp_rank = divmod(rank, t)
        self.sequence_parallel = sequence_parallel
        # every rank makes every group, in one order (new_group's rule), and keeps its own
        stages = [dist.new_group(list(range(s * t, (s + 1) * t))) for s in range(pp)]
        embedding = [dist.new_group([r, (pp - 1) * t + r]) for r in range(t)]
        comm = Comm(stages[self.stage], backend=backend)
        self.first, self.last = self.stage == 0, self.stage == pp - 1
        ends = self.first or self.last  # the embedding group's members
        self.embedding_comm = Comm(embedding[self.tp_rank], backend=backend) if ends else None
        start = chunk_offsets(config.num_layers, pp)[self.stage]
        layers = range(start, start + chunk_sizes(config.num_layers, pp)[self.stage])
        self.module = GPTStage(
            comm,
            config,
            layers,
            pre_process=self.first,
            post_process=self.last,
            sequence_parallel=sequence_parallel,
            seed=seed,
            init=init,
            name=name,
        )

    def step(self, ids: np.ndarray, targets: np.ndarray) -> float | None:
        """GPipe, then finalize_grads; the mean loss over every token on the last stage, None elsewhere."""
        m, (s, b) = self.microbatches, ids.shape
        if b % m or targets.shape != ids.shape:
            raise ShapeError(
                f"{self.name} (rank {dist.get_rank()}): ids {ids.shape}, targets "
                f"{targets.shape}; valid: a batch b that splits into microbatches = {m} "
                "equal parts"
            )
        self.module.zero_grad(set_to_none=True)  # a step starts from zero grads, as tpsim's
        cut = [slice(j * (b // m), (j + 1) * (b // m)) for j in range(m)]
        rows = chunk_sizes(s, self.tp)[self.tp_rank] if self.sequence_parallel else s
        shape = (rows, b // m, self.config.hidden)  # the boundary activation on this rank
        dtype = to_torch(np.zeros(0, self.config.dtype)).dtype
        inputs, outputs = [], []
        for j in range(m):  # forward
            if self.first:
                x = torch.from_numpy(ids[:, cut[j]])
            else:
                x = self._recv(shape, dtype, self.stage - 1).requires_grad_(True)
            y = self.module(x, torch.from_numpy(targets[:, cut[j]])) if self.last else self.module(x)
            if not self.last:
                dist.send(y.detach().contiguous(), self._peer(self.stage + 1))
            inputs.append(x)
            outputs.append(y)
        dloss = torch.full((s, b // m), 1.0 / (s * b), dtype=dtype)  # d(mean of all) / d(loss)
        for j in range(m):  # backward
            dy = dloss if self.last else self._recv(shape, dtype, self.stage + 1)
            outputs[j].backward(dy)
            if not self.first:
                dist.send(inputs[j].grad.contiguous(), self._peer(self.stage - 1))
        self.finalize_grads()
        if not self.last:
            return None
        return float(sum(np.asarray(o.detach(), np.float64).sum() for o in outputs) / (s * b))

    def finalize_grads(self) -> None:
        self.allreduce_word_embedding_grads()

    def allreduce_word_embedding_grads(self) -> None:
        """This rank's copy's grad summed with its twin's on the other end of the pipeline."""
        if self.embedding_comm is None:
            return
        table = self.module.embedding.word_embeddings if self.first else self.module.output_layer
        table.weight.grad = self.embedding_comm.all_reduce(table.weight.grad)

    def named_parameters(self):
        """(name without the model's prefix, parameter) for this rank's stage."""
        return self.module.named_parameters()

    def _peer(self, stage: int) -> int:
        return stage * self.tp + self.tp_rank

    def _recv(self, shape, dtype, stage: int) -> torch.Tensor:
        buf = torch.empty(shape, dtype=dtype)
        dist.recv(buf, self._peer(stage))
        return buf
