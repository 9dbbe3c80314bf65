# %% [markdown]
# # Lesson 3: Row-parallel linear
#
# The other way to split $y = x A$ is **by rows** of $A$. Cut $A$ into $t$ blocks of rows and $x$
# into the matching blocks of columns:
#
# $$ A = \begin{bmatrix} A_1 \\ \vdots \\ A_t \end{bmatrix}, \qquad x = [x_1, \dots, x_t], \qquad
#    y = x A = \sum_{i=1}^{t} x_i A_i . $$
#
# Device $i$ computes $x_i A_i$: a matrix of the **full** output shape, but only one term of the sum.
# In DTensor's words the result is `Partial`: the true $y$ is the sum of what the devices hold. Turning
# `P` into `R` is an **all-reduce**. Megatron calls this the `reduce_from` region ($g$ in the paper):
# all-reduce forward, identity backward.
#
# In PyTorch's layout ($W = A^\top$, shape (out, in)) the rows of $A$ are the **columns** of $W$: a
# row-parallel layer has `W` as `Shard(1)` and takes `x` as `Shard(-1)`.

# %%
import numpy as np
from IPython.display import HTML, display

import tpsim
from tpsim import Partial, Replicate, Shard, viz
from tpsim.nn import RowParallelLinear
from tpsim.report import fmt_bytes, fmt_time, table

# %% [markdown]
# ## 1. An 8 × 8 weight on 4 devices
#
# The same small integers as in lesson 2. This time `x` arrives split by features: device `d` holds
# columns `2d, 2d+1` of `x`, and the matching **columns** `2d, 2d+1` of `W` (its input features
# `2d, 2d+1`).

# %%
mesh = tpsim.Mesh(4)
layer = RowParallelLinear(mesh, 8, 8, bias=False, init="exact")
W = layer.params["weight"]  # (out, in) = (8, 8), S(1)
x = tpsim.distribute(np.arange(32, dtype=np.float32).reshape(4, 8) % 5, mesh, [Shard(1)])
print("W:", W)
print("x:", x)
viz.show_darray(x);

# %% [markdown]
# Each device multiplies its (4 × 2) piece of `x` by its (8 × 2) piece of `W` transposed and gets a
# full-size (4 × 8) term. We compute the terms here from each device's own shards, exactly as the
# layer does inside, and wrap them as a `Partial` array to look at them (each cell lists the four
# devices' terms):

# %%
terms = [x.local(d) @ W.local(d).T for d in range(4)]  # local: no bytes move
partial = tpsim.from_local(terms, mesh, [Partial()])
print("partial:", partial)
viz.show_darray(partial);

# %% [markdown]
# ## 2. The all-reduce
#
# `P → R` is an all-reduce. Below it runs step by step with the ring algorithm on the four terms
# (flattened to 32 numbers, 4 chunks of 8). First $p - 1$ steps of **reduce-scatter**: each chunk
# travels round the ring collecting one more term per step, until each device holds one chunk
# fully summed. Then $p - 1$ steps of **all-gather** copy the finished chunks to everyone.

# %%
anim = viz.animate_collective("all_reduce", [t.ravel() for t in terms], tpsim.Mesh(4), algorithm="ring",
                              interval=900)
HTML(viz.to_html(anim))

# %% [markdown]
# The layer does all of this in one call: the local GEMMs, then `reduce_from`.

# %%
y = layer(x)
print(mesh.trace.summary())  # the layer's traffic: read before anything else runs on this mesh
(ar,) = mesh.trace.collectives  # one all-reduce, nothing else
print(f"the layer ran {len(mesh.trace.collectives)} collective: an {ar.collective} of {ar.nbytes} B, "
      f"{mesh.trace.per_device()[0]['sent']} B sent per device")
reference = x.full() @ W.full().T
print("y:", y)
print("y == x W^T exactly:", np.array_equal(y.full(), reference))
check = partial.redistribute([Replicate()])  # a second all-reduce, on a copy: not the layer's traffic
print("the same as reducing our partial:", np.array_equal(y.full(), check.full()))

# %% [markdown]
# ## 3. Why the low bits can differ: the order of the sum
#
# With small integers every partial sum is exact, so any order of addition gives the same bits. Real
# activations are not small integers. Floating-point addition rounds after every operation, so it is
# **not associative**: $(a + b) + c$ and $a + (b + c)$ can differ in the last bits. Here are four
# random float32 terms, summed in two orders:

# %%
rng = np.random.default_rng(0)
t4 = [rng.standard_normal(8).astype(np.float32) for _ in range(4)]
up = ((t4[0] + t4[1]) + t4[2]) + t4[3]  # rank order 0, 1, 2, 3
down = ((t4[3] + t4[2]) + t4[1]) + t4[0]  # 3, 2, 1, 0
exact = np.sum(np.array(t4, dtype=np.float64), axis=0)  # float64: as good as exact here
ulps = np.abs(up.view(np.int32).astype(np.int64) - down.view(np.int32).astype(np.int64))
print("element  0+1+2+3        3+2+1+0        float64 sum          differ by (ulps)")
for i in range(8):
    print(f"{i:7d}  {up[i]: .9g}  {down[i]: .9g}  {exact[i]: .17g}  {ulps[i]}")
