# %% [markdown]
# # Lesson 7: Sequence parallelism
#
# Tensor parallelism splits the GEMMs of a transformer layer, but not what lies between them: the
# LayerNorms, the dropouts and the residual adds run on the whole (s, b, h) activation, on every rank,
# after each all-reduce.  Every rank does the same work and, worse, **keeps the same activations** for the
# backward pass.  Sequence parallelism (SP, Korthikanti et al. 2022) splits that part **by sequence**.
# In the forward pass the trick costs no extra bytes, because an all-reduce is already a reduce-scatter
# followed by an all-gather: SP just does other useful work in between.  The backward pass does send
# more, 1.5× in the table of section 5, and section 3 shows where that comes from: Megatron gathers the
# sequence-split input **again** in backward, for the weight gradient, instead of keeping it.
#
# Every number below is computed by the simulator in this notebook.

# %%
import numpy as np
from IPython.display import HTML, Markdown, display

import tpsim
from tpsim import Partial, Replicate, Shard, meta, viz
from tpsim.nn import TransformerBlock, analyse, comm_table, format_comm_table
from tpsim.nn.config import PRESETS, korthikanti_activation_bytes
from tpsim.report import fmt_bytes, fmt_time, table

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. An all-reduce is a reduce-scatter, then an all-gather
#
# Four devices each hold a partial sum (P) of an (8, 2) array of small integers.  Turn it into a
# replicated array (R) in one go, and again in two stops, P → S(0) → R, and compare results and bytes.

# %%
rng = np.random.default_rng(7)
terms = [rng.integers(-3, 4, (8, 2)).astype(np.float32) for _ in range(4)]  # device d's partial sum

one = tpsim.Mesh(4)
x = tpsim.from_local(terms, one, [Partial()])
direct = x.redistribute([Replicate()])  # all-reduce

two = tpsim.Mesh(4)
x = tpsim.from_local(terms, two, [Partial()])
half = x.redistribute([Shard(0)])  # reduce-scatter: device d gets rows 2d, 2d+1 of the sum
both = half.redistribute([Replicate()])  # all-gather

print("same result:", np.array_equal(direct.full(), both.full()), "| the sum:", direct.full()[:, 0])
for name, mesh in (("P -> R", one), ("P -> S(0) -> R", two)):
    colls = ", ".join(c.collective for c in mesh.trace.collectives)
    sent = mesh.trace.per_device()[0]["sent"]
    print(f"{name:15s} {colls:28s} device 0 sent {sent} B, {mesh.trace.wire_bytes} B on the wires")

# %% [markdown]
# The same bytes, the same result.  Here is the first half, the reduce-scatter, step by step on a ring:
# at each step every device passes one chunk on and adds the one it receives, so after p - 1 = 3 steps
# device `d` holds chunk `d` summed over all four devices.

# %%
anim = viz.animate_collective("reduce_scatter", terms, tpsim.Mesh(4), interval=1000)
display(HTML(viz.to_html(anim)))

# %% [markdown]
# ## 2. Where SP puts the two halves
#
# In a transformer layer without SP, each row-parallel linear (the attention's output projection `dense`
# and the MLP's `fc2`) ends with an all-reduce, and what follows (dropout, residual add, LayerNorm) runs on
# the full activation on every rank.  With SP:
#
# - the row-parallel linear ends with a **reduce-scatter** instead: each rank keeps s/t rows of the sum,
#   and the dropout, residual and LayerNorm run on those rows only;
# - the next column-parallel linear (`query_key_value`, `fc1`) starts with an **all-gather** of the
#   sequence, since every rank needs all the rows for its GEMM.
#
# Here is one small layer (s = 8, b = 2, h = 16, 4 heads, t = 4), with the same weights, without and with SP:

