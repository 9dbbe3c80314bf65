"""One TP x DP x PP layout of a model on a cluster: traffic, memory and time per device, shape-only.

The mesh is (pp, dp, tp), row-major, so TP's ranks are neighbours (inside a node on a multi-node
topology, unless told otherwise), DP's stride is tp and PP's tp * dp: Megatron's default order.

    stage       L / pp layers, analysed by `tpsim.nn.analyse` on t devices (the TP part: every
                collective and op of one microbatch, forward and backward).  The stage analysed
                carries the embedding and the output layer too: the first and the last stage's
                extra work and weights on one stage, an upper bound for every stage
    pipeline    the schedule (pipeline.py: 1F1B or GPipe) run with the stage's forward and backward
                times and the send time of pp.py, for m = global batch / (dp b) microbatches
    dp          the gradient all-reduce (dp.py) after the last backward, not overlapped
    step time   pipeline makespan + DP time; compute and TP collectives never overlap (timeline.py)
    recompute   none / selective / full: recompute.py adds its forward rerun and shrinks activations

Memory per device, of that heaviest stage: weights and grads in the model's dtype (analyse),
the optimizer's state at OPTIMIZER_BYTES per parameter (divided by dp under ZeRO-1), and the
activations of one microbatch times the most microbatches a stage holds at once (1 without PP;
GPipe m; 1F1B p).  Mixed-precision Adam in bf16 is thus 2 + 2 + 12 = 16 bytes per parameter, the
ZeRO paper's count (Rajbhandari et al. 2020, Sec. 3.1) without sharding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tpsim.efficiency import Efficiency, mode_name
from tpsim.errors import LayoutError
from tpsim.hardware import device_spec
from tpsim.mesh import Mesh
from tpsim.nn.gpt import UNBOUNDED, analyse
from tpsim.nn.llama_analyse import analyse_llama
from tpsim.nn.llama_config import LlamaConfig
from tpsim.nn.models import ModelConfig, resolve_model
from tpsim.plan import dp as dp_mod
from tpsim.plan import pp as pp_mod
from tpsim.plan import recompute as rc
from tpsim.plan.fits import check_layout, layout_notes, node_size
from tpsim.plan.pipeline import SCHEDULES, PipelineError, bubble_fraction, simulate

OPTIMIZER_BYTES = 12  # fp32 master weights + Adam's two moments, 4 bytes each (ZeRO's K = 12)


@dataclass(frozen=True)
class Layout:
    tp: int
    dp: int = 1
    pp: int = 1
    sp: bool = False  # sequence parallelism (needs tp > 1)

    @property
    def devices(self) -> int:
        return self.tp * self.dp * self.pp

    def __str__(self) -> str:
        return f"TP{self.tp} DP{self.dp} PP{self.pp}" + (" SP" if self.sp else "")


def microbatches(cfg: ModelConfig, layout: Layout, global_batch: int, micro_batch: int | None = None) -> int:
    b = micro_batch or cfg.micro_batch
    if global_batch % (layout.dp * b):
        raise LayoutError(
            f"global batch {global_batch} does not split into dp = {layout.dp} replicas of micro-batches "
            f"of {b}; valid: a multiple of {layout.dp * b}"
        )
    return global_batch // (layout.dp * b)


def analyse_stage(
    cfg: ModelConfig,
    tp: int,
    sp: bool,
    layers: int,
    *,
    device,
    topology,
    exact: bool = True,
    cache: dict | None = None,
    efficiency: str | Efficiency = "peak",
) -> dict:
    """`analyse` (a GPT) or `analyse_llama` (the exact Llama) of a `layers`-layer stage, with the
    embedding and the output layer, on t devices.

    exact=False simulates 1 and 2 layers and extends linearly: every layer is the same, so the
    bytes, counts, times and memory of L layers are those of 1 plus (L - 1) times the second's;
    the tests check it against the full run.
    """
    key = (cfg, tp, sp, layers, str(device), id(topology), exact, efficiency)
    if cache is not None and key in cache:
        return cache[key]
    if isinstance(cfg, LlamaConfig):
        llama = cfg

        def run(n: int) -> dict:
            return analyse_llama(
                llama.with_(num_layers=n), tp, sp, device=device, topology=topology, efficiency=efficiency
            )
    else:
        gpt = cfg

        def run(n: int) -> dict:
            kw = dict(device=device, topology=topology, tied_embeddings=gpt.tied_embeddings)
            kw["efficiency"] = efficiency
            return analyse(gpt.with_(num_layers=n), tp, sp, **kw)

    if exact or layers <= 2:
        out = run(layers)
    else:
        one, two = run(1), run(2)
        out = _extend(one, two, layers)
    if cache is not None:
        cache[key] = out
    return out


def _extend(one: dict, two: dict, layers: int) -> dict:
    k = layers - 1

    def lin(a, b):
        if isinstance(a, dict):
            return {key: lin(a[key], b[key]) for key in a}
        if isinstance(a, bool) or not isinstance(a, int | float):
            return a
        v = a + k * (b - a)
        return int(v) if isinstance(a, int) else v

    out = {**two, "layers_simulated": 2, "extrapolated": True, "wall_s": one["wall_s"] + two["wall_s"]}
    for key in ("parameters", "bytes_sent", "collectives", "time"):
        out[key] = lin(one[key], two[key])
    mem = two["memory"]
    out["memory"] = {
        **mem,
        **lin(
            {f: one["memory"][f] for f in ("weights", "grads", "activations", "peak")},
            {f: mem[f] for f in ("weights", "grads", "activations", "peak")},
        ),
    }
    out["memory"]["fits"] = out["memory"]["peak"] <= mem["capacity"]
    return out


def analyse_layout(
    config: ModelConfig | str,
    layout: Layout,
    *,
    topology,
    device="h100",
    global_batch: int = 512,
    micro_batch: int | None = None,
    schedule: str = "1f1b",
    zero1: bool = False,
    dp_algorithm: str | None = None,
    tp_across_nodes: bool = False,
    exact: bool = True,
    cache: dict | None = None,
    recompute: str = "none",
    efficiency: str | Efficiency = "peak",
) -> dict:
    """Traffic, memory and time per device of one training step of `config` laid out as `layout`.

    `topology`: a Topology with at least layout.devices devices (e.g. presets.multi_node).  A Llama-style
    preset or config (models.resolve_model) is simulated as the exact Llama (tpsim.nn.Llama).
    `efficiency`: the mode the stage's compute is priced in ("peak" or "realistic"), named as `mode`.
    """
    cfg = resolve_model(config)
    if micro_batch is not None:
        cfg = cfg.with_(micro_batch=micro_batch)
    check_layout(cfg, layout, topology=topology, tp_across_nodes=tp_across_nodes)
    if schedule not in SCHEDULES:
        raise PipelineError(f"unknown pipeline schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    m = microbatches(cfg, layout, global_batch)
    spec = device_spec(device)
    stage = analyse_stage(
        cfg,
        layout.tp,
        layout.sp,
        cfg.num_layers // layout.pp,
        device=spec,
        topology=topology,
        exact=exact,
        cache=cache,
        efficiency=efficiency,
    )
    itemsize = np.dtype(cfg.dtype).itemsize
    params = stage["memory"]["weights"] // itemsize  # this device's share of the stage

    mesh = Mesh(
        (layout.pp, layout.dp, layout.tp), names=("pp", "dp", "tp"), topology=topology, memory=UNBOUNDED
    )
    grads = dp_mod.gradient_sync(mesh, params, cfg.dtype, zero1=zero1, algorithm=dp_algorithm)
    s = cfg.seq_len // layout.tp if layout.sp else cfg.seq_len
    sends = pp_mod.stage_sends(mesh, (s, cfg.micro_batch, cfg.hidden), cfg.dtype)

    t = stage["time"]
    extra = rc.extra_backward(cfg, t, recompute)  # recompute.py: the forward rerun before backward
    runs = 2 if recompute == "full" else 1  # full recomputation reruns the forward's collectives
    run = simulate(schedule, layout.pp, m, t["forward"], t["backward"] + extra, sends["send_time"])
    in_flight = run.peak_in_flight[0] if layout.pp > 1 else 1
    mem = stage["memory"]
    optimizer = OPTIMIZER_BYTES * params // (layout.dp if zero1 else 1)
    activations = rc.held(mem["activations"] * in_flight, cfg, layout, recompute)
    total = mem["weights"] + mem["grads"] + optimizer + activations
    traffic = {
        "tp": m * (stage["bytes_sent"]["forward"] * runs + stage["bytes_sent"]["backward"]),
        "dp": grads["sent_per_device"],
        "pp": m * sends["sent_per_device_per_microbatch"],
    }
    step = run.makespan + grads["time"]
    tokens = global_batch * cfg.seq_len
    return {
        "model": cfg.name,
        "layout": str(layout),
        "tp": layout.tp,
        "dp": layout.dp,
        "pp": layout.pp,
        "sequence_parallel": layout.sp,
        "devices": layout.devices,
        "device": spec.name,
        "mode": mode_name(efficiency),
        "topology": topology.name,
        "tp_inside_node": _tp_inside_node(topology, layout.tp),
        "global_batch": global_batch,
        "micro_batch": cfg.micro_batch,
        "microbatches": m,
        "schedule": schedule,
        "zero1": zero1,
        "recompute": recompute,
        "notes": layout_notes(cfg, layout.tp),
        "parameters_per_device": params,
        "stage": {
            "layers": cfg.num_layers // layout.pp,
            "layers_simulated": stage["layers_simulated"],
            "extrapolated": stage["extrapolated"],
        },
        "traffic_per_device": {**traffic, "total": sum(traffic.values())},
        "traffic_detail": {
            "tp": {"per_microbatch": stage["bytes_sent"], "collectives": stage["collectives"]},
            "dp": grads,
            "pp": sends,
        },
        "memory_per_device": {
            "weights": mem["weights"],
            "grads": mem["grads"],
            "optimizer": optimizer,
            "activations": activations,
            "activations_per_microbatch": mem["activations"],
            "microbatches_held": in_flight,
            "total": total,
            "capacity": spec.memory,
            "fits": total <= spec.memory,
            "bytes_per_parameter": (mem["weights"] + mem["grads"] + optimizer) / params if params else 0.0,
        },
        "time": {
            "step": step,
            "pipeline": run.makespan,
            "dp": grads["time"],
            "microbatch_forward": t["forward"],
            "microbatch_backward": t["backward"],
            "microbatch_tp_comm": t["comm"],
            "pp_send": sends["send_time"],
            "bubble": run.bubble,
            "bubble_formula": bubble_fraction(layout.pp, m),
            "tokens_per_s": tokens / step if step else math.inf,
            "breakdown": rc.breakdown(m, t, extra, run, grads["time"]),
        },
        "utilisation": rc.utilisation(
            cfg, global_batch, step, layout.devices, spec.peak(cfg.dtype), recompute
        ),
    }


def _tp_inside_node(topology, tp: int) -> bool:
    g = node_size(topology)
    return g is None or (tp <= g and g % tp == 0)
