# %% [markdown]
# # Lesson 1: The memory wall
#
# A device can only compute with what is in its memory. When one layer's weights are bigger than that
# memory, no amount of cleverness on that one device helps: the layer has to be **split** across
# several devices. Tensor parallelism (TP) is one way to split it: each device holds a piece of every
# weight matrix and computes with its piece.
#
# This lesson shows the wall on a toy device first (a few hundred bytes, so every number can be
# checked by hand), then gives the general rule, then meets the wall at full size: GPT-3 175B on
# H100s. Every number below is computed by the simulator in this notebook; the text only gives
# formulas.
#
# Vocabulary, from PyTorch DTensor: a distributed array has a **placement** on each mesh dim:
# `Shard(d)` (printed `S(d)`: each device holds one piece of tensor dim `d`), `Replicate()` (`R`: each
# device holds all of it) or `Partial()` (`P`: each device holds a term; the array is their sum).

# %%
import math

from IPython.display import display

import tpsim
from tpsim import Replicate, viz
from tpsim.errors import OutOfMemoryError
from tpsim.hardware import H100
from tpsim.nn import ColumnParallelLinear, TransformerBlock, analyse, format_efficiency, tp_efficiency
from tpsim.nn.config import preset
from tpsim.report import fmt_bytes, fmt_time, table

# %% [markdown]
# ## 1. A layer that does not fit
#
# Our virtual device has a capacity of 1024 bytes. The layer is a linear layer with 16 inputs and 32
# outputs, in float32 (4 bytes a number), no bias. PyTorch stores its weight as `W` with shape
# (out, in) = (32, 16), and computes $y = x W^\top$.

# %%
CAPACITY = 1024  # bytes per virtual device: tiny on purpose
IN, OUT = 16, 32
print("the weight needs", OUT * IN * 4, "bytes; a device has", CAPACITY)

one = tpsim.Mesh(1, memory=CAPACITY)
try:
    ColumnParallelLinear(one, IN, OUT, bias=False, dtype="float32")
except OutOfMemoryError as e:
    print("OutOfMemoryError:", e)
print("device 0 after the failed attempt:", one.memory()[0])

# %% [markdown]
# The simulator refused the layer and left the device as it was (nothing half-allocated): a rejected
# call changes nothing.
#
# ## 2. The same layer split over four devices
#
# Now give the layer 4 devices of the same size. `ColumnParallelLinear` cuts `W` into 4 pieces of
# 32 / 4 = 8 output rows each, `Shard(0)` of the weight: device `i` holds rows `8i .. 8i+7`.

# %%
four = tpsim.Mesh(4, memory=CAPACITY)
layer = ColumnParallelLinear(four, IN, OUT, bias=False, dtype="float32", init="exact")
w = layer.params["weight"]
print(w)
for d in range(4):
    print(f"device {d}: holds W rows of shape {w.local(d).shape} = {w.local(d).nbytes} bytes")
viz.show_darray(w);

# %%
print(table([(m["device"], m.get("weights", 0), m["capacity"]) for m in four.memory()],
            ("device", "weights (B)", "capacity (B)")))
viz.memory(four);

# %% [markdown]
# Each device now holds a quarter of the weight, and the layer fits. Splitting did not make the
# weight smaller: the four pieces together are exactly the original (check below). It spread the
# bytes over more memory.

# %%
full = w.full()  # assembled on the host, for looking at: no traffic counted
print("pieces add up to the full weight:", full.shape, sum(w.local(d).nbytes for d in range(4)), "bytes")

# %% [markdown]
# ## 3. The general rule
#
# A tensor-parallel layer over $t$ devices splits its big matrices $t$ ways and keeps small vectors
# (LayerNorm weights, some biases) whole on every device. With $P_\text{split}$ split parameters,
# $P_\text{repl}$ replicated ones and $b$ bytes per number, each device holds
#
# $$ M_\text{weights}(t) = \frac{P_\text{split}\, b}{t} + P_\text{repl}\, b . $$
#
# Training needs more than the weights. Per device, roughly
#
# $$ M = M_\text{weights} + M_\text{grads} + M_\text{optimizer} + M_\text{activations}, $$
#
# where the gradients are as large as the weights, the optimizer keeps its own state (Adam in mixed
# precision: an fp32 master copy and two moments, 12 bytes per parameter), and the activations are
# what the forward pass saves for the backward pass. Tensor parallelism divides the first three by
# about $t$, and part of the activations (lesson 7 shows how sequence parallelism divides the rest).
#
# ## 4. At full size: GPT-3 175B on H100s
#
# GPT-3 175B has 96 layers of hidden size 12288. An H100 SXM has 80 GiB of memory. The simulator can
# build the whole model **shape-only**: arrays that carry a shape and a dtype but no data, so the
# memory ledger counts every byte without allocating any.

# %%
from tpsim.nn import GPT