print("elements whose bits differ:", int((up != down).sum()), "of 8")

# %% [markdown]
# Neither order is "wrong": both are close to the float64 sum, a few units in the last place (ulps)
# apart at most, as printed. But they are different
# bits, and a distributed program must not let different devices pick different orders, or the
# "replicated" copies of a tensor drift apart.
#
# tpsim sums in a **defined order**, the schedule's: each algorithm fixes which device adds which
# term when. So every replica of an all-reduce result is bit-identical, and the `torch.distributed`
# reference, running the very same schedule, reproduces the bits. Different algorithms may still
# differ from each other:

# %%
rows = []
for algorithm in tpsim.ALGORITHMS["all_reduce"]:
    out = tpsim.all_reduce(t4, tpsim.Mesh(4), algorithm=algorithm)
    same = len({o.tobytes() for o in out}) == 1
    rows.append((algorithm, "yes" if same else "NO", int((out[0] != up).sum()), int((out[0] != down).sum())))
print(table(rows, ("algorithm", "4 replicas bit-identical", "elements != 0+1+2+3", "elements != 3+2+1+0")))

# %% [markdown]
# Every algorithm keeps its replicas identical (in the ring, each chunk is summed once, on one device,
# then only copied). Comparing against a library that may choose another algorithm (NCCL picks by
# size and topology) therefore needs a tolerance, as `torch.testing.assert_close` gives, while tpsim
# against the reference running the same schedule is checked bit for bit.
#
# ## 4. The general rule
#
# For $x$ of shape $(b, k)$ split by columns and $W$ of shape $(n, k)$ split by columns over $t$
# devices, with $s$ bytes per number:
#
# | | per device |
# |---|---|
# | weight held | $n k s / t$ |
# | FLOPs of the forward GEMM | $2 b k n / t$ |
# | output before the all-reduce | a full $(b, n)$ term: `Partial` |
# | all-reduce of $y$, $S = b n s$ (ring) | sends $2\frac{t-1}{t} S$ in $2(t-1)$ steps |
# | time (α-β, ring) | $2(t-1)\left(\alpha + \frac{S}{t\beta}\right)$ |
#
# The bias is added once, after the all-reduce (adding it on every device would count it $t$ times).
# In the backward pass $dy$ is replicated, each device computes its own $dx_i = dy\, W_i$: identity,
# no communication.
#
# ## 5. At full size: GPT-3's second MLP layer on 8 H100s
#
# From $4h = 49152$ features back to $h = 12288$, 2048 tokens, bfloat16, shape-only:

# %%
node = tpsim.Mesh(8, topology=tpsim.presets.nvlink_node(8), device="h100")
fc2 = RowParallelLinear(node, 4 * 12288, 12288, init=None, dtype="bfloat16")
fc2(tpsim.distribute(tpsim.meta((2048, 1, 4 * 12288), "bfloat16"), node, [Shard(2)]))
gemm = next(op for op in node.trace.compute if op.name == "linear" and op.device == 0)
ar = node.trace.collectives[-1]
sent = node.trace.per_device()[0]["sent"]
print(f"GEMM on device 0: {fmt_time(gemm.end - gemm.start)} (at datasheet peak FLOP/s)")
print(f"all-reduce of y ({fmt_bytes(ar.nbytes)}): {ar.num_steps} steps, {fmt_bytes(sent)} sent per device, "
      f"{fmt_time(ar.time)} (α-β at datasheet bandwidth)")
t = node.size
print(f"2(t-1)/t S = {fmt_bytes(2 * (t - 1) / t * ar.nbytes)}; "
      f"the all-reduce is {ar.time / (gemm.end - gemm.start):.0%} of the GEMM's time")

# %% [markdown]
# ## Summary
#
# - Row-parallel: split $A$ by rows (PyTorch's $W$ by columns, `Shard(1)`), $x$ by columns; each
#   device computes a full-size term, a `Partial` array.
# - `P → R` is an all-reduce, the forward of the `reduce_from` ($g$) region: $2\frac{t-1}{t} S$ bytes
#   per device with a ring, twice an all-gather's.
# - Float addition is not associative: the order of the sum shows in the low bits. tpsim fixes the
#   order by the schedule, so replicas are bit-identical and the reference matches it bit for bit.
#
# ## Exercises

# %%
from tpsim.exercises import lesson03 as ex

display(ex.partial_value)
ex.partial_value()

# %%
display(ex.allreduce_bytes)
ex.allreduce_bytes()  # your prediction here, then run: ex.allreduce_bytes.run()

# %%
display(ex.allreduce_time)
ex.allreduce_time()

# %%
display(ex.replicas_identical)
ex.replicas_identical()  # a number of distinct bit patterns
