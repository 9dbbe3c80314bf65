# %% [markdown]
# # Lesson 11: Bugs that don't crash
#
# The worst tensor-parallel bugs raise no error.  Shapes fit, training runs, the loss goes down, and it is
# quietly wrong: a LayerNorm's weights drift apart across ranks (NVIDIA/Megatron-LM#1446), the logged loss
# depends on the TP degree (#737), the gradient norm is 1.36-1.52x too large at t = 8 (ROCm/TransformerEngine
# #715).  A test that only checks "it runs" or "the loss is finite" never sees them.
#
# The simulator holds every rank **and** the unsharded truth in one process, so it can compare the two
# tensor by tensor.  `tpsim.bugs` is a catalogue of such bugs, each a small mutation of a correct layer,
# and `tpsim.bugs.detect` is the check that names them.  At the end you are handed a layer with a bug in it,
# and find it.

# %%
import numpy as np
from IPython.display import Markdown, display

import tpsim
from tpsim.bugs import BY_NAME, CATALOGUE, Inputs, detect, pipeline, run
from tpsim.bugs.grad_norm import double_counted_grad_norm
from tpsim.nn import comm_table

# %% [markdown]
# ## 1. Nothing crashes
#
# Take the sequence-parallel LayerNorm from lesson 7 with one line missing: the all-reduce of its weight
# and bias gradients.  Run it forward and backward on t = 2 virtual devices, on small integers (exact
# sums), and look at what comes out.

# %%
bug = BY_NAME["sp_norm_grad_unreduced"]
got, feed = run(bug.build, tpsim.Mesh(2), bug.inputs)
print("x:", feed["x"].shape, "placement on TP:", bug.inputs.placement)
for name in ("out", "dx", "grad.weight"):
    print(f"{name:<12} shape {got[name].shape}, placements {got[name].placements}, finite: "
          f"{bool(np.isfinite(got[name].full()).all())}")

# %% [markdown]
# Right shapes, finite numbers, and the weight gradient even claims to be replicated (`R`): every rank
# holds "the" gradient.  Nothing here looks wrong.
#
# ## 2. The truth, and the detector
#
# The truth is the **correct** layer on a one-device mesh: plain NumPy, no collective, nothing sharded.
# `detect(build, truth, inputs)` runs both on the same numbers and compares every tensor (output, input
# gradient, each parameter gradient, the global gradient norm) on every device, with the piece its
# placement claims.  A tensor placed `R` must also hold the same bits on every rank.

# %%
report = detect(bug.build, bug.truth, bug.inputs, world_size=2)
print(report.format())

# %% [markdown]
# The output and the input gradient are right.  The weight and bias gradients are wrong on every rank, and
# the two ranks disagree.  Each rank's gradient sums only **its own rows** of the sequence: added up over
# the ranks they give the truth back.  That is a partial sum, `P`, calling itself `R`.

# %%
truth, _ = run(bug.truth, tpsim.Mesh(1), bug.inputs)
per_rank = got["grad.weight"].shards
print("rank 0 + rank 1:", per_rank[0] + per_rank[1])
print("truth:          ", truth["grad.weight"].full())

# %% [markdown]
# The trace says the same without any numbers: the correct layer's backward has one all-reduce (its
# fused `[dw; db]`), the buggy one has none.

# %%
for which, build in (("correct", bug.truth), ("buggy", bug.build)):
    mesh = tpsim.Mesh(2)
    layer = build(mesh)
    y = layer(tpsim.distribute(feed["x"], mesh, [bug.inputs.placement]))
    layer.backprop(tpsim.distribute(feed["dy"], mesh, list(y.placements)))
    rows = [(r.direction, r.collective, r.count) for r in comm_table(layer)]
    print(f"{which:<8}", rows or "no collective at all")

# %% [markdown]
# ## 3. The catalogue
#
# Every entry is a subclass of a correct layer that overrides one method or swaps one region.  The detector
# runs each at t = 2 against its truth; the table shows what it flags and the worst relative error.  (Two
# dropout bugs have no unsharded twin: their truth is the correct layer on the same mesh, with the random
# streams Megatron prescribes.  One entry, `tied_embedding_grads_unreduced`, is a whole GPT over two
# pipeline stages of t/2 devices, against the unsharded GPT.)

