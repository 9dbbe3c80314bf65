# %% [markdown]
# # Lesson 8: Topology
#
# So far every mesh sat on one switch with round teaching figures.  Real GPUs are wired in very different
# ways: inside an HGX/DGX node by NVLink through NVSwitch, in a cheaper server by PCIe, and between nodes
# by InfiniBand, one NIC per GPU.  The same collective then takes very different times, and that decides
# where tensor parallelism can go.
#
# tpsim's presets carry datasheet bandwidths and name their source; the latencies are stated assumptions.
# Every number below is computed by the simulator in this notebook.

# %%
import numpy as np
from IPython.display import Markdown, display

import tpsim
from tpsim import meta, presets, viz
from tpsim.nn import analyse
from tpsim.report import fmt_bytes, fmt_rate, fmt_time

# %% [markdown]
# ## 1. One transfer on three kinds of link
#
# In the α-β model a lone transfer of n bytes takes `α + n / β`: a fixed latency, then the bytes at the
# link's bandwidth.  Send 1 KiB and 16 MiB from one GPU to another over NVLink (H100), PCIe 4.0 and
# InfiniBand NDR (two nodes, one GPU each):

# %%
links = {
    "NVLink (H100)": presets.nvlink_node(2),
    "PCIe 4.0": presets.pcie(2, gen=4),
    "InfiniBand NDR": presets.multi_node(nodes=2, gpus_per_node=1),
}
print("one transfer, α-β model at datasheet bandwidth")
print(f"{'link':16s} {'alpha':>8} {'beta':>11} {'1 KiB':>9} {'16 MiB':>9}")
for name, topo in links.items():
    path = topo.path(0, 1)
    alpha, beta = sum(link.alpha for link in path), min(link.bandwidth for link in path)
    times = []
    for n in (1 << 10, 16 << 20):
        mesh = tpsim.Mesh(2, topology=topo)
        tpsim.broadcast([np.zeros(n, np.uint8), None], mesh, algorithm="direct")  # one transfer 0 -> 1
        times.append(mesh.trace.collectives[0].time)
        assert np.isclose(times[-1], alpha + n / beta)  # the simulator is the formula here
    print(f"{name:16s} {fmt_time(alpha):>8} {fmt_rate(beta):>11} {fmt_time(times[0]):>9} "
          f"{fmt_time(times[1]):>9}")
for name, topo in links.items():
    print(f"  {name}: {topo.source}")

# %% [markdown]
# A 1 KiB message costs about the latency whatever the link; a 16 MiB one costs about its bytes over the
# bandwidth.  TP's all-reduces carry whole activations (megabytes), so **bandwidth** decides their time.
#
# ## 2. The same all-reduce on three systems
#
# One 64 MiB all-reduce (bfloat16, ring) on 8 GPUs of an NVLink node and of a PCIe server, and on 16 GPUs
# over two NVLink nodes joined by InfiniBand:

# %%
S = 64 << 20
systems = [
    ("NVLink node (8 x H100)", presets.nvlink_node(8)),
    ("PCIe 4.0 server (8 GPUs)", presets.pcie(8, gen=4)),
    ("2 nodes over InfiniBand (16)", presets.multi_node(2, 8)),
]
print("64 MiB ring all-reduce, α-β model at datasheet bandwidth")
print(f"{'system':30s} {'time':>9} {'algbw':>11} {'busbw':>11}")
allreduce = {}
for name, topo in systems:
    mesh = tpsim.Mesh(topo.num_devices, topology=topo)
    tpsim.all_reduce([meta((S // 2,), "bfloat16")] * mesh.size, mesh)
    c = mesh.trace.collectives[0]
    allreduce[name] = c
    print(f"{name:30s} {fmt_time(c.time):>9} {fmt_rate(c.algbw):>11} {fmt_rate(c.busbw):>11}")

# %% [markdown]
# Bus bandwidth (nccl-tests' `busbw`) factors out the 2(p-1)/p of the ring, so it can be compared with the
# slowest link a ring crosses: 450 GB/s of NVLink, 32 GB/s of PCIe, 50 GB/s of a NIC.  On two nodes the ring
# crosses the node boundary, and **the NIC is the slowest link on the ring**, so the 16-GPU all-reduce runs
# at about InfiniBand speed.
#
# What that row models is **one** ring over all 16 GPUs.  It leaves each node once, so all the cross-node
# traffic goes through 2 of the 16 NICs while the other 14 sit idle.  NCCL does not do that: it builds
# several rings (or trees), one per NIC "rail", so every NIC carries a share.  The same effect, written
# with tpsim's collectives on a 2-D mesh `("node", "gpu")`: reduce-scatter inside each node over NVLink,
# then all-reduce each GPU's piece with its twin on the other node (8 pairs at once, one per NIC), then
# all-gather inside the node:

# %%
two_nodes = presets.multi_node(2, 8)


def nics_used(mesh) -> int:
    return sum(1 for r in mesh.trace.per_link() if r["link"].startswith("nic-out") and r["bytes"] > 0)


ring_mesh = tpsim.Mesh(16, topology=two_nodes)
tpsim.all_reduce([meta((S // 2,), "bfloat16")] * 16, ring_mesh)
rails = tpsim.Mesh((2, 8), names=("node", "gpu"), topology=two_nodes)
pieces = tpsim.reduce_scatter([meta((S // 2,), "bfloat16")] * 16, rails, mesh_dim="gpu")  # NVLink
pieces = tpsim.all_reduce(pieces, rails, mesh_dim="node")  # across nodes: 8 pairs, 8 NICs each way
tpsim.all_gather(pieces, rails, mesh_dim="gpu")  # NVLink
one_ring = ring_mesh.trace.collectives[0].time
all_rails = sum(c.time for c in rails.trace.collectives)
print(f"one ring over 16 GPUs:         {fmt_time(one_ring):>9}, NICs sending: {nics_used(ring_mesh)} of 16")
print(f"every rail (RS, AR x 8, AG):   {fmt_time(all_rails):>9}, NICs sending: {nics_used(rails)} of 16")
print(f"the single ring costs {one_ring / all_rails:.1f}x the all-rails time (α-β model, datasheet peak)")
assert nics_used(rails) == 16 and nics_used(ring_mesh) == 2

# %% [markdown]
# So the single-ring figure is what one ring costs, not what NCCL would get on this cluster.  Below, where a
# TP group spans nodes, tpsim's collectives still run as single rings, and the text says so: those times
# are an **upper bound** on the cross-node cost.
#
# Time against message size on one node, closed form (lines) and simulated (circles); NVLink and PCIe
# are both switched, so the ring and tree closed forms describe them:

# %%
viz.cost_curves("all_reduce", 8, presets.nvlink_node(8), algorithms=["ring", "tree"], measured=True);

# %%
viz.cost_curves("all_reduce", 8, presets.pcie(8, gen=4), algorithms=["ring", "tree"], measured=True);

# %% [markdown]
# ## 3. Why TP stays inside a node
#
# Sixteen GPUs on two nodes can be arranged as a 2-D mesh in two ways.  `Mesh((2, 8), names=("dp", "tp"))`
# makes the 8-GPU TP groups `0..7` and `8..15`, each inside one node.  `Mesh((8, 2), names=("tp", "dp"))`
# makes the TP groups `0, 2, ..., 14` and `1, 3, ..., 15`, each spread over both nodes.  Run one TP
# all-reduce of a GPT-3 175B activation (s·b·h = 2048 × 1 × 12288 in bfloat16, 48 MiB) on each:

# %%
cluster = presets.multi_node(2, 8)
activation = meta((2048 * 1 * 12288,), "bfloat16")
layouts = {"TP inside nodes": ((2, 8), ("dp", "tp")), "TP across nodes": ((8, 2), ("tp", "dp"))}
tp_meshes = {}
for name, (shape, names) in layouts.items():
    mesh = tpsim.Mesh(shape, names=names, topology=cluster)
    tpsim.all_reduce([activation] * 16, mesh, mesh_dim="tp")
    c = mesh.trace.collectives[0]
    nic = sum(r["bytes"] for r in mesh.trace.per_link() if r["link"].startswith("nic-out"))
    tp_meshes[name] = mesh
    print(f"{name:16s} groups {mesh.groups('tp')[0]}: {fmt_time(c.time)}, {fmt_bytes(nic)} through "
          f"{nics_used(mesh)} of 16 NICs")
inside, across = (tp_meshes[k].trace.collectives[0].time for k in layouts)
display(Markdown(
    f"The same all-reduce is **{across / inside:.1f}×** slower when its ring leaves the node (one ring per "
    f"group, so {nics_used(tp_meshes['TP across nodes'])} of the 16 NICs carry it: an upper bound, as above)."
))

# %% [markdown]
# The links it used: in the spread layout, a few NIC links (`nic-out*`, `nic-in*`) carry as much as the
# NVLink ports but at a ninth of the bandwidth, and every step of the ring waits for them.

# %%
viz.link_load(tp_meshes["TP across nodes"]);

# %% [markdown]
# TP runs four such all-reduces per layer and pass, on the critical path: nothing else can start until they
# end.  Here is a whole GPT-3 175B training step (96 layers, shape-only) with TP = 8 in one node, and with
# TP = 16 over two nodes, and, to separate the degree from the wiring, TP = 16 on a hypothetical 16-GPU
# NVLink domain:

# %%
cases = [
    ("TP 8, one NVLink node", 8, None),
    ("TP 16, two nodes (IB)*", 16, "multi-node"),
    ("TP 16, one 16-GPU NVLink", 16, presets.nvlink_node(16)),
]
steps = {}
ADAM_EXTRA = 12  # B/param beyond the bf16 weights and grads: fp32 master copy, m and v (16 B/param in all)
print(f"{'':26s} {'step':>8} {'compute':>8} {'comm':>8} {'peak memory':>12} {'+ Adam':>10} {'fits':>5}")
for name, tp, topo in cases:
    r = analyse("gpt3-175b", tp=tp, topology=topo)
    steps[name] = r
    tm, mem = r["time"], r["memory"]
    adam = ADAM_EXTRA * mem["weights"] // 2  # the ledger's bf16 weights are 2 B per parameter on this device
    r["adam"], r["fits_with_adam"] = adam, mem["peak"] + adam <= mem["capacity"]
    print(f"{name:26s} {fmt_time(tm['step']):>8} {fmt_time(tm['compute']):>8} {fmt_time(tm['comm']):>8} "
          f"{fmt_bytes(mem['peak']):>12} {fmt_bytes(mem['peak'] + adam):>10} {r['fits_with_adam']!s:>5}")
print("times: α-β and compute models at datasheet peak, no overlap; * one ring per TP group (2 of 16 NICs):")
print("  an upper bound on the cross-node communication")

# %%
a, b2, c = (steps[name] for name, _, _ in cases)
display(Markdown(
    f"Weights, gradients and activations alone: TP = 8 needs {fmt_bytes(a['memory']['peak'])} of an H100's "
    f"{fmt_bytes(a['memory']['capacity'])}, TP = 16 {fmt_bytes(b2['memory']['peak'])}.  But training also "
    f"keeps Adam's state: with mixed precision 16 B per parameter (bf16 weights and gradients, fp32 master "
    f"copy, m and v), {fmt_bytes(b2['adam'])} more per GPU at TP = 16, so it "
    f"{'fits' if b2['fits_with_adam'] else '**does not fit** either'} "
    f"({fmt_bytes(b2['memory']['peak'] + b2['adam'])}).  And across InfiniBand its communication grows from "
    f"{fmt_time(a['time']['comm'])} to {fmt_time(b2['time']['comm'])} (single rings: an upper bound), the "
    f"step {b2['time']['step'] / a['time']['step']:.1f}× as long; on NVLink the same TP = 16 would "
    f"communicate for {fmt_time(c['time']['comm'])}.  So Megatron keeps TP inside a node and adds the other "
    "GPUs another way: data or pipeline parallelism, which also divide the Adam state (lesson 9)."
))
assert not b2["fits_with_adam"]  # the sentence above says so, and lesson 9 builds on it

# %% [markdown]
# ## 4. A 2-D mesh: TP × DP
#
# The usual answer on two nodes: TP = 8 inside each node, and **data parallelism** (DP) across them.  Each
# node holds a full copy of the model, split 8 ways; the two copies see different data, and after the
# backward pass each GPU all-reduces its shard of the gradients with its twin on the other node.  On the
# mesh `("dp", "tp") = (2, 8)`: TP collectives run along `"tp"` (inside nodes), DP collectives along `"dp"`
# (across).  Here, one TP all-reduce of a GPT-3 1.3B activation and the DP all-reduce of each GPU's shard
# of the 1.3B gradients, whose size `analyse` reports:

# %%
grads = analyse("gpt3-1.3b", tp=8)["memory"]["grads"]  # bytes of gradients per GPU at TP = 8
mesh = tpsim.Mesh((2, 8), names=("dp", "tp"), topology=presets.multi_node(2, 8))
tpsim.all_reduce([meta((2048 * 2048,), "bfloat16")] * 16, mesh, mesh_dim="tp", label="TP activation")
tpsim.all_reduce([meta((grads // 2,), "bfloat16")] * 16, mesh, mesh_dim="dp", label="DP gradients")
for c in mesh.trace.collectives:
    print(f"{c.label:14s} on {c.mesh_dim}: {c.num_groups} groups of {c.group_size}, "
          f"{fmt_bytes(c.nbytes)} each, {fmt_time(c.time)} (datasheet peak)")
per_kind = {"NVLink": 0, "InfiniBand": 0}
for r in mesh.trace.per_link():
    per_kind["InfiniBand" if r["link"].startswith("nic") else "NVLink"] += r["bytes"]
print("bytes carried:", {k: fmt_bytes(v) for k, v in per_kind.items()})

# %% [markdown]
# The traffic matrix (bytes from each row's GPU to each column's) shows the two kinds of group: each GPU's
# DP twin on the other node (the bright diagonals, 8 apart) and, much fainter, the TP rings inside each node
# (each GPU sends to the next one in its node, the last back to the first).

# %%
m = mesh.trace.traffic_matrix()
display(Markdown(
    f"GPU 0 sends {fmt_bytes(m[0, 8])} to its DP twin, GPU 8, and {fmt_bytes(m[0, 1])} to GPU 1, its "
    f"neighbour in the TP ring ({m[0, 8] / m[0, 1]:.0f}× less).  But the gradients cross the NICs once per "
    "step, while TP's all-reduces of that size run four times per layer for every micro-batch, over NVLink."
))

# %%
viz.traffic_heatmap(mesh);

# %% [markdown]
# ## Summary
#
# - A transfer costs `α + n/β`.  Activations are megabytes, so TP's collectives are **bandwidth-bound**:
#   NVLink (450 GB/s per direction on H100) vs PCIe 4.0 (32 GB/s) vs an InfiniBand NDR NIC (50 GB/s).
# - A ring is as fast as its slowest link: a TP group that spans nodes runs at NIC speed.  One ring over two
#   nodes uses only 2 of their 16 NICs; NCCL's rings per rail (or RS + all-reduce per rail + AG) use all.
# - Count Adam: mixed precision keeps 16 B per parameter, and TP alone cannot spread that far enough.
# - So TP stays inside an NVLink node; DP (or PP) spans nodes, where its traffic is smaller or can overlap.
#   On a mesh `("dp", "tp")`, the order of the names decides which devices form each group.
#
# ## Exercises

# %%
from tpsim.exercises import lesson08 as ex

ex.pcie_allreduce_time

# %%
ex.pcie_allreduce_time()

# %%
ex.tp_inside_node

# %%
ex.tp_inside_node()

# %%
ex.nic_bytes

# %%
ex.nic_bytes()  # your prediction here, then run: ex.nic_bytes.run()
