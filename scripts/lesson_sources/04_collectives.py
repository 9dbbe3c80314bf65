# %% [markdown]
# # Lesson 4: Collectives step by step
#
# Lessons 2 and 3 used two collectives: the all-gather (`S → R`) and the all-reduce (`P → R`). A
# collective is not one magic operation: it is an **algorithm**, a schedule of steps, and in each step
# some devices send pieces ("chunks") of their buffers to others, which either overwrite or add. In
# tpsim a schedule is plain data (`tpsim.build(...)`), and the engine runs it one step at a time,
# counting and timing every byte.
#
# This lesson opens the ring all-reduce, shows that it is a reduce-scatter followed by an all-gather,
# counts its bytes, then meets three other algorithms (tree, recursive halving-doubling, direct) and
# the α-β cost model that says where each one wins.

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

import tpsim
from tpsim import viz
from tpsim.collectives import costs
from tpsim.report import fmt_bytes, fmt_time, table
from tpsim.viz.costs import alpha_bandwidth, simulated_time
from tpsim.viz.style import log_formatter

# %% [markdown]
# ## 1. A ring all-reduce on 4 devices, step by step
#
# Device `d` holds the 8 numbers `10 d + [0, 1, ..., 7]`. The ring cuts each buffer into $p = 4$
# chunks of 2 numbers. `tpsim.stepwise` yields a snapshot before the first step and after each one;
# the table shows, for every device and chunk, **whose** numbers the chunk contains so far, and its
# values.

# %%
p = 4
buffers = [np.arange(8, dtype=np.float32) + 10 * d for d in range(p)]
mesh = tpsim.Mesh(p)
snapshots = list(tpsim.stepwise("all_reduce", buffers, mesh, algorithm="ring"))
for snap in snapshots[:1] + snapshots[p - 1 : p] + snapshots[-1:]:
    print(f"after step {snap.step} ({len(snap.transfers)} transfers this step):")
    viz.print_holdings(snap)

# %% [markdown]
# After $p - 1 = 3$ steps each device holds **one** chunk summed over all four devices (the
# reduce-scatter half); after $2(p-1) = 6$ steps every device holds every summed chunk (the
# all-gather half). Here is the whole run as an animation, arrows for the transfers of each step:

# %%
anim = viz.animate_collective("all_reduce", buffers, tpsim.Mesh(p), algorithm="ring", interval=900)
HTML(viz.to_html(anim))

# %% [markdown]
# ## 2. Ring all-reduce = reduce-scatter + all-gather
#
# The schedule says so: its first $p-1$ steps **reduce** into the receiver's chunk, the last $p-1$
# **copy**. And running a ring reduce-scatter, then a ring all-gather of its output, gives the same
# bits as the ring all-reduce, even on random float32 data where the order of the additions shows:

# %%
schedule = tpsim.build("all_reduce", "ring", p)
print(f"{len(schedule.steps)} steps; the operation of each step:",
      [sorted({t.op for t in s}) for s in schedule.steps])

rng = np.random.default_rng(1)
data = [rng.standard_normal(4096).astype(np.float32) for _ in range(p)]
m = tpsim.Mesh(p)
ar = tpsim.all_reduce(data, m, algorithm="ring")
rs = tpsim.reduce_scatter(data, m, algorithm="ring")  # device j: chunk j of the sum
ag = tpsim.all_gather(rs, m, algorithm="ring")  # every device: all chunks
print("all-reduce == all-gather(reduce-scatter), bit for bit:",
      all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(ar, ag, strict=True)))
print(table([(c.collective, c.num_steps, c.wire_bytes) for c in m.trace.collectives],
            ("collective", "steps", "bytes on links")))

# %% [markdown]
# The bytes add up too: the all-reduce moved exactly what the reduce-scatter and the all-gather moved
# together.
#
# ## 3. Counting the bytes: $2\frac{p-1}{p} S$
#
# In each of the $2(p-1)$ steps every device sends one chunk of $S/p$ bytes. So each device sends
#
# $$ 2(p-1) \cdot \frac{S}{p} = 2\,\frac{p-1}{p}\, S , $$
#
# less than $2S$ however many devices there are. This is optimal: every device must receive
# information from all others about every element and also send its own. The simulator's count
# for a 1 MiB buffer against the formula (for p = 3 and 6 the buffer does not split evenly into p
# chunks, and the larger chunks add a few bytes):

