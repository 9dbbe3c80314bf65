# %% [markdown]
# # Lesson 5: The Megatron MLP and attention
#
# Lesson 2's column-parallel layer leaves its output split by columns (`S(-1)`) with no communication.
# Lesson 3's row-parallel layer **takes** its input split by columns and ends with one all-reduce.
# Megatron-LM puts them back to back:
#
# $$ \text{MLP}(x) = \underbrace{\text{GeLU}(x A)}_{\text{column-parallel}}\; B_{\text{row-parallel}} ,
#    \qquad A = [A_1, \dots, A_t], \quad B = \begin{bmatrix} B_1 \\ \vdots \\ B_t \end{bmatrix} . $$
#
# Device $i$ computes $\text{GeLU}(x A_i) B_i$ and the all-reduce sums the $t$ terms. The forward pass
# of the whole MLP needs **one** all-reduce; so does its backward pass. Attention works the same way
# with whole heads per device. This lesson runs both, forward and backward, and reads the
# communication off the trace.

# %%
import numpy as np
from IPython.display import display

import tpsim
from tpsim import Replicate, viz
from tpsim.nn import (
    ParallelAttention,
    ParallelMLP,
    TransformerBlock,
    comm_table,
    format_comm_table,
    format_efficiency,
    regions,
    tp_efficiency,
)
from tpsim.nn.ops import gelu
from tpsim.report import fmt_bytes, fmt_time

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. Why column first, then row
#
# GeLU is applied element by element. After a column-parallel layer each device holds whole
# elements of $xA$ (its own columns), so it can apply GeLU locally. After a row-parallel layer it
# would hold only **terms** of each element, and GeLU of a sum is not the sum of GeLUs:

# %%
a, b = np.float64(1.0), np.float64(1.0)
print("GeLU(a + b) =", gelu(np.array(a + b))[0])
print("GeLU(a) + GeLU(b) =", gelu(np.array(a))[0] + gelu(np.array(b))[0])

# %% [markdown]
# So the order is forced: column-parallel (no communication, outputs whole elements), the
# nonlinearity locally, then row-parallel (one all-reduce to sum the terms). Splitting the other way
# round would need an all-reduce **before** the GeLU as well.
#
# ## 2. A small MLP on 4 devices
#
# Hidden size 8, FFN size 32, 4 tokens, small-integer weights. `fc1` is column-parallel (its weight
# `S(0)`), `fc2` row-parallel (its weight `S(1)`):

# %%
mesh = tpsim.Mesh(4, device="h100")  # a device model, so the timeline has durations
mlp = ParallelMLP(mesh, 8, 32, init="exact")
for name, p in mlp.named_parameters():
    print(f"{name:22s} {p}")
x = tpsim.distribute(np.arange(32, dtype=np.float32).reshape(4, 1, 8) % 3 - 1, mesh, [Replicate()])
y = mlp(x)
print("y:", y)
print(format_comm_table(comm_table(mlp), "forward"))

# %% [markdown]
# One all-reduce, issued by `fc2`. Against the unsharded MLP in plain NumPy (GeLU makes the numbers
# inexact, so we compare with a tolerance):

# %%
P = {n: p.full() for n, p in mlp.named_parameters()}
h = x.full() @ P["ParallelMLP.fc1.weight"].T + P["ParallelMLP.fc1.bias"]
plain = gelu(h)[0] @ P["ParallelMLP.fc2.weight"].T + P["ParallelMLP.fc2.bias"]
print("max |tpsim - plain NumPy| =", np.abs(y.full() - plain).max())
np.testing.assert_allclose(y.full(), plain, rtol=1e-5, atol=1e-5)

# %% [markdown]
# ## 3. The f and g regions
#
# Megatron's paper names two conjugate operators at the edges of the parallel region:
#
# | region | forward | backward | where |
# |---|---|---|---|
# | $f$ = `copy_to` | identity (`R → R`) | all-reduce (`P → R`) | before the column-parallel layer |
# | $g$ = `reduce_from` | all-reduce (`P → R`) | identity (`R → R`) | after the row-parallel layer |
#
# Why $f$'s backward is an all-reduce: every device used the whole $x$, so each holds a term of
# $dx = \sum_i dh_i A_i^\top$. Why $g$'s backward is the identity: the gradient of a replicated output
# is already replicated. In tpsim each is a pair of functions; calling them shows which moves bytes:

# %%
probe = tpsim.Mesh(4)
for fn, arg in (
    (regions.copy_to, tpsim.distribute(np.ones(4, np.float32), probe, [Replicate()])),
    (regions.copy_to_backward, tpsim.distribute(np.ones(4, np.float32), probe, [tpsim.Partial()])),
    (regions.reduce_from, tpsim.distribute(np.ones(4, np.float32), probe, [tpsim.Partial()])),
    (regions.reduce_from_backward, tpsim.distribute(np.ones(4, np.float32), probe, [Replicate()])),
):
    before = len(probe.trace.collectives)
    out = fn(arg, 0)
    ran = [c.collective for c in probe.trace.collectives[before:]]
    print(f"{fn.__name__:22s} {arg.placements[0]!r} -> {out.placements[0]!r}   collectives: {ran or 'none'}")

# %% [markdown]
# ## 4. The backward pass
#
# Backward runs the layers in reverse: `fc2` (row-parallel: $g$'s backward, no bytes), GeLU's
# derivative locally, `fc1` (column-parallel: its input gradient is `Partial`, and $f$'s backward
# all-reduces it). The weight gradients stay sharded like their weights: no communication for them.

