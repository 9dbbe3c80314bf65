"""One training iteration of a GPT laid out TP x DP x PP, in closed form: time, broken down, and memory.

Per microbatch, on the heaviest stage (L / pp layers, plus the logit layer):

    forward    every layer's GEMMs (kernels.py, priced by efficiency.py) and memory-bound ops, and
               TP's collectives: 2 all-reduces of (s, b, h) per layer, or under SP 2 all-gathers and
               2 reduce-scatters (the same bytes); they block the compute stream (no TP overlap:
               streams=True / tp_overlap=True time it on the stream timeline instead, timeline.py)
    backward   two GEMMs per forward GEMM, the backward of each memory-bound op (kernels.backward_passes,
               op by op from the code), the same TP collectives, and the recomputation: a whole
               forward (full, with its collectives) or the attention core (selective), as Megatron
               reruns it just before the backward
    pipeline   pipeline.simulate (or interleaved.py, schedule "interleaved" with `chunks` per device)
               runs the schedule with those times and the stage-boundary send;
               rerun with free sends, its makespan minus m (t_f + t_b) is the bubble, and what the
               sends add to it is the exposed PP communication
    dp         the gradient all-reduce (ZeRO-1: a reduce-scatter of the grads and an all-gather of the
               parameters: two ring halves, under NCCL's tuning not the all-reduce's time, a tree or ring),
               after the backward; with dp_overlap it hides behind the last microbatch's backward
               (on the stream timeline: Megatron's buckets, each launched when its layers are done)
    optimizer  Adam over this device's parameters (its 1 / dp share under ZeRO-1), memory-bound:
               kernels.OPTIMIZER_BYTES per parameter (32 for fused / flash; 68 for Megatron-LM 2019's
               FP16_Optimizer, item by item in kernels.py), plus, without dp_overlap, the local DDP
               wrapper's gradient copies (kernels.LOCAL_DDP_BYTES: 12 B per parameter in 2019, at any dp)
    logits     the logit GEMM and the cross-entropy, kernels.CROSS_ENTROPY_BYTES per logit element

Not counted: the embedding's lookup and gradient, the final LayerNorm, data loading, host overheads:
kernel launches beyond one per op, and the host synchronisations of Megatron-LM 2019's optimizer
(a .item() / float() per parameter tensor in the overflow check and the gradient norm, ~2 per tensor,
~970 per iteration of the 1.2B model), whose cost is not measured here.

A LlamaConfig (tpsim/nn/llama_config.py) is priced as itself: GQA's qkv and SwiGLU's fused gate-up
GEMMs (kernels.layer_gemms with kv_heads, gated), RMSNorm, RoPE and SwiGLU passes (kernels.llama_passes),
the logit GEMM over the padded vocabulary, and with replicated KV heads (t > g) the all-reduce of their
weight grads in groups of t / g after each layer's backward (on the stream timeline too, blocking);
memory and parameters from llama_memory.py; its model FLOPs are
flops.model_flops_of's 6 B s (l W + h V) + 12 B s^2 h l, W its layer's linear weights.

mode "realistic" prices kernels with the device's efficiency parameters, "peak" at the datasheet
roofline; every result names its mode.  FLOPs, MFU and HFU: flops.py.
"""

from __future__ import annotations

from tpsim.efficiency import efficiency_for, memory_time
from tpsim.hardware import device_spec
from tpsim.plan import flops as fl
from tpsim.plan.interleaved import simulate_interleaved
from tpsim.plan.kernels import LOCAL_DDP_BYTES, OPTIMIZER_BYTES
from tpsim.plan.layer_times import layer_times, logit_times
from tpsim.plan.llama_memory import is_llama
from tpsim.plan.memory_train import training_memory
from tpsim.plan.pipeline import simulate
from tpsim.plan.timeline import timeline_breakdown

ADAM_BYTES = OPTIMIZER_BYTES["fused"]  # Megatron 2020+


