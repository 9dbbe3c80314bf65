# %% [markdown]
# # Lesson 2: Column-parallel linear
#
# A linear layer computes $y = x A$. The Megatron-LM paper splits the matrix $A$ **by columns**,
# $A = [A_1, A_2, \dots, A_t]$, and gives device $i$ the block $A_i$. Then device $i$ computes
#
# $$ y_i = x A_i , $$
#
# which is exactly the $i$-th block of columns of $y$: $y = [y_1, \dots, y_t]$. No device needs
# anything from another device to compute its part. If the whole $y$ is needed afterwards, the pieces
# are joined by an **all-gather**.
#
# A note on layout: PyTorch (and tpsim) store the weight of `nn.Linear` as $W = A^\top$, with shape
# (out, in), and compute $y = x W^\top$. The columns of $A$ are the **rows** of $W$. So
# "column-parallel" means: `W` is `Shard(0)` (split by output features), `x` is `Replicate()`, and
# `y` comes out `Shard(-1)`, split along its last dim.

# %%
import numpy as np
from IPython.display import HTML, display

import tpsim
from tpsim import Replicate, viz
from tpsim.nn import ColumnParallelLinear, comm_table, format_comm_table
from tpsim.report import fmt_bytes, fmt_time

# %% [markdown]
# ## 1. An 8 × 8 weight on 4 devices
#
# Small integers stored as floats (`init="exact"` draws weights from -2..2), so every sum is exact
# and results can be compared bit for bit. `x` has 4 rows (tokens) of 8 features and is replicated:
# every device holds all of it.

# %%
mesh = tpsim.Mesh(4)
layer = ColumnParallelLinear(mesh, 8, 8, bias=False, init="exact")
W = layer.params["weight"]  # (out, in) = (8, 8), S(0)
x = tpsim.distribute(np.arange(32, dtype=np.float32).reshape(4, 8) % 5, mesh, [Replicate()])
print("W:", W)
print("x:", x)
viz.show_darray(W);

# %% [markdown]
# Device `d` holds rows `2d, 2d+1` of `W`: the weights of output features `2d` and `2d+1`.
# Now run the layer. Each device multiplies the whole `x` (4 × 8) by its piece of `W` transposed
# (8 × 2) and gets a 4 × 2 block of `y`.

# %%
y = layer(x)
print("y:", y)
for d in range(4):
    print(f"device {d} holds y[:, {2 * d}:{2 * d + 2}] =", y.local(d).tolist())
print("collectives run so far:", len(mesh.trace.collectives))
viz.show_darray(y);

# %% [markdown]
# No collective ran: the forward pass of a column-parallel layer needs no communication. And the
# pieces are right: joined, they equal the unsharded product, bit for bit.

# %%
reference = x.full() @ W.full().T  # the unsharded layer, plain NumPy
print("y == x W^T exactly:", np.array_equal(y.full(), reference))

# %% [markdown]
# ## 2. Joining the pieces: the all-gather
#
# When the next operation needs all of `y` on every device, the placement changes from `S(1)` to `R`:
# an **all-gather**. With the ring algorithm, the 4 devices stand in a circle; in each step every
# device passes one piece to its right-hand neighbour, and after $p - 1 = 3$ steps every device has
# every piece. The animation below runs the engine step by step on the four pieces (each flattened to
# 8 numbers); the colours say whose data each chunk holds.

# %%
pieces = [y.local(d).ravel() for d in range(4)]
anim = viz.animate_collective("all_gather", pieces, tpsim.Mesh(4), algorithm="ring", interval=1000)
HTML(viz.to_html(anim))

# %% [markdown]
# The layer does the same when asked to (`gather_output=True`), or any `DArray` can be redistributed.
# The trace records every transfer:

# %%
y_full = y.redistribute([Replicate()])  # S(1) -> R: an all-gather, run step by step
print("y replicated, equal to the reference:", np.array_equal(y_full.local(3), reference))
print(mesh.trace.summary())
viz.traffic_heatmap(mesh.trace);

