# %% [markdown]
# # Lesson 6: Embeddings and the loss
#
# A GPT touches its vocabulary twice: at the bottom, where each token id picks a row of the embedding
# table `E` (V × h), and at the top, where the hidden states are turned into one logit per vocabulary
# entry and then into a loss.  With a vocabulary of 50 000 tokens these are the largest matrices of the
# model, so tensor parallelism splits them too, **by vocabulary**: rank `i` holds a block of rows of `E`.
#
# This lesson follows one small table of 10 tokens over 4 devices, then states the rule, then prices
# it on GPT-3 1.3B.  Every number printed below is computed by the simulator in this notebook.

# %%
import numpy as np
from IPython.display import Markdown, display

import tpsim
from tpsim import viz
from tpsim.nn import (
    VocabParallelCrossEntropy,
    VocabParallelEmbedding,
    VocabParallelLogits,
    comm_table,
    format_comm_table,
    padded_vocab_size,
)
from tpsim.nn.embedding import vocab_ranges

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. Ten tokens on four devices
#
# The table has V = 10 rows of h = 3 numbers, small integers so that every sum is exact.  Split by rows
# over t = 4 devices with DTensor's rule (`torch.chunk`), the pieces are as even as they can be.

# %%
mesh = tpsim.Mesh(4)
emb = VocabParallelEmbedding(mesh, vocab_size=10, hidden=3, init="exact")
table = emb.params["weight"]  # (10, 3), S(0): split by rows, i.e. by token id
ranges = vocab_ranges(table, 0)
for d, (lo, hi) in enumerate(ranges):
    print(f"device {d}: token ids {lo}..{hi - 1} ({hi - lo} row{'s' if hi - lo != 1 else ''})")
viz.show_darray(table);

# %% [markdown]
# Now look up a sequence of five tokens.  No device has the whole table, so each device looks up the
# ids that fall in its own rows and writes **zeros** for the others.  Here is what each device produces
# before any communication, computed from its own shard only:

# %%
ids = np.array([[7], [2], [9], [3], [0]])  # (s, b) = (5, 1)
partials = []
for d, (lo, hi) in enumerate(ranges):
    mine = (ids >= lo) & (ids < hi)
    part = np.zeros((*ids.shape, 3), np.float32)
    part[mine] = table.shards[d][ids[mine] - lo]
    partials.append(part)
    print(f"device {d} (ids {lo}..{hi - 1}): rows for ids {ids[mine].tolist()}\n{part[:, 0]}")

# %% [markdown]
# Each token's row is non-zero on exactly one device, so adding the four pieces gives the lookup on the
# whole table.  The pieces are a `Partial` (P) array and the sum is an all-reduce: P → R.  The layer
# does exactly this:

# %%
y = emb(ids)  # (5, 1, 3), R after the all-reduce
full_table = table.full()
print("y == E[ids]:", np.array_equal(y.full(), full_table[ids]))
print("y == sum of the device pieces:", np.array_equal(y.full(), sum(partials)))
(forward_ar,) = mesh.trace.collectives
display(Markdown(
    f"The trace holds **{len(mesh.trace.collectives)}** collective: a `{forward_ar.collective}` "
    f"({forward_ar.algorithm}) of {forward_ar.nbytes} bytes = s·b·h = {ids.size}·3 float32 values."
))

# %% [markdown]
# The backward pass needs **no** communication.  The gradient `dy` arrives replicated (every device has
# all of it), and device `i` adds the rows of `dy` whose ids it owns into its own rows of `dE`
# (`np.add.at`, so a token that appears twice gets both contributions).

# %%
before = len(mesh.trace.collectives)
dy = tpsim.distribute(np.ones(y.shape, np.float32), mesh, [tpsim.Replicate()])
emb.backprop(dy)
new = len(mesh.trace.collectives) - before
print("collectives issued by the backward pass:", new)
print("dE (row per token id; 1 where the id occurs):", emb.grads["weight"].full()[:, 0])

# %% [markdown]
# ## 2. The rule
#
# With the table split by rows, rank *i* holding ids `[lo_i, hi_i)`:
#
# | pass     | rank i computes                                      | communication                    |
# |----------|------------------------------------------------------|----------------------------------|
# | forward  | `y_i[k] = E_i[id_k - lo_i]` if `lo_i ≤ id_k < hi_i`, else 0 | all-reduce (P → R) of s·b·h values |
# | backward | `dE_i[id_k - lo_i] += dy[k]` for the ids it owns     | none                             |
#
# Megatron calls the forward all-reduce the region `g` (`reduce_from` in tpsim).  With sequence
# parallelism (lesson 7) it becomes a reduce-scatter.

