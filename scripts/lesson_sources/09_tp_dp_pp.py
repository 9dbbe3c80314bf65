# %% [markdown]
# # Lesson 9: Tensor, data and pipeline parallelism compared
#
# There are three ways to spread one model's training over p devices:
#
# - **tensor parallelism (TP)** splits every weight matrix; the devices talk inside every layer;
# - **data parallelism (DP)** gives every device a whole copy of the model and a different slice of the
#   batch; the devices talk once per step, to add up their gradients;
# - **pipeline parallelism (PP)** gives each device a block of consecutive layers (a stage); activations
#   flow from stage to stage, and the stages wait for each other at the start and end of a step.
#
# Each pays in a different currency: bytes, memory, or idle time.  This lesson counts all three on one
# toy model, states the rules, then compares them on GPT-3 13B with `tpsim.plan`: the simulator counts the
# bytes (TP's layers, DP's all-reduce, PP's sends), and the iteration model prices the time and the memory,
# naming what it assumes.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from tpsim import presets
from tpsim.nn.config import PRESETS
from tpsim.nodes import NODES
from tpsim.plan import Layout, analyse_layout, bubble_fraction, enumerate_layouts, simulate
from tpsim.plan.assumptions import describe, sources
from tpsim.plan.cluster import from_node
from tpsim.plan.iteration import iteration
from tpsim.report import fmt_bytes, fmt_time

# %% [markdown]
# ## 1. A toy on four devices
#
# The toy: 4 layers, h = 32, 4 heads, a vocabulary of 97, sequences of s = 16 tokens in micro-batches of
# b = 2, float32.  The global batch is 8 sequences, on 4 devices behind one switch.  Three layouts:
# TP = 4, DP = 4, PP = 4.

# %%
toy = PRESETS["tiny"].with_(num_layers=4, name="toy")
switch = presets.switch(4)
layouts = {"TP4": Layout(tp=4), "DP4": Layout(tp=1, dp=4), "PP4": Layout(tp=1, pp=4)}
toy_runs = {name: analyse_layout(toy, lay, topology=switch, global_batch=8) for name, lay in layouts.items()}
print(f"{'':5s} {'params/device':>13} {'micro-batches':>13} {'TP bytes':>10} {'DP bytes':>10} "
      f"{'PP bytes':>10}")
for name, r in toy_runs.items():
    tr = r["traffic_per_device"]
    print(f"{name:5s} {r['parameters_per_device']:>13,} {r['microbatches']:>13} {tr['tp']:>10,} "
          f"{tr['dp']:>10,} {tr['pp']:>10,}")

# %% [markdown]
# PP's count is the heaviest stage's, the one that also holds the embedding (tied to the output layer, the
# vocabulary padded to 128).  Each traffic column can be worked out by hand, and the cell below checks the
# simulator against the hand count:
#
# - **DP**: each device all-reduces its whole gradient, P parameters × 4 bytes, with a ring:
#   `2 (d-1)/d · 4P` bytes sent per device.
# - **PP**: per micro-batch, each stage boundary carries one activation `s·b·h` forward and its gradient
#   backward.  A middle stage sends one of each: `2 · s·b·h · 4` bytes per micro-batch.
# - **TP**: per micro-batch and layer, two all-reduces of `s·b·h` forward and two backward (lesson 5), each
#   `2 (t-1)/t · s·b·h · 4` bytes on a ring; plus the embedding's all-reduce, the output layer's backward
#   all-reduce, and the loss's three small ones.