# %%
s, b, h, heads, t = 8, 2, 16, 4, 4
x = np.random.default_rng(0).standard_normal((s, b, h))
out, tables, meshes = {}, {}, {}
for sp in (False, True):
    mesh = tpsim.Mesh(t)
    block = TransformerBlock(mesh, h, heads, dtype="float64", sequence_parallel=sp, seed=7)
    y = block(tpsim.distribute(x, mesh, [Shard(0) if sp else Replicate()]))
    out[sp], meshes[sp] = y, mesh
    block.backprop(tpsim.distribute(np.ones_like(x), mesh, y.placements))
    tables[sp] = comm_table(block)
print("output placements:", out[False].placements, "without SP,", out[True].placements, "with SP")
print("largest difference between the outputs:", np.abs(out[False].full() - out[True].full()).max())
print(format_comm_table([r for r in tables[False] if r.direction == "forward"], "Forward, no SP"))
print(format_comm_table([r for r in tables[True] if r.direction == "forward"], "Forward, SP"))

# %% [markdown]
# ## 3. The rule
#
# Per layer and per pass, for an activation of s·b·h values of `B` bytes over t ranks (ring algorithms):
#
# | forward                | collectives                         | bytes sent per device            |
# |------------------------|-------------------------------------|----------------------------------|
# | TP                     | 2 all-reduces                       | 2 · 2(t-1)/t · sbhB              |
# | TP + SP                | 2 all-gathers + 2 reduce-scatters   | 4 · (t-1)/t · sbhB: **the same** |
#
# In the backward pass the conjugates run (an all-gather's backward is a reduce-scatter and vice versa).
# Megatron also **all-gathers the input again** before each column-parallel linear's weight gradient,
# rather than keeping the gathered copy (it would cost the memory SP saves); tpsim does the same.
# That adds one all-gather per column-parallel linear, and the LayerNorms' weights, now seen by only
# part of the sequence on each rank, need one small all-reduce of their gradients.  The trace:

# %%
for sp in (False, True):
    per_pass = {}
    for r in tables[sp]:
        d = per_pass.setdefault(r.direction, {"count": 0, "sent": 0.0})
        d["count"] += r.count
        d["sent"] += r.sent_per_device
    parts = [f"{k}: {v['count']} collectives, {fmt_bytes(v['sent'])} sent per device"
             for k, v in per_pass.items()]
    print(f"{'SP' if sp else 'no SP':6s}", "; ".join(parts))
unit = s * b * h * 8 * (t - 1) / t
fw_no, fw_sp = (sum(r.sent_per_device for r in tables[sp] if r.direction == "forward")
                for sp in (False, True))
display(Markdown(
    f"Forward: {fmt_bytes(fw_no)} without SP and {fmt_bytes(fw_sp)} with it; "
    f"4 · (t-1)/t · s·b·h·8 B = {fmt_bytes(4 * unit)}."
))

# %% [markdown]
# Backward is where SP sends more.  The backward collectives with SP, by what they are for, in units of
# one all-gather of the activation, (t-1)/t · s·b·h·B bytes per device:

# %%
act = s * b * h * 8  # one activation, float64
unit = (t - 1) / t * act  # bytes one device sends in an all-gather of it
gathers_fw = {r.module for r in tables[True] if r.direction == "forward" and r.collective == "all_gather"}
back = {sp: [r for r in tables[sp] if r.direction == "backward"] for sp in (False, True)}


def purpose(r) -> str:
    if r.nbytes / r.count < act / t:
        return "LayerNorm weight gradients (small)"
    if r.collective == "all_gather" and r.module in gathers_fw:  # this module gathered in forward too
        return "re-gather of the SP input for the weight gradient"
    return "conjugate of a forward collective"


units = {}
rows = []
for r in back[True]:
    units[purpose(r)] = units.get(purpose(r), 0) + r.sent_per_device / unit
    rows.append((r.module, r.collective, purpose(r), f"{r.sent_per_device / unit:.2f}"))
