"""Activation recomputation and utilisation for the simulated plan (layout.py): time, memory, MFU / HFU.

layout.py simulates one microbatch of a stage with every activation kept.  Recomputation changes
that in two places, as Megatron does it:

    time      before a layer's backward, its forward runs again: all of it ("full", with its TP
              collectives) or the attention core ("selective": its share of the layer's forward
              GEMM FLOPs, 4bs^2h of 24bsh^2 (1 + s/6h)); so each microbatch's backward grows by that
    memory    the activations a stage holds shrink by Korthikanti et al. 2022's ratio
              (activations.py): layer bytes with recomputation / layer bytes without

This is an approximation of the simulated numbers, not a re-simulation: the logit layer, which is
not recomputed, is counted in "full"'s extra forward (an overestimate of one layer's worth at most).

    breakdown   the step in compute, recompute, TP, PP (exposed sends) and DP communication, and bubble
    mfu, hfu    flops.py's model and hardware FLOPs over (step x devices x peak)
"""

from __future__ import annotations

from tpsim.plan import flops as fl
from tpsim.plan.activations import RECOMPUTE, RecomputeError, layer_activation_bytes
from tpsim.plan.pipeline import simulate


def check(recompute: str) -> str:
    if recompute not in RECOMPUTE:
        raise RecomputeError(f"unknown recompute mode {recompute!r}; valid: {', '.join(RECOMPUTE)}")
    return recompute


def extra_backward(cfg, stage_time: dict, recompute: str) -> float:
    """Seconds recomputation adds to one microbatch's backward on the stage."""
    if check(recompute) == "none":
        return 0.0
    if recompute == "full":
        return stage_time["forward"]
    s, h = cfg.seq_len, cfg.hidden
    core_share = (s / (6 * h)) / (1 + s / (6 * h))  # of a layer's forward GEMM FLOPs
    return core_share * (stage_time["forward"] - stage_time.get("comm", 0.0) / 2)


def held(activations: int, cfg, layout, recompute: str) -> int:
    """The simulated activations a stage holds, scaled by `activation_ratio` (unchanged for "none")."""
    return (
        activations
        if check(recompute) == "none"
        else int(activations * activation_ratio(cfg, layout, recompute))
    )


def activation_ratio(cfg, layout, recompute: str) -> float:
    """Korthikanti's layer bytes with `recompute` over those without, at this layout's t and SP."""
    args = (cfg.seq_len, cfg.micro_batch, cfg.hidden, cfg.num_heads, layout.tp, layout.sp)
    none = layer_activation_bytes(*args, "none", cfg.ffn)
    return layer_activation_bytes(*args, check(recompute), cfg.ffn) / none


def utilisation(cfg, global_batch: int, step: float, devices: int, peak: float, recompute: str) -> dict:
    s, L, h, V = cfg.seq_len, cfg.num_layers, cfg.hidden, cfg.vocab_size
    if hasattr(cfg, "layer_weights"):  # a LlamaConfig: GQA's and SwiGLU's weights, not 12 h^2
        w = cfg.layer_weights()
        model = fl.model_flops_of(global_batch, s, L, h, V, w)
        hardware = model + fl.recompute_flops_of(global_batch, s, L, h, w, recompute)
        formula = "6 B s (l W + h V) + 12 B s^2 h l, W a layer's linear weights, plus recomputation's"
    else:
        model = fl.model_flops(global_batch, s, L, h, V)
        hardware = fl.hardware_flops(global_batch, s, L, h, V, recompute)
        formula = "72 B s l h^2 (1 + s/6h + V/12lh) (Narayanan et al. 2021), plus recomputation's"
    return {
        "model_flops": model,
        "hardware_flops": hardware,
        "mfu": model / (step * devices * peak),
        "hfu": hardware / (step * devices * peak),
        "flops_formula": formula,
    }


def breakdown(m: int, stage_time: dict, extra: float, run, dp: float) -> dict:
    """The step's parts; they add up to run.makespan + dp.  The pipeline's idle time splits in two: the
    bubble (the schedule rerun with free sends) and the exposed sends (the rest)."""
    tp_comm = stage_time["comm"]
    t_f, t_b = stage_time["forward"], stage_time["backward"] + extra
    busy = m * (t_f + t_b)
    free = simulate(run.schedule, run.stages, m, t_f, t_b).makespan if run.stages > 1 else busy
    return {
        "compute": busy - m * (tp_comm + extra),
        "recompute": m * extra,
        "tp_comm": m * tp_comm,
        "pp_comm": max(0.0, run.makespan - free) if run.stages > 1 else 0.0,  # else rounding noise
        "pp_bubble": max(0.0, free - busy) if run.stages > 1 else 0.0,
        "dp_comm": dp,
    }