def iteration(
    cfg,
    layout,
    *,
    cluster,
    device="h100",
    global_batch: int,
    micro_batch: int,
    mode: str = "realistic",
    recompute: str = "none",
    kernels: str = "fused",
    schedule: str = "1f1b",
    chunks: int = 1,
    zero1: bool = False,
    dp_overlap: bool = False,
    tp_overlap: bool = False,
    streams: bool = False,
    trace: str | None = None,
    efficiency=None,
) -> dict:
    """Time, FLOPs, MFU / HFU and memory of one iteration. `efficiency` overrides the device's own.

    streams=True (implied by tp_overlap) times it on the stream timeline (timeline.py) instead of in
    closed form: dp_overlap then means Megatron's gradient buckets, and tp_overlap its TP overlap.
    trace: a path to write that timeline to as a Chrome / Perfetto trace (implies streams)."""
    spec = device_spec(device)
    eff = efficiency if efficiency is not None or mode == "peak" else efficiency_for(_key(device), mode)
    t, dp, pp = layout.tp, layout.dp, layout.pp
    m = global_batch // (dp * micro_batch)
    layers = cfg.num_layers // pp
    lt = layer_times(cfg, t, layout.sp, micro_batch, spec, eff, cluster, kernels, recompute)
    lf, lb = logit_times(cfg, t, micro_batch, spec, eff, kernels)
    t_f = layers * (lt["forward_gemm"] + lt["forward_memory"] + lt["tp_forward"]) + lf
    t_b = (
        layers
        * (
            lt["backward_gemm"]
            + lt["backward_memory"]
            + lt["tp_backward"]
            + lt["recompute_compute"]
            + lt["recompute_tp"]
        )
        + lb
    )
    boundary = 2 * micro_batch * cfg.seq_len * cfg.hidden / (t if layout.sp else 1)
    send = cluster.send(boundary, across_nodes=t * dp >= cluster.gpus_per_node) if pp > 1 else 0.0
    run = _pipeline(schedule, chunks, pp, m, t_f, t_b, send)
    free = _pipeline(schedule, chunks, pp, m, t_f, t_b, 0.0).makespan if pp > 1 else m * (t_f + t_b)
    mem = training_memory(
        cfg,
        layout,
        micro_batch,
        m,
        spec.memory,
        recompute=recompute,
        zero1=zero1,
        schedule=schedule,
        chunks=chunks,
        kernels=kernels,
    )
    params = mem["parameters"]
    if dp == 1:
        dp_time = 0.0
    elif zero1:  # the distributed optimizer: reduce-scatter the grads, all-gather the parameters
        dp_time = 2 * cluster.reduce_scatter(dp, t, 2 * params)
    else:
        dp_time = cluster.all_reduce(dp, t, 2 * params)
    dp_exposed = max(0.0, dp_time - t_b) if dp_overlap else dp_time
    optimizer = memory_time(spec, eff, OPTIMIZER_BYTES[kernels] * params / (dp if zero1 else 1))
    if LOCAL_DDP_BYTES[kernels] and not dp_overlap:  # Megatron-LM 2019's own DDP, one GPU included
        optimizer += memory_time(spec, eff, LOCAL_DDP_BYTES[kernels] * params)
    tp = m * layers * (lt["tp_forward"] + lt["tp_backward"] + lt["recompute_tp"])
    busy = m * (t_f + t_b)
    breakdown = {
        "compute": busy - tp - m * layers * lt["recompute_compute"],
        "recompute": m * layers * lt["recompute_compute"],
        "tp_comm": tp,
        "pp_comm": max(0.0, run.makespan - free) if pp > 1 else 0.0,  # at pp = 1: rounding noise only
        "pp_bubble": max(0.0, free - busy) if pp > 1 else 0.0,
        "dp_comm": dp_exposed,
        "optimizer": optimizer,
    }
    streams = streams or tp_overlap or trace is not None
    if streams:
        breakdown = timeline_breakdown(
            trace=trace,
            lt=lt,
            logits=(lf, lb),
            tp=t,
            sp=layout.sp,
            pp=pp,
            dp=dp,
            m=m,
            layers=layers,
            schedule=schedule,
            chunks=chunks,
            send=send,
            send_bytes=boundary,
            params=params,
            optimizer=optimizer,
            cluster=cluster,
            zero1=zero1,
            recompute=recompute,
            tp_overlap=tp_overlap,
            dp_overlap=dp_overlap,
        )
    step = sum(breakdown.values())
    devices = t * dp * pp
    s, L, h, V = cfg.seq_len, cfg.num_layers, cfg.hidden, cfg.vocab_size
    model = fl.model_flops(global_batch, s, L, h, V)
    hardware = fl.hardware_flops(global_batch, s, L, h, V, recompute)
    formula = "72 B s l h^2 (1 + s/6h + V/12lh) (Narayanan et al. 2021)"
    if is_llama(cfg):
        w = cfg.layer_weights()
        model = fl.model_flops_of(global_batch, s, L, h, V, w)
        hardware = model + fl.recompute_flops_of(global_batch, s, L, h, w, recompute)
        formula = f"6 B s (l W + h V) + 12 B s^2 h l, W = {w:,} linear weights per layer"
    peak = spec.peak(cfg.dtype)
    return {
        "model": cfg.name,
        "layout": str(layout),
        "devices": devices,
        "device": spec.name,
        "cluster": cluster.name,
        "collectives": cluster.describe(),  # NCCL algorithm choice, rates and latencies, or the lockstep ring
        "mode": mode if efficiency is None else f"{mode} (given efficiency: {efficiency.device})",
        "recompute": recompute,
        "kernels": kernels,
        "global_batch": global_batch,
        "micro_batch": micro_batch,
        "microbatches": m,
        "timing": "stream timeline (timeline.py)" if streams else "closed form",
        "tp_overlap": tp_overlap,
        "dp_overlap": dp_overlap,
        "time": {"iteration": step, **breakdown, "microbatch_forward": t_f, "microbatch_backward": t_b},
        "tokens_per_s": global_batch * s / step,
        "flops": {"model": model, "hardware": hardware},
        "flops_formula": formula,
        "tflops_per_device": {
            "model": model / step / devices / 1e12,
            "hardware": hardware / step / devices / 1e12,
        },
        "mfu": model / (step * devices * peak),
        "hfu": hardware / (step * devices * peak),
        "memory": mem,
    }


def _pipeline(schedule: str, chunks: int, pp: int, m: int, t_f: float, t_b: float, send: float):
    """pipeline.simulate, or interleaved.simulate_interleaved with `chunks` model chunks per device."""
    if schedule == "interleaved":
        return simulate_interleaved(pp, chunks, m, t_f, t_b, send)
    return simulate(schedule, pp, m, t_f, t_b, send)


def _key(device) -> str:
    """The DEVICES key of `device` (a key or a DeviceSpec of one), for its efficiency parameters."""
    if isinstance(device, str):
        return device
    from tpsim.hardware import DEVICES

    for key, spec in DEVICES.items():
        if spec.name == device.name:
            return key
    return getattr(device, "efficiency_key", device.name)