cfg = preset("gpt3-175b")
mesh8 = tpsim.Mesh(8, device="h100")
model = GPT(mesh8, cfg, init=None)  # shape-only: nothing is allocated; the output layer is tied
# count each parameter once: with tied embeddings the output layer reuses the word table (x E^T)
params = sum(math.prod(p.shape) for p in {id(p): p for _, p in model.named_parameters()}.values())
untied = params + model.padded_vocab_size * cfg.hidden  # what a separate output layer (h x V) would add
print(f"{cfg.name}: {cfg.num_layers} layers, hidden {cfg.hidden}, vocabulary {model.padded_vocab_size}")
print(f"parameters, output layer tied to the embedding (as GPT-3): {params:,} = {params / 1e9:.1f}B")
print(f"with an untied output layer it would be {untied:,} = {untied / 1e9:.2f}B")
print(f"in bfloat16 the weights alone are {fmt_bytes(2 * params)}")
print(f"one H100: {fmt_bytes(H100.memory)} ({H100.name})")

# %% [markdown]
# GPT-3 **ties** its output layer to the word embedding: the logits are $x E^\top$ with the same table
# $E$ the input lookup uses, so the $V \times h$ output matrix is not a second set of parameters. Counted
# that way (the model above), GPT-3 has the 174.6B parameters the paper rounds to "175B". One H100 cannot
# hold even the weights; eight can:

# %%
try:
    GPT(tpsim.Mesh(1, device="h100"), cfg, init=None)
except OutOfMemoryError as e:
    print("one H100 -> OutOfMemoryError:", e)

print(f"eight H100s with TP = 8 -> the weights fit: {fmt_bytes(mesh8.memory()[0]['weights'])} per device")
del model

# %% [markdown]
# The weights fit on 8 devices. A training step needs more: `analyse` runs a whole forward and
# backward pass of the model shape-only and reports what each device holds.

# %%
report = analyse("gpt3-175b", tp=8)
mem = report["memory"]
print(table([(k, fmt_bytes(mem[k])) for k in ("weights", "grads", "activations", "comm", "peak", "capacity")],
            ("per device", "bytes"), f"GPT-3 175B, one micro-batch of {cfg.seq_len} tokens, TP = 8"))
print("fits:", mem["fits"])
adam = 12 * params / 8
print(f"Adam's fp32 state (not in the ledger above) would add 12 B/param / 8 = {fmt_bytes(adam)} per device")

# %% [markdown]
# So even 8 H100s cannot train GPT-3 with tensor parallelism alone: the wall moves, it does not go
# away. Real runs combine TP with pipeline and data parallelism (lesson 9) and with activation
# savings (lesson 7). TP has a hard limit too: its collectives run after every layer, so it lives
# inside one fast NVLink node (lesson 8).
#
# ## 5. What splitting costs, in seconds
#
# Splitting divides the work as well as the memory, but the pieces must talk: the next lessons show
# that every transformer layer needs collectives in the forward and the backward pass. Here is the
# preview, for one GPT-3 layer (shape-only) on 1, 2, 4 and 8 H100s of an NVLink node: compute time
# per device falls with $t$, communication appears, and the efficiency $T_1 / (t\, T_t)$ drops below 1.

# %%
def build(mesh):
    layer = TransformerBlock(mesh, cfg.hidden, cfg.num_heads, init=None, dtype="bfloat16")
    x = tpsim.distribute(tpsim.meta((cfg.seq_len, 1, cfg.hidden), "bfloat16"), mesh, [Replicate()])
    dy = tpsim.distribute(tpsim.meta((cfg.seq_len, 1, cfg.hidden), "bfloat16"), mesh, [Replicate()])
    return layer, x, dy


rows = tp_efficiency(build, [2, 4, 8], device="h100", topology="nvlink")
print(format_efficiency(rows, "one GPT-3 layer, forward + backward, per device (times at datasheet peak)"))
print(f"at t = 8: {fmt_time(rows[-1]['compute'])} computing, {fmt_time(rows[-1]['comm'])} communicating, "
      "at the H100's datasheet peak FLOP/s and NVLink bandwidth")

# %% [markdown]
# ## Summary
#
# - A device computes only with what is in its memory; a layer bigger than that memory must be split.
# - Tensor parallelism splits each big weight matrix $t$ ways: weights, gradients and optimizer state
#   per device fall by about $t$; small vectors stay replicated.
# - Shape-only runs price a 175B model in a second: its bf16 weights do not fit one H100 but fit on 8,
#   and a training step needs more than TP alone gives.
# - The price of splitting is communication, which the next four lessons take apart.
#
# ## Exercises
#
# Each exercise is checked by the simulator: call it with your answer (with no answer it shows the
# question as open). A wrong answer gets a hint that points at the idea, not the answer; try again, and
# call `.solution()` (e.g. `ex.min_devices.solution()`) only when you want the answer and its reasoning.
# A **predict, then run** exercise takes your prediction first; its `.run()` then runs the simulator,
# prints the trace and compares.

# %%
from tpsim.exercises import lesson01 as ex

display(ex.weights_per_device)
ex.weights_per_device()  # your answer in bytes, e.g. ex.weights_per_device(1000)

# %%
display(ex.min_devices)
ex.min_devices()

# %%
display(ex.gpt3_layer_weights)
ex.gpt3_layer_weights()

# %%
display(ex.row_parallel_ledger)
ex.row_parallel_ledger()  # your prediction here, then run: ex.row_parallel_ledger.run()
