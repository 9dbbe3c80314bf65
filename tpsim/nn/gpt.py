"""A GPT (Megatron's GPTModel) on virtual devices: embedding, transformer layers, logits, loss.

    ids (s, b) ─ embedding ─ layers.0 ... layers.{L-1} ─ final_layernorm ─ output_layer ─ loss

embedding       word embeddings (VocabParallelEmbedding: one all-reduce) + learned position
                embeddings (a replicated (seq_len, h) parameter) + dropout
layers.i        TransformerBlock (block.py): 2 all-reduces forward, 2 backward (or SP's pairs)
output_layer    tied: VocabParallelLogits, logits = x E^T with the embedding's table E;
                untied: ColumnParallelLinear(h, V', bias=False).  Logits (s, b, V') S(-1).
loss            VocabParallelCrossEntropy: 3 all-reduces of s b elements; the mean over tokens

Sequence parallelism, as Megatron does it with learned position embeddings (its
LanguageModelEmbedding sets reduce_scatter_embeddings = False when add_position_embedding):
the word embedding is all-reduced (R), the position embedding added on every rank, and
the sum split along the sequence locally (scatter_to_sequence_parallel_region: no bytes
forward, an all-gather of the gradient backward).  The position embedding's gradient is
thus computed from the whole, gathered gradient: R on TP already, no all-reduce.  The
hidden dropouts then draw from the "model-parallel" stream (Megatron forks the tracker).

`analyse(config, tp, sp)` runs a whole training step shape-only (no weights, no data:
`tpsim.meta` arrays) on t virtual devices and reports traffic, time and memory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter

import numpy as np

from tpsim.darray import DArray, distribute
from tpsim.efficiency import Efficiency, mode_name
from tpsim.errors import ShapeError
from tpsim.hardware import device_spec
from tpsim.mesh import Mesh
from tpsim.meta import meta
from tpsim.nn import ops, regions
from tpsim.nn.block import TransformerBlock
from tpsim.nn.config import GPTConfig, preset
from tpsim.nn.decoder import DecoderLM, layer_seed
from tpsim.nn.dropout import Dropout, RNGTracker, hidden_stream
from tpsim.nn.embedding import VocabParallelEmbedding, VocabParallelLogits
from tpsim.nn.init import global_weight
from tpsim.nn.layout import grad_placements
from tpsim.nn.linear import ColumnParallelLinear
from tpsim.nn.loss import VocabParallelCrossEntropy
from tpsim.nn.module import Module
from tpsim.nn.norm import LayerNorm
from tpsim.placement import Replicate

UNBOUNDED = 1 << 62  # device memory for analyse(): report what a model needs, even past the capacity


class GPTEmbedding(Module):
    """ids (s, b) -> (s, b, h): word + position embeddings, then dropout (R on TP, S(0) with SP)."""

    def __init__(self, mesh, cfg: GPTConfig, *, tracker, sequence_parallel, pad_to_multiple_of, seed, kw):
        super().__init__(mesh, None, kw["tp_dim"])
        self.sequence_parallel = sequence_parallel
        table = VocabParallelEmbedding(
            mesh, cfg.vocab_size, cfg.hidden, seed=seed, pad_to_multiple_of=pad_to_multiple_of, **kw
        )
        self.word_embeddings = self.child("word_embeddings", table)
        pos = global_weight((cfg.seq_len, cfg.hidden), seed + 1, kw["init"], cfg.dtype)  # (seq_len, h)
        self.param("position_embeddings", distribute(pos, mesh, [Replicate()] * mesh.ndim))
        stream = hidden_stream(sequence_parallel)
        dropout = Dropout(mesh, cfg.dropout, tracker=tracker, stream=stream, tp_dim=kw["tp_dim"])
        self.embedding_dropout = self.child("embedding_dropout", dropout)

    def forward(self, ids) -> DArray:
        words = self.word_embeddings(ids)  # (s, b, h), R on TP after the all-reduce
        pos = self.params["position_embeddings"]
        if words.shape[0] > pos.shape[0]:
            raise ShapeError(f"{self.name}: {words.shape[0]} tokens, but seq_len = {pos.shape[0]} positions")
        x = self.local("position_embedding_add", _add_positions, words, pos, placements=words.placements)
        del words
        if self.sequence_parallel:  # each rank keeps its rows of the sequence: local, no bytes move
            x = regions.sequence_scatter(x, self.tp, 0)
        return self.embedding_dropout(x)

    def backward(self, dy: DArray) -> None:
        dx = self.embedding_dropout.backprop(dy)
        if self.sequence_parallel:
            dx = regions.sequence_scatter_backward(dx, self.tp, 0)  # all-gather the sequence
        shape = self.params["position_embeddings"].shape
        grad = grad_placements(dx)  # R on TP: dx is whole there; P on a DP mesh dim
        dpos = self.local(
            "position_embedding_dweight", _position_grad, dx, shape, placements=grad, shape=shape
        )
        self.accumulate("position_embeddings", dpos)
        self.word_embeddings.backprop(dx)


class GPT(DecoderLM):
    """`loss = model(ids, targets)` (mean over tokens, 0-d); `model.backprop()` fills every grad.

    `pad_to_multiple_of` pads the vocab as Megatron's make_vocab_size_divisible_by (embedding.py).
    """

    def __init__(
        self,
        mesh,
        config: GPTConfig,
        *,
        sequence_parallel: bool = False,
        tied_embeddings: bool = True,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        init: str | None = "normal",
        tp_dim=None,
        name: str = "gpt",
    ):
        super().__init__(mesh, name, tp_dim)
        cfg, sp = config, sequence_parallel
        self.config, self.sequence_parallel, self.tied = cfg, sp, tied_embeddings
        self.tracker = RNGTracker(seed)
        kw = dict(init=init, dtype=cfg.dtype, tp_dim=tp_dim)
        embedding = GPTEmbedding(
            mesh,
            cfg,
            tracker=self.tracker,
            sequence_parallel=sp,
            pad_to_multiple_of=pad_to_multiple_of,
            seed=seed,
            kw=kw,
        )
        self.embedding = self.child("embedding", embedding)
        layer_kw = dict(dropout=cfg.dropout, tracker=self.tracker, sequence_parallel=sp, **kw)
        self.layers = []
        for i in range(cfg.num_layers):
            h, n, f = cfg.hidden, cfg.num_heads, cfg.ffn
            block = TransformerBlock(mesh, h, n, f, seed=layer_seed(seed, i), **layer_kw)
            self.layers.append(self.child(f"layers.{i}", block))
        top = layer_seed(seed, cfg.num_layers)
        final = LayerNorm(mesh, cfg.hidden, seed=top, sequence_parallel=sp, **kw)
        self.final_layernorm = self.child("final_layernorm", final)
        table = self.embedding.word_embeddings
        self.padded_vocab_size = table.padded_vocab_size
        out: VocabParallelLogits | ColumnParallelLinear
        if tied_embeddings:
            out = VocabParallelLogits(table)
            out.sequence_parallel = sp  # the table's lookup runs without SP (module docstring)
        else:
            v, out_seed = self.padded_vocab_size, top + 10
            out = ColumnParallelLinear(
                mesh, cfg.hidden, v, bias=False, seed=out_seed, sequence_parallel=sp, **kw
            )
        self.output_layer = self.child("output_layer", out)
        self.loss = self.child(
            "loss", VocabParallelCrossEntropy(mesh, vocab_size=cfg.vocab_size, tp_dim=tp_dim)
        )

    @property
    def final_norm(self) -> Module:
        return self.final_layernorm


def analyse(
    config: GPTConfig | str,
    tp: int = 8,
    sp: bool = False,
    *,
    device="h100",
    topology=None,
    tied_embeddings: bool = True,
    pad_to_multiple_of: int | None = 128,
    efficiency: str | Efficiency = "peak",
) -> dict:
    """One training step (forward + backward, every layer simulated) of `config` on t = `tp` devices,
    shape-only: nothing is allocated.  Per device (the maximum over devices where they differ):

    bytes_sent      bytes put on links, forward and backward
    collectives     {direction: {kind: {"count", "bytes"}}}, bytes as nccl-tests' size S
    time            forward, backward, step: the per-device timeline (mesh.clock), on which compute
                    (per op, in the `efficiency` mode) and collectives run one after another, with no overlap;
                    compute and comm: the parts of the step spent in each
    memory          weights; grads (after backward, in the model's dtype: no fp32 main grads, no
                    optimizer state); activations (saved for backward, after forward); comm (the
                    largest collective buffer); peak (everything, as the device tracked it)

    `topology` is a Topology, a preset name (presets.PRESETS) or None for the device's standard node.
    `efficiency` is the mode compute is priced in ("peak" or "realistic", tpsim/efficiency.py); the
    result names it as `mode`.
    """
    from tpsim import presets

    cfg = preset(config) if isinstance(config, str) else config
    start = time.perf_counter()
    spec = _with_mask_peak(device_spec(device))
    if topology is None or isinstance(topology, str):
        topology = presets.for_device(device, tp) if topology is None else presets.preset(topology, tp)
    mesh = Mesh(tp, names=("tp",), topology=topology, memory=UNBOUNDED, device=spec, efficiency=efficiency)
    model = GPT(
        mesh,
        cfg,
        sequence_parallel=sp,
        init=None,
        tied_embeddings=tied_embeddings,
        pad_to_multiple_of=pad_to_multiple_of,
    )
    ids = meta((cfg.seq_len, cfg.micro_batch), "int64")
    weights = _in_use(mesh, "weights")
    model(ids, ids)
    forward, activations = max(mesh.clock), _in_use(mesh, "activations")
    model.backprop()
    trace, step, peak = mesh.trace, max(mesh.clock), max(d.peak for d in mesh.devices)
    busy = np.bincount([op.device for op in trace.compute], [op.end - op.start for op in trace.compute], tp)
    comm = sum(c.time for c in trace.collectives)
    return {
        **dict(model=cfg.name, tp=tp, sequence_parallel=sp, device=spec.name, topology=topology.name),
        "mode": mode_name(efficiency),
        "parameters": sum(math.prod(p.shape) for _, p in model.named_parameters()),
        "layers_simulated": cfg.num_layers,
        "extrapolated": False,
        **_traffic(trace, tp),
        "time": dict(
            forward=forward, backward=step - forward, step=step, compute=float(busy.max()), comm=comm
        ),
        "memory": {
            **dict(weights=weights, grads=_in_use(mesh, "grads"), activations=activations),
            "comm": max((c.nbytes for c in trace.collectives), default=0),
            **dict(peak=peak, capacity=spec.memory, fits=peak <= spec.memory),
        },
        "wall_s": time.perf_counter() - start,
    }


def _traffic(trace, tp: int) -> dict:
    """Bytes each device sent (the maximum over devices) and the collectives, by direction."""
    sent = {"forward": 0, "backward": 0}
    kinds: dict[str, Counter] = {d: Counter() for d in sent}
    sizes: dict[str, Counter] = {d: Counter() for d in sent}
    for c in trace.collectives:
        kinds[c.direction][c.collective] += 1
        sizes[c.direction][c.collective] += c.nbytes
    t = trace.transfers()
    backward = np.array([c.direction == "backward" for c in trace.collectives], dtype=np.int64)
    if len(t["src"]):
        per = np.bincount(backward[t["collective"]] * tp + t["src"], weights=t["nbytes"], minlength=2 * tp)
        sent = {"forward": int(per[:tp].max()), "backward": int(per[tp:].max())}
    by_kind = {d: {k: {"count": n, "bytes": sizes[d][k]} for k, n in kinds[d].items()} for d in kinds}
    return {"bytes_sent": sent, "collectives": by_kind}


def _in_use(mesh, category: str) -> int:
    return max(d.in_use.get(category, 0) for d in mesh.devices)


def _with_mask_peak(spec):
    """Dropout records its mask draw with dtype bool, which a DeviceSpec has no peak for: give it
    the float32 rate (the draw is memory-bound anyway).  A stopgap until dropout.py records it in
    the activations' dtype."""
    if "bool" in spec.flops:
        return spec
    return dataclasses.replace(spec, flops={**spec.flops, "bool": spec.flops["float32"]})


def _add_positions(x, pos):
    """(s, b, h) + pos[:s] broadcast over the batch: read x and s rows of pos, write the sum."""
    nbytes = 2 * x.nbytes + x.shape[0] * x.shape[-1] * x.dtype.itemsize
    return x + pos[: x.shape[0], None, :], x.size, nbytes


def _position_grad(g, shape):
    """dpos[:s] = dy summed over the batch; rows past s get zero."""
    nbytes = g.nbytes + math.prod(shape) * g.dtype.itemsize
    out = np.zeros(shape, g.dtype, like=g)
    out[: g.shape[0]] = ops.narrow(ops.widen(g).sum(axis=1), g.dtype)  # float32 accumulator (ops.py)
    return out, g.size, nbytes