# %% [markdown]
# ## 3. The loss without gathering the logits
#
# At the top, the logits `Z = x Eᵀ` come out split by vocabulary, `S(-1)`: rank *i* holds the logits of
# its own tokens.  Gathering them would move s·b·V values.  Megatron's cross-entropy never does: the
# softmax only needs three numbers per token, and each is a reduction over the vocabulary that every
# rank can do on its own columns first:
#
# 1. `m = max_j Z_j`: each rank's max over its columns, then an all-reduce **MAX**;
# 2. `Z_target - m`: only the rank that owns the target column adds it, the others add 0: all-reduce **SUM**;
# 3. `Σ_j exp(Z_j - m)`: each rank's partial sum, then an all-reduce **SUM**.
#
# Then `loss = log(Σ exp) - (Z_target - m)` on every rank.  Here it is on 10 tokens and 4 devices,
# next to a plain NumPy log-softmax of the whole logits.

# %%
rng = np.random.default_rng(6)
logits = rng.integers(-3, 4, (5, 1, 10)).astype(np.float64)  # (s, b, V), small integers
targets = np.array([[7], [2], [9], [3], [0]])
mesh = tpsim.Mesh(4)
z = tpsim.distribute(logits, mesh, [tpsim.Shard(2)])  # each device holds its vocab columns
ce = VocabParallelCrossEntropy(mesh)
loss, mean = ce(z, targets)
shifted = logits - logits.max(-1, keepdims=True)
want = np.log(np.exp(shifted).sum(-1)) - np.take_along_axis(shifted, targets[..., None], -1)[..., 0]
print("per-token loss:", loss.full()[:, 0])
print("NumPy         :", want[:, 0])
print("max difference:", np.abs(loss.full() - want).max())
print(format_comm_table(comm_table(ce)))

# %% [markdown]
# The three all-reduces each carry one value per token (s·b = 5), not one per vocabulary entry.  For
# token 0 (target 7), here is what each device contributes before the all-reduces:

# %%
k = 0
m = logits[k, 0].max()
rows = []
for d, (lo, hi) in enumerate(vocab_ranges(z, -1)):
    cols = logits[k, 0, lo:hi]
    owns = lo <= targets[k, 0] < hi
    rows.append((d, f"{lo}..{hi - 1}", cols.max(), (logits[k, 0, targets[k, 0]] - m) if owns else 0.0,
                 np.exp(cols - m).sum()))
print(f"{'device':>6} {'columns':>8} {'local max':>10} {'target - m':>11} {'local sum exp':>14}")
for r in rows:
    print(f"{r[0]:>6} {r[1]:>8} {r[2]:>10.0f} {r[3]:>11.0f} {r[4]:>14.4f}")
total = sum(r[4] for r in rows)
display(Markdown(
    f"MAX over devices: m = {max(r[2] for r in rows):.0f}; SUM of the target column: "
    f"{sum(r[3] for r in rows):.0f}; SUM of exp: {total:.4f}.  Loss = log({total:.4f}) - "
    f"({sum(r[3] for r in rows):.0f}) = **{np.log(total) - sum(r[3] for r in rows):.4f}**, "
    f"the first value above."
))

# %% [markdown]
# The backward pass of the loss needs no communication either: `dZ_i = softmax(Z)_i - onehot_i` on each
# rank's own columns, with the global sum already known from the forward pass.

# %% [markdown]
# ## 4. The padding pitfall
#
# Ten rows over four devices split 3, 3, 3, 1.  tpsim follows `torch.chunk` and copes, but Megatron wants
# every rank to hold the same number of rows (equal GEMM shapes on every rank, and fast ones), so it
# **pads** the vocabulary: `make_vocab_size_divisible_by = m` rounds V up to a multiple of m·t.

# %%
for vocab, t, pad in ((10, 4, None), (10, 4, 1), (50257, 8, 128), (50257, 4, 128), (50257, 1, 128)):
    vp = padded_vocab_size(vocab, t, pad)
    shape_only = VocabParallelEmbedding(tpsim.Mesh(t), vocab, 1, init=None, pad_to_multiple_of=pad)
    rows = sorted({hi - lo for lo, hi in vocab_ranges(shape_only.params["weight"], 0)})
    print(f"V = {vocab:>5}, t = {t}, pad multiple {pad!s:>4}: V' = {vp:>5}, rows per device {rows}")

# %% [markdown]
# The padded rows are real weights: they are initialised like the others, and their logits are **not
# zero**.  If the loss treats all V' columns as vocabulary, the softmax hands probability to tokens that
# do not exist.  Worse, V' depends on t, so the same model reports a different loss at a different TP
# degree.  Below, the same hidden states go through a tied output layer at t = 1, 2, 4 and 8 with
# `pad_to_multiple_of=1`: the masked loss (told `vocab_size=10`) is the same everywhere; the unmasked one
# is not.

