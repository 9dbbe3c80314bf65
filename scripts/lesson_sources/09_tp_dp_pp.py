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
# toy model, states the rules, then compares them on GPT-3 13B with `tpsim.plan`, which runs every part
# (TP's layers, DP's all-reduce, PP's sends, the pipeline schedule) through the simulator.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from tpsim import presets
from tpsim.nn.config import PRESETS
from tpsim.plan import Layout, analyse_layout, bubble_fraction, compare, simulate
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
# bfloat16 weights and gradients and Adam's fp32 state (16 bytes per parameter, no ZeRO), on one NVLink node.
# For each layout `analyse_layout` simulates the stage's layers with TP (every collective and op of one
# micro-batch), the pipeline schedule, the PP sends and the DP all-reduce.  The time model does not overlap
# communication with compute, so the times favour no one.

# %%
node = presets.nvlink_node(8)
cases = {
    "TP8": Layout(tp=8),
    "TP8 + SP": Layout(tp=8, sp=True),
    "DP8": Layout(tp=1, dp=8),
    "PP8": Layout(tp=1, pp=8),
    "TP2 DP2 PP2": Layout(tp=2, dp=2, pp=2),
}
rows = {name: analyse_layout("gpt3-13b", lay, topology=node, global_batch=64) for name, lay in cases.items()}


def show(rows):
    print("step times: compute and links at datasheet peak, no overlap")
    print(f"{'':12s} {'step':>8} {'bubble':>7} {'TP bytes':>10} {'DP bytes':>10} {'PP bytes':>10} "
          f"{'memory':>10} {'fits':>5}")
    for name, r in rows.items():
        tr, mem = r["traffic_per_device"], r["memory_per_device"]
        bubble = max(0.0, r["time"]["bubble"])  # a float rounding can leave -0.0
        print(f"{name:12s} {fmt_time(r['time']['step']):>8} {bubble:>7.1%} {fmt_bytes(tr['tp']):>10} "
              f"{fmt_bytes(tr['dp']):>10} {fmt_bytes(tr['pp']):>10} {fmt_bytes(mem['total']):>10} "
              f"{mem['fits']!s:>5}")


show(rows)

# %%
dp8, tp8, pp8 = rows["DP8"], rows["TP8"], rows["PP8"]
display(Markdown(
    f"- **DP8 does not fit**: every GPU holds all {dp8['parameters_per_device']:,} parameters at "
    f"{dp8['memory_per_device']['bytes_per_parameter']:.0f} bytes each plus activations, "
    f"{fmt_bytes(dp8['memory_per_device']['total'])} against "
    f"{fmt_bytes(dp8['memory_per_device']['capacity'])}.\n"
    f"- **TP8 moves the most bytes**: {fmt_bytes(tp8['traffic_per_device']['tp'])} per GPU per step, "
    f"{tp8['traffic_per_device']['tp'] / pp8['traffic_per_device']['pp']:.0f}× PP8's "
    f"{fmt_bytes(pp8['traffic_per_device']['pp'])}; each micro-batch waits for "
    f"{fmt_time(tp8['time']['microbatch_tp_comm'])} of collectives.\n"
    f"- **PP8 idles**: {pp8['time']['bubble']:.1%} of its step is bubble with m = {pp8['microbatches']} "
    f"micro-batches, and its first stage holds {pp8['memory_per_device']['microbatches_held']} "
    f"micro-batches of activations at once."
))

# %% [markdown]
# `tpsim.plan.compare` tries every layout whose degrees divide the model and the node, and ranks the ones
# that fit by step time (this is what the `tpsim compare` command prints):

# %%
ranked = compare("gpt3-13b", 8, node, global_batch=64)
print("step times at datasheet peak, no overlap")
for r in ranked["rows"][:6]:
    print(f"{r['rank']:>2}. {r['layout']:18s} {fmt_time(r['time']['step']):>8}  "
          f"{r['time']['tokens_per_s']:>9,.0f} tokens/s  fits: {r['memory_per_device']['fits']}")
print(f"left out: {len(ranked['skipped'])} layouts, e.g. {ranked['skipped'][0]['layout']}: "
      f"{ranked['skipped'][0]['reason']}" if ranked["skipped"] else "left out: none")

# %% [markdown]
# ## 5. Two nodes
#
# On 16 GPUs over two nodes, the planner keeps TP inside a node (lesson 8) and spreads DP and PP across:

# %%
two_nodes = presets.multi_node(2, 8)
ranked16 = compare("gpt3-13b", 16, two_nodes, global_batch=64)
print("step times at datasheet peak, no overlap")
for r in ranked16["rows"][:5]:
    tr = r["traffic_per_device"]
    print(f"{r['rank']:>2}. {r['layout']:18s} {fmt_time(r['time']['step']):>8}  "
          f"TP {fmt_bytes(tr['tp']):>10}  DP {fmt_bytes(tr['dp']):>10}  PP {fmt_bytes(tr['pp']):>10}")
across = analyse_layout("gpt3-13b", Layout(tp=8, dp=2), topology=two_nodes, global_batch=64)
best = ranked16["rows"][0]
display(Markdown(
    f"The fastest layout, {best['layout']}, takes {fmt_time(best['time']['step'])} per step; "
    f"TP8 × DP2 takes {fmt_time(across['time']['step'])}.  Remember the model's limits: no overlap of "
    "communication with compute (Megatron overlaps DP's all-reduce with the backward pass, and some of "
    "TP's), "
    "one micro-batch size, and no activation recomputation.  The ranking is a starting point to measure, "
    "not a verdict."
))

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
