"""`analyse_llama(config, tp, sp)`: one training step of a Llama-style model, shape-only, as gpt.analyse
does for a GPT: every layer simulated on t virtual devices, nothing allocated.

Unlike the GPT stand-ins of config.py, this is the model itself: GQA (KV heads split or replicated,
with their grads' all-reduce), SwiGLU, RMSNorm, RoPE, untied logits; so its activation memory and its
collectives are the Llama's.
"""

from __future__ import annotations

import math
import time

import numpy as np

from tpsim.efficiency import Efficiency, mode_name
from tpsim.hardware import device_spec
from tpsim.mesh import Mesh
from tpsim.meta import meta
from tpsim.nn.gpt import UNBOUNDED, _in_use, _traffic
from tpsim.nn.llama import Llama
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig


def analyse_llama(
    config: LlamaConfig | str,
    tp: int = 8,
    sp: bool = False,
    *,
    device="h100",
    topology=None,
    pad_to_multiple_of: int | None = 128,
    efficiency: str | Efficiency = "peak",
) -> dict:
    """`parameters` counts each replicated KV head once (padded vocab rows included); `parameters_stored`
    counts every copy.  Per device (the maximum over devices): bytes sent and collectives by direction,
    the step's time on the per-device timeline, and memory (weights, grads, activations after forward,
    peak): gpt.analyse's keys, so plan/layout.py takes either.  `mode` is `efficiency`, the mode compute
    is priced in ("peak" or "realistic")."""
    from tpsim import presets

    cfg = LLAMA_PRESETS[config] if isinstance(config, str) else config
    start = time.perf_counter()
    spec = device_spec(device)
    if topology is None or isinstance(topology, str):
        gpu = str(device).lower() if str(device).lower() in presets.NVLINK else "h100"
        topology = presets.nvlink_node(tp, gpu) if topology is None else presets.preset(topology, tp)
    mesh = Mesh(tp, names=("tp",), topology=topology, memory=UNBOUNDED, device=spec, efficiency=efficiency)
    model = Llama(mesh, cfg, sequence_parallel=sp, init=None, pad_to_multiple_of=pad_to_multiple_of)
    ids = meta((cfg.seq_len, cfg.micro_batch), "int64")
    weights = _in_use(mesh, "weights")
    model(ids, ids)
    forward, activations = max(mesh.clock), _in_use(mesh, "activations")
    model.backprop()
    trace, step, peak = mesh.trace, max(mesh.clock), max(d.peak for d in mesh.devices)
    busy = np.bincount([op.device for op in trace.compute], [op.end - op.start for op in trace.compute], tp)
    return {
        **dict(model=cfg.name, source=cfg.source, tp=tp, sequence_parallel=sp, device=spec.name),
        "mode": mode_name(efficiency),
        "topology": topology.name,
        "parameters": model.num_parameters(),
        "parameters_stored": sum(math.prod(p.shape) for _, p in model.named_parameters()),
        "layers_simulated": cfg.num_layers,
        "extrapolated": False,
        **_traffic(trace, tp),
        "time": dict(
            forward=forward,
            backward=step - forward,
            step=step,
            compute=float(busy.max()),
            comm=sum(c.time for c in trace.collectives),
        ),
        "memory": dict(
            weights=weights,
            grads=_in_use(mesh, "grads"),
            activations=activations,
            comm=max((c.nbytes for c in trace.collectives), default=0),
            peak=peak,
            capacity=spec.memory,
            fits=peak <= spec.memory,
        ),
        "wall_s": time.perf_counter() - start,
    }