# %%
s, b, h, L, B = toy.seq_len, toy.micro_batch, toy.hidden, toy.num_layers, 4
dp, pp, tp = toy_runs["DP4"], toy_runs["PP4"], toy_runs["TP4"]
P = dp["parameters_per_device"]
assert dp["traffic_per_device"]["dp"] == 2 * 3 / 4 * P * B
assert pp["traffic_per_device"]["pp"] == pp["microbatches"] * 2 * s * b * h * B
per_layer = 4 * 2 * 3 / 4 * s * b * h * B  # four all-reduces per layer, forward + backward
layers_part = tp["microbatches"] * L * per_layer
display(Markdown(
    f"DP: 2 · 3/4 · {P:,} · 4 B = **{dp['traffic_per_device']['dp']:,} B**.  "
    f"PP: {pp['microbatches']} micro-batches · 2 · {s}·{b}·{h} · 4 B = "
    f"**{pp['traffic_per_device']['pp']:,} B**.  "
    f"TP: the layers' all-reduces alone are {tp['microbatches']} · {L} · 4 · 2 · 3/4 · {s}·{b}·{h} · 4 B = "
    f"{layers_part:,.0f} B of the **{tp['traffic_per_device']['tp']:,} B** measured; the rest is the "
    f"embedding, the output layer and the loss."
))

# %% [markdown]
# ## 2. The rules
#
# For a model of P parameters and L layers, a micro-batch activation of `A = s·b·h` values, B bytes per
# value, m micro-batches per step, and degree t, d or p:
#
# | | splits | bytes sent per device per step (ring) | memory per device | idles |
# |---|---|---|---|---|
# | TP | every weight matrix | `m · L · 8 (t-1)/t · A · B` (+ embedding, loss) | weights, grads and optimizer / t; activations partly / t (all / t with SP) | no, but its collectives sit on the critical path |
# | DP | the batch | `2 (d-1)/d · P · B` (the gradients) | everything replicated (ZeRO shards it) | no; the all-reduce can overlap the backward |
# | PP | the layers | `m · 2 · A · B` (a middle stage) | weights etc. / p; activations of up to p micro-batches in flight (1F1B) | the bubble: `(p-1)/(m+p-1)` of the step |
#
# TP moves the most bytes, **per micro-batch and per layer**, which is why it needs NVLink (lesson 8).  DP
# moves the gradients once per step, but only if the whole model fits on one device.  PP moves the least, and
# pays in idle time.

# %% [markdown]
# ## 3. The pipeline bubble, from the schedule
#
# `tpsim.plan.simulate` runs a pipeline schedule op by op: stage i's forward of micro-batch j waits for stage
# i-1's, the backward runs the other way.  With 1F1B (one forward, one backward, Megatron's default), 4 stages
# and 8 micro-batches, a backward twice as long as a forward, and free sends:

# %%
run = simulate("1f1b", stages=4, microbatches=8, t_fwd=1.0, t_bwd=2.0)
fig, ax = plt.subplots(figsize=(9, 2.6))
for stage, kind, j, start, end in run.events:
    ax.broken_barh([(start, end - start)], (stage - 0.4, 0.8), color="#4c72b0" if kind == "F" else "#dd8452")
    ax.text((start + end) / 2, stage, f"{kind}{j}", ha="center", va="center", fontsize=7, color="white")
ax.set_yticks(range(4), [f"stage {i}" for i in range(4)])
ax.invert_yaxis()
ax.set_xlabel("time (units of one forward)")
ax.set_title(f"1F1B, p = 4, m = 8: makespan {run.makespan:g}, bubble {run.bubble:.1%} "
             f"(formula {bubble_fraction(4, 8):.1%})");

# %% [markdown]
# The white gaps are the bubble: stage 3 waits for the first forward to reach it, stage 0 waits for the last
# backward to come back.  More micro-batches per step shrink it:

# %%
print(f"{'m':>3} {'simulated':>10} {'(p-1)/(m+p-1)':>14}")
for m in (1, 4, 8, 16, 32, 64):
    r = simulate("1f1b", 4, m, 1.0, 2.0)
    print(f"{m:>3} {r.bubble:>10.3f} {bubble_fraction(4, m):>14.3f}")