print(table(rows, ("module", "collective", "for", "units"), "backward with SP"))
no_sp = sum(r.sent_per_device for r in back[False]) / unit
print(f"without SP: {no_sp:.2f} units (2 all-reduces of 2 units each)")
for kind, u in units.items():
    print(f"with SP, {kind}: {u:.2f} units")
big = sum(u for k, u in units.items() if not k.startswith("LayerNorm"))
print(f"activation-sized backward bytes, SP / no SP: {big:.2f} / {no_sp:.2f} = {big / no_sp:.2f}")

# %% [markdown]
# The conjugates alone would send what the two all-reduces send (a reduce-scatter and an all-gather
# are each half an all-reduce).  The extra half comes from the **re-gathers**: the weight gradient of a
# column-parallel linear, $dW = dy^\top x$, needs the whole sequence of its input $x$, which SP keeps
# split by sequence.  Megatron does not keep the gathered $x$ from the forward pass (that copy is exactly
# the memory SP saves); it all-gathers $x$ again in backward, once for `query_key_value` and once for
# `fc1`: two more all-gathers per layer, so 4 + 2 = 6 units against 4.  Megatron overlaps them with
# the input-gradient GEMM, so they cost bytes but little time on a real GPU.

# %% [markdown]
# ## 4. Activation memory
#
# What SP buys is memory.  Korthikanti et al. count the bytes a layer keeps for its backward pass
# (16-bit activations, dropout on, a heads of size h/a):
#
# - no parallelism: `sbh (34 + 5as/h)`
# - TP over t: `sbh (10 + 24/t + 5as/(ht))`: the 10 is what stays replicated (LayerNorm inputs,
#   dropout masks and outputs, the inputs of the column-parallel GEMMs)
# - TP + SP: `sbh (34 + 5as/h) / t`: everything is split
#
# tpsim's layers save the same arrays, so the ledger of a shape-only layer can be held against the
# formula.  One GPT-3 175B layer (s = 2048, b = 1, h = 12288, a = 96, bfloat16):

# %%
cfg = PRESETS["gpt3-175b"]


def layer_activations(cfg, t, sp):
    """Bytes of activations one device keeps after a shape-only forward of one layer."""
    mesh = tpsim.Mesh(t)
    block = TransformerBlock(mesh, cfg.hidden, cfg.num_heads, cfg.ffn, dropout=0.1, sequence_parallel=sp,
                             init=None, dtype=cfg.dtype)
    shape = (cfg.seq_len, cfg.micro_batch, cfg.hidden)
    block(tpsim.distribute(meta(shape, cfg.dtype), mesh, [Shard(0) if sp else Replicate()]))
    return mesh.devices[0].in_use["activations"]


ln_stats = lambda t, sp: 2 * 2 * 4 * cfg.seq_len * cfg.micro_batch // (t if sp else 1)  # noqa: E731
print(f"{'t':>2} {'SP':>3} {'measured':>11} {'formula':>11} {'measured - formula':>19}")
rows = []
for t in (1, 2, 4, 8):
    for sp in ((False, True) if t > 1 else (False,)):
        got, want = layer_activations(cfg, t, sp), korthikanti_activation_bytes(cfg, t, sp)
        rows.append((t, sp, got, want))
        print(f"{t:>2} {'yes' if sp else 'no':>3} {fmt_bytes(got):>11} {fmt_bytes(want):>11} "
              f"{got - want:>17.0f} B")
assert all(got - want == ln_stats(t, sp) for t, sp, got, want in rows)

# %% [markdown]
# The measured bytes exceed the formula by exactly the LayerNorm statistics: tpsim keeps each row's mean
# and reciprocal standard deviation in float32 (2 LayerNorms × 2 × 4 bytes per row), as apex's fused
# LayerNorm does; the paper does not count them.  At t = 8 SP cuts a layer's activations as follows:

# %%
t8 = {sp: got for t, sp, got, _ in rows if t == 8}
display(Markdown(
    f"At t = 8, one layer keeps {fmt_bytes(t8[False])} without SP and {fmt_bytes(t8[True])} with it "
    f"(**{t8[False] / t8[True]:.2f}×** less); over GPT-3's {cfg.num_layers} layers that is "
    f"{fmt_bytes(cfg.num_layers * t8[False])} against {fmt_bytes(cfg.num_layers * t8[True])} per device."
))

# %% [markdown]
# ## 5. The cost in seconds: GPT-3 1.3B on one node of 8 H100s
#
# `analyse` runs a whole training step shape-only (24 layers, embedding, loss) and reads time and memory
# off the trace and the devices.  The time model runs compute and communication one after the other on
# each device, with no overlap (Megatron overlaps some backward communication), so these times are an
# upper bound.

# %%
runs = {sp: analyse("gpt3-1.3b", tp=8, sp=sp) for sp in (False, True)}
print(f"{'':24s} {'no SP':>12} {'SP':>12}")
for key, get, fmt in (
    ("activations per device", lambda r: r["memory"]["activations"], fmt_bytes),
    ("peak memory per device", lambda r: r["memory"]["peak"], fmt_bytes),
    ("bytes sent, forward", lambda r: r["bytes_sent"]["forward"], fmt_bytes),
    ("bytes sent, backward", lambda r: r["bytes_sent"]["backward"], fmt_bytes),
    ("time: forward", lambda r: r["time"]["forward"], fmt_time),
    ("time: backward", lambda r: r["time"]["backward"], fmt_time),
    ("time: compute", lambda r: r["time"]["compute"], fmt_time),
    ("time: communication", lambda r: r["time"]["comm"], fmt_time),
    ("time: step", lambda r: r["time"]["step"], fmt_time),
):
    print(f"{key:24s} {fmt(get(runs[False])):>12} {fmt(get(runs[True])):>12}")
print("times: compute and links at datasheet peak, no overlap")

# %%
no, yes = runs[False], runs[True]
display(Markdown(
    f"SP saves {fmt_bytes(no['memory']['activations'] - yes['memory']['activations'])} of activations per "
    f"device ({1 - yes['memory']['activations'] / no['memory']['activations']:.0%}).  Its forward pass is "
    f"faster ({fmt_time(no['time']['forward'])} → {fmt_time(yes['time']['forward'])}): the LayerNorms and "
    f"dropouts now run on s/t rows.  Its backward pass sends "
    f"{yes['bytes_sent']['backward'] / no['bytes_sent']['backward']:.2f}× the bytes (the re-gathered "
    f"inputs), which Megatron hides behind the weight-gradient GEMMs and this model does not."
))

# %% [markdown]
# The memory of each device after the SP step, by category, from the devices' own ledgers (a small
# layer, so the bars are easy to read):

# %%
viz.memory(meshes[True]);

# %% [markdown]
# ## Summary
#
# - An all-reduce is a reduce-scatter then an all-gather, with the same bytes.  SP runs the LayerNorm,
#   dropout and residual **between** the two halves, on s/t rows of the sequence.
# - Forward: 2 all-reduces per layer become 2 reduce-scatters + 2 all-gathers: **the same bytes**.
#   Backward: the conjugates (the same bytes again), plus a re-gather of the sequence-split input before
#   each column-parallel weight gradient: 1.5× the bytes, which Megatron overlaps with computation.
# - Activations per layer go from `sbh (10 + 24/t + 5as/(ht))` to `sbh (34 + 5as/h) / t`: nothing is
#   replicated any more.  tpsim's ledger matches the formula up to the LayerNorm statistics.
#
# ## Exercises

# %%
from tpsim.exercises import lesson07 as ex

ex.sp_forward_bytes

# %%
ex.sp_forward_bytes()

# %%
ex.sp_activations

# %%
ex.sp_activations()

# %%
ex.row_parallel_collective

# %%
ex.row_parallel_collective()  # your prediction here, then run: ex.row_parallel_collective.run()