# %%
dy = tpsim.distribute(np.ones((4, 1, 8), np.float32), mesh, [Replicate()])
dx = mlp.backprop(dy)
print("dx:", dx)
for name, g in mlp.named_grads():
    print(f"grad {name:22s} {g.placements}")
print(format_comm_table(comm_table(mlp), "forward and backward"))

# %% [markdown]
# Two all-reduces in all: forward from `fc2` ($g$), backward from `fc1` ($f$). The timeline shows
# each device's compute and the collectives between them (a device model, the H100's roofline,
# gives the ops durations; tiny here):

# %%
viz.timeline(mesh);

# %% [markdown]
# ## 5. Attention: whole heads per device
#
# Self-attention has the same shape. The Q, K, V projection is column-parallel, split so that each
# device gets **whole heads** ($n/t$ of the $n$ heads); each head's attention
# $\text{softmax}(q k^\top / \sqrt{d})\, v$ only needs its own q, k, v, so it runs locally; the output
# projection is row-parallel and ends with the all-reduce. Hidden 16, 4 heads, 4 devices, one head each:

# %%
amesh = tpsim.Mesh(4)
attn = ParallelAttention(amesh, 16, 4)
xa = tpsim.distribute(np.random.default_rng(0).standard_normal((6, 1, 16)).astype(np.float32), amesh,
                      [Replicate()])
ya = attn(xa)
attn.backprop(tpsim.distribute(np.ones((6, 1, 16), np.float32), amesh, [Replicate()]))
print("query_key_value weight:", attn.query_key_value.params["weight"])
print(f"heads per device: {attn.num_heads // amesh.size} of {attn.num_heads}")
print(format_comm_table(comm_table(attn), "attention, forward and backward"))

# %% [markdown]
# The same model on one device (same seed, so the same weights) gives the same output up to float
# rounding:

# %%
one = tpsim.Mesh(1)
ya1 = ParallelAttention(one, 16, 4)(tpsim.distribute(xa.full(), one, [Replicate()]))
print("max |TP=4 - TP=1| =", np.abs(ya.full() - ya1.full()).max())
np.testing.assert_allclose(ya.full(), ya1.full(), rtol=1e-5, atol=1e-6)

# %% [markdown]
# ## 6. The general rule, and the cost
#
# A transformer layer is attention then MLP, so without sequence parallelism it runs **2 all-reduces
# forward and 2 backward**, each of the layer's activations: $s \cdot b \cdot h$ numbers of $B$ bytes
# ($s$ tokens, micro-batch $b$, hidden $h$). With a ring, per layer and per device:
#
# $$ \text{bytes sent} = 4 \cdot 2\,\frac{t-1}{t}\; s\,b\,h\,B, \qquad
#    \text{time} = 4 \cdot 2(t-1)\left(\alpha + \frac{s\,b\,h\,B}{t\,\beta}\right). $$
#
# The communication does not shrink as $t$ grows, while each device's compute falls as $1/t$: that
# is why tensor parallelism stays inside one fast node. One GPT-3 175B layer, shape-only, on 8 H100s
# of an NVLink node:

# %%
node = tpsim.Mesh(8, topology=tpsim.presets.nvlink_node(8), device="h100", memory=1 << 62)
layer = TransformerBlock(node, 12288, 96, init=None, dtype="bfloat16")
xs = tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), node, [Replicate()])
layer(xs)
layer.backprop(tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), node, [Replicate()]))
print(format_comm_table(comm_table(layer), "one GPT-3 layer, TP = 8 (times at datasheet peak)"))
t, S = node.size, 2048 * 12288 * 2
alpha, beta = tpsim.presets.NVLINK_ALPHA, tpsim.presets.NVLINK["h100"][0]
print(f"formula: bytes {fmt_bytes(4 * 2 * (t - 1) / t * S)}, "
      f"time {fmt_time(4 * 2 * (t - 1) * (alpha + S / (t * beta)))} (α-β at datasheet NVLink bandwidth)")
viz.timeline(node);

# %%
def build(mesh):
    blk = TransformerBlock(mesh, 12288, 96, init=None, dtype="bfloat16")
    act = tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), mesh, [Replicate()])
    grad = tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), mesh, [Replicate()])
    return blk, act, grad


print(format_efficiency(tp_efficiency(build, [2, 4, 8], device="h100", topology="nvlink"),
                        "times at datasheet peak FLOP/s and NVLink bandwidth"))

# %% [markdown]
# This model does not overlap communication with compute, so these efficiencies are a lower bound:
# Megatron overlaps the backward all-reduce of a column-parallel layer with its weight-gradient GEMM.
#
# ## Summary
#
# - Megatron's MLP: column-parallel `fc1` (no communication), GeLU locally on whole elements,
#   row-parallel `fc2` (one all-reduce). Attention: whole heads per device, the same pattern.
# - The regions: $f$ = `copy_to` (identity forward, all-reduce backward) and $g$ = `reduce_from`
#   (all-reduce forward, identity backward). One all-reduce per block forward, one backward.
# - Per transformer layer: 4 all-reduces of $sbh$ numbers, $8\frac{t-1}{t}\,sbhB$ bytes per device,
#   independent of how small each device's share of the compute gets.
#
# ## Exercises

# %%
from tpsim.exercises import lesson05 as ex

display(ex.mlp_allreduces)
ex.mlp_allreduces()  # your prediction here, then run: ex.mlp_allreduces.run()

# %%
display(ex.backward_region)
ex.backward_region()  # "copy_to" (f) or "reduce_from" (g)

# %%
display(ex.mlp_forward_bytes)
ex.mlp_forward_bytes()

# %%
display(ex.layer_comm_time)
ex.layer_comm_time()