# %% [markdown]
# ## 4. One model in numbers: GPT-3 13B on one node of 8 H100s
#
# GPT-3 13B (40 layers, h = 5120, 40 heads, s = 2048, micro-batches of 1), a global batch of 64 sequences,
# bfloat16 weights and gradients and Adam's fp32 state (16 bytes per parameter, no ZeRO), on one DGX H100.
# Two tools, each for what it does best:
#
# - the bytes each device sends come from `analyse_layout`, which runs the stage's layers with TP (every
#   collective of one micro-batch), the PP sends and the DP all-reduce through the simulator;
# - the time and the memory come from `tpsim.plan.iteration`, the closed-form model of one training
#   iteration: every GEMM and memory-bound kernel priced at the datasheet peak (`peak`) or with the H100's
#   measured GEMM efficiency (`realistic`, `tpsim.efficiency`), TP's collectives on the critical path, the
#   pipeline schedule run with those times, the DP all-reduce and the optimizer step; memory from
#   `tpsim.plan.memory_train`.
#
# Both modes are printed side by side, and the lines under each table name every assumption.

# %%
cfg = PRESETS["gpt3-13b"]
node = presets.nvlink_node(8)
dgx_h100 = from_node(NODES["dgx-h100"])
RUN = dict(global_batch=64, micro_batch=1, recompute="none", kernels="fused")
cases = {
    "TP8": Layout(tp=8),
    "TP8 + SP": Layout(tp=8, sp=True),
    "DP8": Layout(tp=1, dp=8),
    "PP8": Layout(tp=1, pp=8),
    "TP2 DP2 PP2": Layout(tp=2, dp=2, pp=2),
}
traffic = {name: analyse_layout(cfg, lay, topology=node, global_batch=64)["traffic_per_device"]
           for name, lay in cases.items()}


def priced(layout, cluster, **options):
    """{mode: iteration result} of `layout`, peak and realistic, with RUN's settings unless overridden."""
    return {mode: iteration(cfg, layout, cluster=cluster, mode=mode, **{**RUN, **options})
            for mode in ("peak", "realistic")}


rows = {name: priced(lay, dgx_h100) for name, lay in cases.items()}
print(f"{'':12s} {'peak':>8} {'realistic':>9} {'bubble':>7} {'TP bytes':>10} {'DP bytes':>10} "
      f"{'PP bytes':>10} "
      f"{'MFU':>6}")
for name, r in rows.items():
    real, tr = r["realistic"], traffic[name]
    bubble = real["time"]["pp_bubble"] / real["time"]["iteration"]
    print(f"{name:12s} {fmt_time(r['peak']['time']['iteration']):>8} "
          f"{fmt_time(real['time']['iteration']):>9} "
          f"{bubble:>7.1%} {fmt_bytes(tr['tp']):>10} {fmt_bytes(tr['dp']):>10} {fmt_bytes(tr['pp']):>10} "
          f"{real['mfu']:>6.1%}")
print("iteration time at datasheet peak and at realistic efficiency; bubble and MFU: realistic; "
      "bytes: simulated")
print("assumptions:", describe(rows["TP8"]["realistic"], dgx_h100))
for line in sources("h100", dgx_h100):
    print(" ", line)

# %% [markdown]
# Whether a layout **fits** is counted the way training fills a GPU: the weights, their gradients,
# mixed-precision Adam's fp32 master copy and its two moments (the optimizer state, 12 B per parameter),
# and the activations the heaviest stage holds at once, against the H100's memory:

# %%
print(f"{'':12s} {'weights':>10} {'grads':>10} {'optimizer':>10} {'activations':>12} {'total':>11} "
      f"{'of':>10} "
      f"{'fits':>5}")
for name, r in rows.items():
    mem = r["realistic"]["memory"]
    print(f"{name:12s} {fmt_bytes(mem['weights']):>10} {fmt_bytes(mem['grads']):>10} "
          f"{fmt_bytes(mem['optimizer']):>10} {fmt_bytes(mem['activations']):>12} "
          f"{fmt_bytes(mem['total']):>11} "
          f"{fmt_bytes(mem['capacity']):>10} {mem['fits']!s:>5}")
print("memory: bf16 weights 2 B + grads 2 B + fp32 master, m, v 12 B per parameter, ZeRO-1 off; "
      "recompute none; micro-batch 1; 1F1B")