# %%
x = np.random.default_rng(0).standard_normal((5, 1, 3)) * 30  # hidden states (s, b, h)
print(f"{'t':>2} {'V_padded':>9} {'masked loss':>12} {'unmasked loss':>14}")
results = {}
for t in (1, 2, 4, 8):
    mesh = tpsim.Mesh(t)
    table = VocabParallelEmbedding(mesh, 10, 3, seed=1, dtype="float64", pad_to_multiple_of=1)
    z = VocabParallelLogits(table)(tpsim.distribute(x, mesh, [tpsim.Replicate()]))  # (5, 1, V') S(-1)
    masked = VocabParallelCrossEntropy(mesh, vocab_size=10)(z, targets)[1].full()
    unmasked = VocabParallelCrossEntropy(mesh)(z, targets)[1].full()
    results[t] = (table.padded_vocab_size, float(masked), float(unmasked))
    print(f"{t:>2} {table.padded_vocab_size:>9} {masked:>12.6f} {unmasked:>14.6f}")
assert len({r[1] for r in results.values()}) == 1  # the masked loss does not depend on t

# %% [markdown]
# tpsim's `VocabParallelCrossEntropy(vocab_size=V)` masks the padded columns: `-inf` in the max and the
# exp, zero gradient.  `GPT` passes its real vocabulary size, so its loss is the same at every t.

# %% [markdown]
# ## 5. The cost on GPT-3 1.3B
#
# Shape-only (`init=None`, `tpsim.meta`): the GPT-3 1.3B vocabulary (V = 50257, padded with m = 128),
# h = 2048, a sequence of s = 2048 tokens, b = 1, bfloat16, on one node of 8 H100s over NVLink.
# Nothing is allocated; the bytes and times come from the trace.

# %%
from tpsim import meta
from tpsim.report import fmt_bytes, fmt_time

s, b, h, V, t = 2048, 1, 2048, 50257, 8
mesh = tpsim.Mesh(t, topology=tpsim.presets.nvlink_node(t), device="h100")
big = VocabParallelEmbedding(mesh, V, h, init=None, dtype="bfloat16", pad_to_multiple_of=128)
ids = tpsim.distribute(meta((s, b), "int64"), mesh, [tpsim.Replicate()])
hidden = big(ids)
logits = VocabParallelLogits(big)(hidden)  # (s, b, V') bf16, S(-1)
loss_fn = VocabParallelCrossEntropy(mesh, vocab_size=V)
loss_fn(logits, ids)
print("times: α-β model at datasheet bandwidth")
for c in mesh.trace.collectives:
    print(f"{c.label:28s} {c.collective:11s} op={c.op:4s} size {fmt_bytes(c.nbytes):>10} "
          f"time {fmt_time(c.time)}")
print(f"table shard per device: {fmt_bytes(big.params['weight'].shards[0].nbytes)} "
      f"({big.padded_vocab_size // t} rows of {h})")

# %%
ce_colls = [c for c in mesh.trace.collectives if c.label == loss_fn.name]
gather_mesh = tpsim.Mesh(t, topology=tpsim.presets.nvlink_node(t))
pieces = [meta((s * b * big.padded_vocab_size // t,), "bfloat16")] * t  # each device's logits
tpsim.all_gather(pieces, gather_mesh)
(gathered,) = gather_mesh.trace.collectives
ce_time = sum(c.time for c in ce_colls)
steps = sum(c.num_steps for c in ce_colls)
display(Markdown(
    f"The loss's three all-reduces move {fmt_bytes(sum(c.nbytes for c in ce_colls))} of values in "
    f"{fmt_time(ce_time)}, {steps} ring steps that each cost about one link latency: they are latency-bound, "
    f"and the bytes hardly matter.  Gathering the logits instead would be an all-gather of "
    f"{fmt_bytes(gathered.nbytes)} taking {fmt_time(gathered.time)}: "
    f"**{gathered.time / ce_time:,.0f}×** longer, and every device would then hold "
    f"{fmt_bytes(gathered.nbytes)} of logits."
))

# %% [markdown]
# ## Summary
#
# - The embedding table and the output layer are split **by vocabulary**.  The lookup is a partial sum
#   (zeros for ids a rank does not own): **one all-reduce of s·b·h forward, nothing backward**.
# - The cross-entropy never gathers the logits: **three all-reduces of s·b values** (max, target logit,
#   sum of exp), nothing backward.
# - Megatron **pads** the vocabulary to a multiple of m·t so every rank holds the same rows.  The padded
#   columns must be **masked** in the loss, or the loss changes, and changes with t.
#
# ## Exercises
#
# Put your answer between the parentheses and run the cell; a wrong answer gets a hint, `.solution()`
# gives the answer.  In 6.3, "no collective" is `None`, as the API says it.

# %%
from tpsim.exercises import lesson06 as ex

ex.padded_rows

# %%
ex.padded_rows()

# %%
ex.loss_bytes

# %%
ex.loss_bytes()

# %%
ex.backward_collective

# %%
ex.backward_collective()  # your prediction here, then run: ex.backward_collective.run()