# %%
lines = ["| mutation | symptom | flagged (rel. error) |", "|---|---|---|"]
for m in CATALOGUE:
    r = m.detect(world_size=2)
    flagged = ", ".join(f"`{k}` {r.errors[k]:.2g}" for k in r.flagged)
    lines.append(f"| `{m.name}` | {m.symptom} | {flagged} |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# The pipelined GPT (`tpsim.nn.pipeline_stages`) holds the word-embedding table twice: the first stage
# looks tokens up in it, the last stage multiplies by its own copy for the logits.  Each copy's gradient
# holds only its own stage's term, and Megatron's embedding group (the first and last stage) all-reduces
# the two.  Skip that all-reduce and the loss is still right; the copies part at the first optimizer step.

# %%
tied = BY_NAME["tied_embedding_grads_unreduced"]
feed = pipeline.draw(tied.inputs, 0)
for which, build in (("correct", tied.truth), ("bug", tied.build)):
    model = build(pipeline.pp_mesh(2))
    loss = float(model.step(feed["tokens"], feed["targets"]).full())
    first, last = model.stages[0].embedding.word_embeddings, model.stages[-1].output_layer
    w0 = first.params["weight"].full() - 0.1 * first.grads["weight"].full()  # one SGD step, lr 0.1
    w1 = last.params["weight"].full() - 0.1 * last.grads["weight"].full()
    print(f"{which:<8} loss {loss:.6f}; after one SGD step the two copies differ by up to {np.abs(w0 - w1).max():.3g}")

# %% [markdown]
# Some bugs touch only the forward value (`reduce_scatter_mean`: every gradient is exact), some only the
# gradients (`sp_norm_grad_unreduced`), some only a number you log (`label_smoothing_per_rank`,
# `grad_norm_double_counted`).  Checking one tensor is not enough: the detector checks them all.
#
# ## 4. The gradient norm, counted t times
#
# A replicated parameter (a LayerNorm weight, a row-parallel bias) has the same gradient on every rank.  The
# global norm must count it once; a norm that adds every rank's squares counts it t times.  If a share r of
# `||g||^2` is replicated, the reported norm is `sqrt(1 + (t - 1) r)` times the true one.

# %%
m = BY_NAME["grad_norm_double_counted"]
for t in (2, 4, 8):
    good, _ = run(m.build, tpsim.Mesh(t), m.inputs)
    bad = run(m.build, tpsim.Mesh(t), m.inputs, norm=double_counted_grad_norm)[0]["grad_norm"]
    r = float(np.square(good["grad.bias"].full()).sum()) / good["grad_norm"] ** 2
    print(f"t = {t}: measured x{bad / good['grad_norm']:.4f}, sqrt(1 + (t-1) r) = "
          f"{np.sqrt(1 + (t - 1) * r):.4f}  (r = {r:.3f})")
r_te = [(f**2 - 1) / 7 for f in (1.36, 1.52)]
print(f"TransformerEngine's 1.36x-1.52x at t = 8 means replicated grads carried {r_te[0]:.0%}-{r_te[1]:.0%} "
      "of ||g||^2")

# %% [markdown]
# ## 5. On real ranks, and on your own model
#
# The same catalogue runs on real `torch.distributed` ranks: `python -m reference.bugs.check
# --world-size 2` builds each mutation in `reference/bugs/`, feeds it the pieces tpsim's devices held,
# and checks that gloo's run is caught by name and equals tpsim's buggy run rank for rank.
#
# For your own model, `python -m reference.audit --builder mypkg:build --plan mypkg:plan` runs your
# `parallelize_module` plan on gloo ranks against the unsharded module, names every parameter whose
# gradient is off, compares CommDebugMode's collectives with tpsim's prediction, and warns about a norm
# left out of a sequence-parallel plan (`reference/audit_examples.py` has one).  `--grad-norm
# mypkg:grad_norm` checks your own grad-norm code against the unsharded norm as well.
#
# ## Takeaways
#
# - A silent TP bug is a wrong placement claim: a partial sum called replicated, a shard called whole, a
#   value added t times.  Compare every tensor with the unsharded truth, on every rank, by its placement.
# - Check replicas against each other: a tensor placed `R` that differs across ranks is a bug even when
#   rank 0 looks right.
# - Derive the tolerance: on small integers in float64 the layers are exact or off by rounding only
#   (`n^2 u`, about 1e-12 here), and every bug in the catalogue is off by 1e-3 or more.
#
# ## Exercises
#
# `mystery_layer` is a row-parallel linear (in 8, out 6) with one silent bug in it; `correct_layer` is the
# same layer written right.  Find the bug with the detector.

# %%
from tpsim.exercises import lesson11 as ex
from tpsim.placement import Shard

mystery_inputs = Inputs("x", (5, 2, 8), Shard(2))
ex.mystery_tensor

# %%
ex.mystery_tensor()  # your prediction here (a tensor's name), then run: ex.mystery_tensor.run()

# %%
ex.mystery_factor

# %%
ex.mystery_factor()  # your answer here; ex.mystery_factor.solution() shows the worked answer

# %%
ex.norm_inflation

# %%
ex.norm_inflation()  # your answer here; ex.norm_inflation.solution() shows the worked answer