# %%
dp8, tp8, pp8 = (rows[k]["realistic"] for k in ("DP8", "TP8", "PP8"))
m_dp8 = dp8["memory"]
per_param = (m_dp8["weights"] + m_dp8["grads"] + m_dp8["optimizer"]) / m_dp8["parameters"]
display(Markdown(
    f"- **DP8 does not fit**: every GPU holds all {m_dp8['parameters']:,.0f} parameters at "
    f"{per_param:.0f} bytes "
    f"each ({fmt_bytes(m_dp8['optimizer'])} of it optimizer state) plus activations, "
    f"{fmt_bytes(m_dp8['total'])} against {fmt_bytes(m_dp8['capacity'])}.\n"
    f"- **TP8 moves the most bytes**: {fmt_bytes(traffic['TP8']['tp'])} per GPU per step, "
    f"{traffic['TP8']['tp'] / traffic['PP8']['pp']:.0f}× PP8's {fmt_bytes(traffic['PP8']['pp'])}; each "
    f"micro-batch waits for {fmt_time(tp8['time']['tp_comm'] / tp8['microbatches'])} of collectives "
    f"({tp8['time']['tp_comm'] / tp8['time']['iteration']:.0%} of the realistic iteration).\n"
    f"- **PP8 idles**: {pp8['time']['pp_bubble'] / pp8['time']['iteration']:.1%} of its realistic "
    f"iteration is "
    f"bubble with m = {pp8['microbatches']} micro-batches, and its first stage holds "
    f"{pp8['memory']['microbatches_held']:g} micro-batches of activations at once."
))
assert not m_dp8["fits"] and rows["TP8"]["realistic"]["memory"]["fits"]

# %% [markdown]
# `tpsim.plan.enumerate_layouts` lists every layout whose degrees divide the model and the node; ranked
# below by realistic iteration time, the layouts that fit first.  The peak column and its rank show how much
# the ranking depends on the efficiency model: the peak mode prices every GEMM at the datasheet's FLOP/s,
# whatever its shape, while the realistic mode lets a GEMM's shape decide how close to it it gets.


# %%
def ranked(devices, topology, cluster):
    layouts, skipped = enumerate_layouts(cfg, devices, topology, global_batch=64)
    out = [(str(lay), priced(lay, cluster)) for lay in layouts]
    peak_order = sorted(out, key=lambda x: (not x[1]["peak"]["memory"]["fits"],
                                            x[1]["peak"]["time"]["iteration"]))
    peak_rank = {name: i for i, (name, _) in enumerate(peak_order, 1)}
    out.sort(key=lambda x: (not x[1]["realistic"]["memory"]["fits"], x[1]["realistic"]["time"]["iteration"]))
    return out, peak_rank, skipped


ranked8, peak_rank8, skipped8 = ranked(8, node, dgx_h100)
print(f"{'':22s} {'realistic':>9} {'tokens/s':>9} {'MFU':>6} {'peak':>8} {'peak rank':>9} {'fits':>5}")
for i, (name, r) in enumerate(ranked8[:6], 1):
    real = r["realistic"]
    print(f"{i:>2}. {name:18s} {fmt_time(real['time']['iteration']):>9} {real['tokens_per_s']:>9,.0f} "
          f"{real['mfu']:>6.1%} {fmt_time(r['peak']['time']['iteration']):>8} {peak_rank8[name]:>9} "
          f"{real['memory']['fits']!s:>5}")
print("assumptions:", describe(ranked8[0][1]["realistic"], dgx_h100))
stretch = {name: r["realistic"]["time"]["iteration"] / r["peak"]["time"]["iteration"] for name, r in ranked8}
moved = [name for i, (name, _) in enumerate(ranked8, 1) if peak_rank8[name] != i]
lo, hi = min(stretch, key=stretch.get), max(stretch, key=stretch.get)
print(f"realistic / peak iteration time: from {stretch[lo]:.2f}x ({lo}) to {stretch[hi]:.2f}x ({hi}); "
      f"{len(moved)} of {len(ranked8)} layouts rank differently at peak")