# %% [markdown]
# Each device sent 3 pieces of 32 bytes and received 3: in the heatmap, each device sends only to its
# ring neighbour.
#
# ## 3. The general rule
#
# For $x$ of shape $(b, k)$ and $W$ of shape $(n, k)$ on $t$ devices, with $s$ bytes per number:
#
# | | per device |
# |---|---|
# | weight held | $n k s / t$ |
# | FLOPs of the forward GEMM | $2 b k n / t$ |
# | output piece | $b \cdot n/t$ numbers, placement `S(-1)` |
# | forward communication | none |
# | all-gather of $y$ (if needed), $S = b n s$ | sends $\frac{t-1}{t} S$ in $t - 1$ steps |
#
# In the α-β model each ring step costs $\alpha + \frac{S/t}{\beta}$ (latency α, bandwidth β per
# link), so the all-gather takes $(t-1)\left(\alpha + \frac{S}{t\beta}\right)$.
#
# The backward pass is the mirror image. The input gradient is $dx = dy\, W = \sum_i dy_i W_i$: each
# device can only compute its own term, so $dx$ is `Partial` and needs an **all-reduce**. Megatron
# names this the `copy_to` region (called $f$ in the paper): identity forward, all-reduce backward.

# %%
dy = tpsim.distribute(np.ones((4, 8), np.float32), mesh, [tpsim.Shard(1)])  # matches y's placement
mesh.trace.clear()
dx = layer.backprop(dy)
print("dx:", dx)
print(format_comm_table(comm_table(layer)))

# %% [markdown]
# ## 4. At full size: GPT-3's first MLP layer on 8 H100s
#
# GPT-3 175B's MLP starts with a linear from $h = 12288$ to $4h = 49152$ features; a micro-batch has
# 2048 tokens. Shape-only, on an 8 × H100 NVLink node (the preset names its sources: NVLink 4 at
# 450 GB/s per direction, an assumed 2 μs latency), with `gather_output=True` to see what the gather
# would cost next to the GEMM:

# %%
node = tpsim.Mesh(8, topology=tpsim.presets.nvlink_node(8), device="h100")
print(node.topology.source)
fc1 = ColumnParallelLinear(node, 12288, 4 * 12288, init=None, dtype="bfloat16", gather_output=True)
xs = tpsim.distribute(tpsim.meta((2048, 1, 12288), "bfloat16"), node, [Replicate()])
ys = fc1(xs)
gemm = next(op for op in node.trace.compute if op.name == "linear" and op.device == 0)
gather = node.trace.collectives[-1]
print(f"GEMM on device 0: {gemm.flops / 1e12:.2f} TFLOP, {fmt_time(gemm.end - gemm.start)} at datasheet peak")
print(f"all-gather of y ({fmt_bytes(gather.nbytes)}): {gather.num_steps} steps, {fmt_time(gather.time)} "
      "(α-β at datasheet bandwidth)")
print(f"the gather would cost {gather.time / (gemm.end - gemm.start):.0%} of the GEMM's time")

# %% [markdown]
# Gathering a $b \times 4h$ output after every column-parallel layer would be expensive, and it is
# not needed: the next layer of the MLP can work directly on the pieces. That is the row-parallel
# layer of lesson 3, and the two together (lesson 5) need only one collective in the forward pass.
#
# ## Summary
#
# - Column-parallel: split $A$ by columns (PyTorch's $W$ by rows, `Shard(0)`); $x$ replicated;
#   each device computes its own columns of $y$ (`Shard(-1)`) with no communication.
# - Joining $y$ is an all-gather, `S → R`: $\frac{t-1}{t} S$ bytes sent per device in $t - 1$ ring steps.
# - Backward, $dx$ is a sum over devices: an all-reduce, the backward of the `copy_to` ($f$) region.
#
# ## Exercises

# %%
from tpsim.exercises import lesson02 as ex

display(ex.output_shard_shape)
ex.output_shard_shape()  # e.g. ex.output_shard_shape((4, 8))

# %%
display(ex.allgather_bytes)
ex.allgather_bytes()

# %%
display(ex.allgather_time)
ex.allgather_time()  # seconds, or a string such as "300 us"

# %%
display(ex.chunks_after_step)
ex.chunks_after_step()  # your prediction here, then run: ex.chunks_after_step.run()