# %%
S = 1 << 20
rows = []
for n in (2, 3, 4, 6, 8, 16):
    mn = tpsim.Mesh(n)
    tpsim.all_reduce([tpsim.meta(S // 4, "float32")] * n, mn, algorithm="ring")  # shape-only
    sent = max(d["sent"] for d in mn.trace.per_device())
    rows.append((n, mn.trace.collectives[-1].num_steps, sent, round(2 * (n - 1) / n * S)))
print(table(rows, ("p", "steps", "sent per device (simulated)", "2(p-1)/p S")))

# %% [markdown]
# **Uneven pieces are padded.** When the pieces of an all-gather (or the chunks of a reduce-scatter)
# are not all the same length, gloo and NCCL send every piece padded to the longest: their
# `all_gather_into_tensor` and `reduce_scatter_tensor` take one size for every rank, and DTensor pads
# the same way. tpsim counts these padded bytes by default, which is what the reference sends;
# `padded=False` runs the unpadded schedule instead. Every count in this lesson uses the default.
# Here, 17 rows of 256 float32 values gathered from 4 devices, pieces of 5, 5, 5 and 2 rows:

# %%
pieces = [np.zeros((n, 256), np.float32) for n in (5, 5, 5, 2)]
sent = {}
for padded in (True, False):
    mp = tpsim.Mesh(4)
    tpsim.all_gather(pieces, mp, algorithm="ring", padded=padded)
    sent[padded] = sum(d["sent"] for d in mp.trace.per_device())
print(f"padded (what gloo and NCCL send): {sent[True]:,} B; unpadded schedule: {sent[False]:,} B; "
      f"padding costs {sent[True] / sent[False] - 1:.1%} more")

# %% [markdown]
# ## 4. Other algorithms
#
# | algorithm | how | steps | bytes sent by the busiest device |
# |---|---|---|---|
# | ring | reduce-scatter round the ring, then all-gather | $2(p-1)$ | $2\frac{p-1}{p}S$ |
# | halving_doubling | recursive halving (exchange half the buffer with the partner at distance $p/2, p/4, \dots$), then recursive doubling | $2\log_2 p$ | $2\frac{p-1}{p}S$ |
# | tree | binomial tree: reduce the whole buffer to rank 0, then broadcast it | $2\lceil\log_2 p\rceil$ | $\lceil\log_2 p\rceil S$ (the root, broadcasting) |
# | direct | every device sends its whole buffer to every other, at once | $1$ | $(p-1)S$ |
#
# (for $p$ a power of two; other $p$ fold the extra ranks in first). The simulator, for $p = 8$ and
# the same 1 MiB:

# %%
rows = []
for algorithm in tpsim.ALGORITHMS["all_reduce"]:
    mn = tpsim.Mesh(8)
    tpsim.all_reduce([tpsim.meta(S // 4, "float32")] * 8, mn, algorithm=algorithm)
    sent = max(d["sent"] for d in mn.trace.per_device())
    rows.append((algorithm, mn.trace.collectives[-1].num_steps, fmt_bytes(sent)))
print(table(rows, ("algorithm", "steps", "max sent per device")))

# %% [markdown]
# The halving-doubling exchange, step by step on 4 devices (partners at distance 2, then 1 while
# halving; at 1, then 2 while doubling):

# %%
anim = viz.animate_collective("all_reduce", buffers, tpsim.Mesh(p), algorithm="halving_doubling",
                              interval=900)
HTML(viz.to_html(anim))

# %% [markdown]
# ## 5. The α-β cost model
#
# A transfer of $n$ bytes over a link takes $\alpha + n/\beta$: a fixed latency α, plus the bytes over
# the bandwidth β. The transfers of a step run at the same time, so a step lasts as long as its
# slowest transfer; transfers that share a link share its bandwidth. On a fully connected network
# (one link per pair) the closed forms are:
#
# $$ T_\text{ring} = 2(p-1)\left(\alpha + \frac{S}{p\beta}\right), \qquad
#    T_\text{hd} = 2\log_2 p\;\alpha + 2\frac{p-1}{p}\frac{S}{\beta}, $$
# $$ T_\text{tree} = 2\lceil\log_2 p\rceil\left(\alpha + \frac{S}{\beta}\right), \qquad
#    T_\text{direct} = \alpha + \frac{S}{\beta} . $$
#
# Small messages are **latency-bound** (count the α's: fewer steps win), large ones
# **bandwidth-bound** (count the bytes). The topology matters as much as the algorithm: in an NVLink
# node every GPU has one port into a switch, so direct's $p - 1$ simultaneous sends share that port
# ($\alpha + (p-1)S/\beta$); on a physical ring only neighbours are linked, so a transfer between
# distant devices crosses, and shares, several links. The simulator times every step on the
# topology itself.
#
# First a network the closed forms describe exactly: fully connected, one link per pair (1 μs,
# 100 GB/s, the numbers of the generic switch below). Lines are the closed forms; circles are the
# engine's runs, and they sit on the lines:

# %%
SIZES = [1 << k for k in range(10, 31, 2)]  # 1 KiB .. 1 GiB
ALPHA, BW, _ = alpha_bandwidth("switch", 8)
full = tpsim.presets.fully_connected(8, ALPHA, BW)
viz.cost_curves("all_reduce", 8, (ALPHA, BW), sizes=SIZES, measured=True);


def sim_over_closed(topology) -> dict[str, float]:
    """Per algorithm, the largest ratio (engine's time on `topology`) / (fully connected closed form)."""
    a, bw, _ = alpha_bandwidth(topology, 8)
    return {alg: max(simulated_time("all_reduce", alg, topology, 8, s) / costs.cost("all_reduce", alg, 8, s, a, bw)
                     for s in SIZES) for alg in tpsim.ALGORITHMS["all_reduce"]}


def simulated_curves(topology):
    """The engine's times on `topology` as coloured lines; the fully connected closed forms (which do not
    describe this topology) as thin grey dashes, only for comparison."""
    a, bw, _ = alpha_bandwidth(topology, 8)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for alg in tpsim.ALGORITHMS["all_reduce"]:
        ax.plot(SIZES, [costs.cost("all_reduce", alg, 8, s, a, bw) for s in SIZES], color="0.6", lw=0.8,
                ls="--", label="fully connected closed form" if alg == "ring" else None)
        ax.plot(SIZES, [simulated_time("all_reduce", alg, topology, 8, s) for s in SIZES], marker="o",
                markersize=3, label=f"{alg}, simulated")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(log_formatter("bytes"))
    ax.yaxis.set_major_formatter(log_formatter("time"))
    ax.set_xlabel("message size S (bytes per rank)")
    ax.set_ylabel("time (α-β model, datasheet peak)")
    ax.set_title(f"all_reduce on 8 devices of {topology.name}: lines are the engine's runs on this topology",
                 fontsize=9)
    ax.legend(fontsize=8)
    return fig


gap = sim_over_closed(full)
print("fully connected, simulated / closed form:", {k: round(v, 3) for k, v in gap.items()})
assert all(abs(v - 1) < 1e-6 for v in gap.values())

# %% [markdown]
# On the NVLink node and the physical ring the closed forms above no longer hold, so the plots below
# draw the engine's own times as the lines (grey dashes: the fully connected formulas, for contrast),
# and print by how much the topology makes each algorithm slower than those formulas say:

# %%
nvlink8 = tpsim.presets.nvlink_node(8)
simulated_curves(nvlink8);
print("NVLink node, at most x the fully connected formula:", {k: round(v, 2) for k, v in sim_over_closed(nvlink8).items()})

# %%
ring8 = tpsim.presets.preset("ring", 8)
simulated_curves(ring8);
print("physical ring, at most x the fully connected formula:", {k: round(v, 2) for k, v in sim_over_closed(ring8).items()})

# %% [markdown]
# Who wins, measured by the engine for $p = 8$ on three topologies: a generic switch (1 μs, 100 GB/s
# per port), the same numbers on a physical ring, and an H100 NVLink node:

# %%
sizes = SIZES
winners = {}
for topo in ("switch", "ring", "nvlink"):
    row = []
    for size in sizes:
        times = {}
        for algorithm in tpsim.ALGORITHMS["all_reduce"]:
            mn = tpsim.Mesh(8, topology=tpsim.presets.preset(topo, 8))
            tpsim.all_reduce([tpsim.meta(size // 4, "float32")] * 8, mn, algorithm=algorithm)
            times[algorithm] = mn.trace.collectives[-1].time
        row.append(min(times, key=times.get))
    winners[topo] = row
print(table([(fmt_bytes(s), *(winners[t][i] for t in winners)) for i, s in enumerate(sizes)],
            ("S", *winners), "fastest all-reduce on 8 devices (α-β model at datasheet peak)"))

# %% [markdown]
# What the table says (the assertions below check each sentence against it, so the text cannot drift
# from the simulator):
#
# - **direct** wins the smallest messages everywhere: one step, one α. Above some size its $p-1$
#   whole-buffer sends cost more than the latencies it saves, and one other algorithm takes over.
# - On a **switch** (the generic one and the NVLink node), that is **halving-doubling**: the same
#   bandwidth term as the ring with $2\log_2 p$ instead of $2(p-1)$ latencies.
# - On a **physical ring**, the **ring** algorithm wins large messages: it only ever talks to
#   neighbours, while halving-doubling's distant partners make their transfers share links.
# - **tree** never wins an all-reduce here: it matches halving-doubling's latency term but sends the
#   whole buffer in every step. Its place is broadcast and reduce (and pipelined trees, which this
#   model does not have, across nodes).

# %%
def after_direct(w):
    """The winners once direct stops winning (direct wins a prefix of the sizes, then never again)."""
    k = next(i for i, a in enumerate(w) if a != "direct")
    return set(w[k:])


assert all(w[0] == "direct" for w in winners.values())
assert after_direct(winners["switch"]) == after_direct(winners["nvlink"]) == {"halving_doubling"}
assert after_direct(winners["ring"]) == {"ring"}
assert "tree" not in {a for w in winners.values() for a in w}
print("every statement above holds for the table")

# %% [markdown]
# ## 6. Seconds on a real node
#
# One all-reduce that tensor parallelism runs in every layer of GPT-3 (2048 tokens × 12288 features
# in bfloat16) on an 8 × H100 NVLink node, per algorithm, with the closed form of a fully connected
# network next to it:

# %%
S = 2048 * 12288 * 2
alpha, beta = tpsim.presets.NVLINK_ALPHA, tpsim.presets.NVLINK["h100"][0]
rows = []
for algorithm in tpsim.ALGORITHMS["all_reduce"]:
    mn = tpsim.Mesh(8, topology=tpsim.presets.nvlink_node(8))
    tpsim.all_reduce([tpsim.meta(S // 2, "bfloat16")] * 8, mn, algorithm=algorithm)
    c = mn.trace.collectives[-1]
    closed = costs.cost("all_reduce", algorithm, 8, S, alpha, beta)
    rows.append((algorithm, fmt_time(c.time), fmt_time(closed), f"{c.busbw / 1e9:.0f} GB/s"))
print(table(rows, ("algorithm", "simulated (NVLink switch)", "closed form (fully connected)", "busbw"),
            f"all-reduce of {fmt_bytes(S)} on 8 x H100 (α-β model at datasheet peak bandwidth)"))

# %% [markdown]
# Only direct differs between the two columns: on the switch its seven sends share one port.
# `busbw` (nccl-tests' bus bandwidth, algbw × $2\frac{p-1}{p}$) approaches the link's 450 GB/s for
# the bandwidth-optimal algorithms: that is how to read an nccl-tests result.
#
# ## Summary
#
# - A collective is a schedule: steps of transfers that overwrite or reduce. Ring all-reduce is a
#   ring reduce-scatter followed by a ring all-gather, bit for bit.
# - Ring all-reduce sends $2\frac{p-1}{p}S$ per device in $2(p-1)$ steps: bandwidth-optimal, but with
#   the most latencies.
# - α-β: small messages count steps, large messages count bytes; the topology decides which links
#   transfers share. Direct wins tiny messages, halving-doubling the rest on a switch, ring on a
#   physical ring; tree does not win an all-reduce.
#
# ## Exercises

# %%
from tpsim.exercises import lesson04 as ex

display(ex.ring_steps)
ex.ring_steps()

# %%
display(ex.ring_bytes)
ex.ring_bytes()  # your prediction here, then run: ex.ring_bytes.run()

# %%
display(ex.fastest_large)
ex.fastest_large()  # one of "ring", "halving_doubling", "tree", "direct"

# %%
display(ex.crossover)
ex.crossover()  # bytes, e.g. "500 KiB"
