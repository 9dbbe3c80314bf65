"""Lesson 9 exercises: TP, DP and PP in bytes, idle time and memory, measured with tpsim.plan.

    9.1 dp_bytes       bytes a GPU sends in DP's gradient all-reduce for GPT-3 1.3B on 8 GPUs
    9.2 bubble         the idle fraction of a 1F1B pipeline, run op by op
    9.3 does_not_fit   which of TP8, DP8, PP8 cannot hold GPT-3 13B on 8 H100s
"""

from __future__ import annotations

from tpsim import presets
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.hardware import device_spec
from tpsim.nn.config import PRESETS
from tpsim.plan import Layout, analyse_layout, simulate
from tpsim.plan.memory_train import training_memory

STAGES, MICROBATCHES = 4, 12
GLOBAL_BATCH = 64  # 9.3: sequences per step, micro-batches of 1
CHOICES = {"TP8": Layout(tp=8), "DP8": Layout(tp=1, dp=8), "PP8": Layout(tp=1, pp=8)}


def _dp_bytes() -> Measured:
    r = analyse_layout("gpt3-1.3b", Layout(tp=1, dp=8), topology=presets.nvlink_node(8), global_batch=64)
    params, sent = r["parameters_per_device"], r["traffic_per_device"]["dp"]
    return Measured(
        sent,
        f"Each GPU holds all {params:,} parameters, so its bfloat16 gradient is {2 * params:,} B; a ring "
        f"all-reduce over d = 8 sends 2 (d-1)/d of it: 2 x 7/8 x {2 * params:,} = {sent:,} B.",
        traps=((2 * params, "the gradient's size, not what a ring sends"),
               (2 * 2 * params, "twice the gradient: the ring sends 2 (d-1)/d of it, not 2")),
        trace="bytes sent per GPU per step: " + ", ".join(
            f"{k.upper()} {v:,.0f} B" for k, v in r["traffic_per_device"].items()),
    )


def _bubble() -> Measured:
    run = simulate("1f1b", STAGES, MICROBATCHES, 1.0, 2.0)
    return Measured(
        run.bubble,
        f"The schedule ran for {run.makespan:g} time units, of which each stage computed {run.busy:g}: "
        f"1 - {run.busy:g}/{run.makespan:g} = {run.bubble:.4g}, i.e. (p-1)/(m+p-1) = "
        f"{STAGES - 1}/{MICROBATCHES + STAGES - 1} (answers within 0.1% are accepted).",
        traps=(((STAGES - 1) / MICROBATCHES, "(p-1)/m: the bubble over the busy time, not over the step"),),
    )


def _does_not_fit() -> Measured:
    cfg, capacity = PRESETS["gpt3-13b"], device_spec("h100").memory
    mems = {k: training_memory(cfg, lay, 1, GLOBAL_BATCH // lay.dp, capacity) for k, lay in CHOICES.items()}
    (name,) = [k for k, mem in mems.items() if not mem["fits"]]
    mem = mems[name]
    parts = ", ".join(f"{k} {mem[k] / 2**30:.1f}" for k in ("weights", "grads", "optimizer", "activations"))
    others = ", ".join(f"{k} {m['total'] / 2**30:.1f} GiB" for k, m in mems.items() if k != name)
    return Measured(
        name,
        f"{name} needs {mem['total'] / 2**30:.1f} GiB per GPU ({parts} GiB: 16 B per parameter for bf16 "
        f"weights and grads and Adam's fp32 master copy, m and v, plus activations; tpsim.plan.memory_train) "
        f"against {capacity / 2**30:.0f} GiB; the others need {others}.",
    )


dp_bytes = Prediction(
    "9.1",
    "Predict, then run: "
    "GPT-3 1.3B is trained with pure data parallelism over 8 GPUs (bfloat16 gradients, a ring all-reduce, "
    "no ZeRO).  How many bytes does each GPU send in one step's gradient all-reduce?",
    measure=_dp_bytes,
    unit="bytes",
    hint=(
        "pure DP all-reduces every gradient once per step: bf16 gradients of the whole model, and a ring "
        "sends 2 (d-1)/d of them"
    ),
)
bubble = Exercise(
    "9.2",
    f"A 1F1B pipeline of p = {STAGES} stages runs m = {MICROBATCHES} micro-batches; a backward takes twice "
    "as long as a forward and sends are free.  What fraction of the step is each stage idle?",
    measure=_bubble,
    rel_tol=1e-3,
    hint=(
        "in 1F1B each stage waits p - 1 slots at the start and the end; compare that with the m slots of "
        "work"
    ),
)
does_not_fit = Exercise(
    "9.3",
    f"GPT-3 13B, global batch {GLOBAL_BATCH}, micro-batches of 1, on one node of 8 H100s (80 GiB each), "
    "with Adam (16 bytes per parameter).  "
    "Which layout does not fit in memory?",
    measure=_does_not_fit,
    kind="choice",
    choices=tuple(CHOICES),
    hint=(
        "with Adam in mixed precision every parameter a GPU holds costs 16 B: which layout leaves all "
        "parameters on every GPU?"
    ),
)