print(f"left out: {len(skipped8)} layouts, e.g. {skipped8[0][0]}: {skipped8[0][1]}" if skipped8
      else "left out: none")

# %% [markdown]
# ## 5. Two nodes
#
# On 16 GPUs over two DGX H100s (the cluster model's rings share all 8 NICs of a node, lesson 8), the
# degrees that `enumerate_layouts` allows keep TP inside a node and spread DP and PP across:

# %%
two_nodes = presets.multi_node(2, 8)
ranked16, peak_rank16, _ = ranked(16, two_nodes, dgx_h100)
print(f"{'':22s} {'realistic':>9} {'peak':>8} {'peak rank':>9} {'DP comm':>8} {'PP comm':>8} {'bubble':>8}")
for i, (name, r) in enumerate(ranked16[:5], 1):
    tm = r["realistic"]["time"]
    print(f"{i:>2}. {name:18s} {fmt_time(tm['iteration']):>9} {fmt_time(r['peak']['time']['iteration']):>8} "
          f"{peak_rank16[name]:>9} {fmt_time(tm['dp_comm']):>8} {fmt_time(tm['pp_comm']):>8} "
          f"{fmt_time(tm['pp_bubble']):>8}")
print("assumptions:", describe(ranked16[0][1]["realistic"], dgx_h100))

# %% [markdown]
# Every figure above rests on the same settings: no overlap, no recomputation, no ZeRO.  Changing them changes
# the times, the memory and the ranking, which is why each line names them.  The fastest layout and TP8 × DP2,
# each as above and with one setting changed:

# %%
best_name = ranked16[0][0]
best = next(lay for lay in enumerate_layouts(cfg, 16, two_nodes, global_batch=64)[0] if str(lay) == best_name)
variants = {"as above": {}, "DP overlap on": {"dp_overlap": True}, "ZeRO-1": {"zero1": True},
            "recompute selective": {"recompute": "selective"}, "recompute full": {"recompute": "full"}}
print(f"{'':18s} {'variant':20s} {'realistic':>9} {'peak':>8} {'DP comm':>8} {'memory':>10} {'fits':>5}")
for lay in (best, Layout(tp=8, dp=2)):
    for label, options in variants.items():
        r = priced(lay, dgx_h100, **options)
        real = r["realistic"]
        print(f"{lay!s:18s} {label:20s} {fmt_time(real['time']['iteration']):>9} "
              f"{fmt_time(r['peak']['time']['iteration']):>8} {fmt_time(real['time']['dp_comm']):>8} "
              f"{fmt_bytes(real['memory']['total']):>10} {real['memory']['fits']!s:>5}")
    print(f"  assumptions of 'as above': {describe(priced(lay, dgx_h100)['realistic'], dgx_h100)}")

# %% [markdown]
# What the model still leaves out: TP's collectives never overlap compute (Megatron overlaps some of them),
# one micro-batch size, and the efficiency of a GEMM is a fitted curve, not a measurement of this model.  The
# ranking is a starting point to measure, not a verdict.

# %% [markdown]
# ## Summary
#
# - **TP** splits the matrices: memory / t, but collectives of whole activations inside every layer, on the
#   critical path: it needs the fastest links, so it stays inside a node.
# - **DP** splits the batch: one gradient all-reduce per step, `2 (d-1)/d · P · B` bytes, but every device
#   holds the whole model (16 bytes per parameter with Adam), unless ZeRO shards it.
# - **PP** splits the layers: the fewest bytes (one activation per micro-batch per boundary), but a bubble of
#   `(p-1)/(m+p-1)` and up to p micro-batches of activations on the first stage.
# - Real runs combine them: TP inside a node, PP and DP across nodes.
#
# ## Exercises

# %%
from tpsim.exercises import lesson09 as ex

ex.dp_bytes

# %%
ex.dp_bytes()  # your prediction here, then run: ex.dp_bytes.run()

# %%
ex.bubble

# %%
ex.bubble()

# %%
ex.does_not_fit

# %%
ex.does_not_fit()
