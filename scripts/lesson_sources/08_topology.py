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
import dataclasses

import numpy as np
from IPython.display import Markdown, display

import tpsim
from tpsim import meta, presets, viz
from tpsim.nn.config import PRESETS
from tpsim.nodes import NIC_ASSUMED, NODES, PCIE_MEASURED
from tpsim.plan import Layout
from tpsim.plan.assumptions import describe, sources
from tpsim.plan.cluster import from_node
from tpsim.plan.iteration import iteration
from tpsim.plan.memory_train import GRAD_BYTES, stage_parameters
from tpsim.report import fmt_bytes, fmt_rate, fmt_time

# %% [markdown]
# ## 1. One transfer on three kinds of link
#
# In the α-β model a lone transfer of n bytes takes `α + n / β`: a fixed latency, then the bytes at the
# link's bandwidth.  Send 1 KiB and 16 MiB from one GPU to another over NVLink (H100), PCIe 4.0 and
# InfiniBand NDR (two nodes, one GPU each), at the datasheet rate and at the rate software reaches
# (tpsim.nodes: a published measurement where there is one, else a stated assumption):

# %%
links = {  # name: (datasheet topology, achievable topology, where the achievable rate comes from)
    "NVLink (H100)": (presets.nvlink_node(2), presets.nvlink_node(2, achievable=True),
                      NODES["dgx-h100"].link.achievable_source),
    "PCIe 4.0": (presets.pcie(2, gen=4), presets.preset("pcie4", 2, achievable=True), PCIE_MEASURED[4]),
    "InfiniBand NDR": (presets.multi_node(nodes=2, gpus_per_node=1),
                       presets.multi_node(nodes=2, gpus_per_node=1, achievable=True), NIC_ASSUMED),
}


def one_transfer(topo, n: int) -> float:
    """Seconds of one n-byte transfer 0 -> 1, simulated; checked against α + n / β."""
    path = topo.path(0, 1)
    alpha, beta = sum(link.alpha for link in path), min(link.bandwidth for link in path)
    mesh = tpsim.Mesh(2, topology=topo)
    tpsim.broadcast([np.zeros(n, np.uint8), None], mesh, algorithm="direct")  # one transfer 0 -> 1
    t = mesh.trace.collectives[0].time
    assert np.isclose(t, alpha + n / beta)  # the simulator is the formula here
    return t


print("one transfer, α-β model, at datasheet bandwidth (nominal) and at achievable bandwidth")
print(f"{'link':16s} {'alpha':>8} {'nominal β':>11} {'1 KiB':>9} {'16 MiB':>9} {'achievable β':>13} "
      f"{'16 MiB':>9}")
for name, (topo, real, _) in links.items():
    alpha, beta = sum(lk.alpha for lk in topo.path(0, 1)), min(lk.bandwidth for lk in topo.path(0, 1))
    real_beta = min(lk.bandwidth for lk in real.path(0, 1))
    small, big = one_transfer(topo, 1 << 10), one_transfer(topo, 16 << 20)
    big_real = one_transfer(real, 16 << 20)
    print(f"{name:16s} {fmt_time(alpha):>8} {fmt_rate(beta):>11} {fmt_time(small):>9} {fmt_time(big):>9} "
          f"{fmt_rate(real_beta):>13} {fmt_time(big_real):>9}")
for name, (topo, _, achieved) in links.items():
    print(f"  {name}: nominal: {topo.source}\n    achievable: {achieved}")

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
systems = [  # name, topology at datasheet rates, the same at achievable rates
    ("NVLink node (8 x H100)", presets.nvlink_node(8), presets.nvlink_node(8, achievable=True)),
    ("PCIe 4.0 server (8 GPUs)", presets.pcie(8, gen=4), presets.preset("pcie4", 8, achievable=True)),
    ("2 nodes over InfiniBand (16)", presets.multi_node(2, 8), presets.multi_node(2, 8, achievable=True)),
]


def ring_all_reduce(topo):
    mesh = tpsim.Mesh(topo.num_devices, topology=topo)
    tpsim.all_reduce([meta((S // 2,), "bfloat16")] * mesh.size, mesh)
    return mesh.trace.collectives[0]


print("64 MiB ring all-reduce, α-β model at datasheet bandwidth (nominal); last column at achievable rates")
print(f"{'system':30s} {'time':>9} {'algbw':>11} {'busbw':>11} {'achievable':>11}")
allreduce = {}
for name, topo, real in systems:
    c = allreduce[name] = ring_all_reduce(topo)
    print(f"{name:30s} {fmt_time(c.time):>9} {fmt_rate(c.algbw):>11} {fmt_rate(c.busbw):>11} "
          f"{fmt_time(ring_all_reduce(real).time):>11}")

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


def every_rail(topo) -> tuple[float, int]:
    """(seconds, NICs sending) of RS inside nodes, AR across them (one pair per NIC), AG inside nodes."""
    rails = tpsim.Mesh((2, 8), names=("node", "gpu"), topology=topo)
    pieces = tpsim.reduce_scatter([meta((S // 2,), "bfloat16")] * 16, rails, mesh_dim="gpu")  # NVLink
    pieces = tpsim.all_reduce(pieces, rails, mesh_dim="node")  # across nodes: 8 pairs, 8 NICs each way
    tpsim.all_gather(pieces, rails, mesh_dim="gpu")  # NVLink
    return sum(c.time for c in rails.trace.collectives), nics_used(rails)


ring_mesh = tpsim.Mesh(16, topology=two_nodes)
tpsim.all_reduce([meta((S // 2,), "bfloat16")] * 16, ring_mesh)
one_ring = ring_mesh.trace.collectives[0].time
all_rails, rails_nics = every_rail(two_nodes)
print("α-β model at datasheet peak link rates (nominal)")
print(f"one ring over 16 GPUs:         {fmt_time(one_ring):>9}, NICs sending: {nics_used(ring_mesh)} of 16")
print(f"every rail (RS, AR x 8, AG):   {fmt_time(all_rails):>9}, NICs sending: {rails_nics} of 16")
print(f"the single ring costs {one_ring / all_rails:.1f}x the all-rails time (α-β model, datasheet peak)")
assert rails_nics == 16 and nics_used(ring_mesh) == 2
dgx = NODES["dgx-h100"]
for achievable in (False, True):
    cluster = from_node(dgx, achievable=achievable)
    closed = cluster.all_reduce(16, 1, S)  # tpsim.plan.cluster: a ring whose node crossings share all NICs
    simulated = every_rail(presets.multi_node(2, 8, achievable=achievable))[0]
    kind = "achievable" if achievable else "nominal"
    print(f"{kind:10s} links: every rail simulated {fmt_time(simulated)}, "
          f"the cluster model's closed form {fmt_time(closed)} ({closed / simulated - 1:+.1%})")

# %% [markdown]
# The time model of `tpsim.plan.iteration` (used below and in lesson 9) prices a ring that leaves a node
# this way: its crossings share **all** of the node's NICs (`tpsim.plan.cluster`), and its closed form agrees
# with the simulated all-rails schedule to the percent printed above.

# %% [markdown]
# So the single-ring figure is what one ring costs, not what NCCL would get on this cluster.  From here on,
# a group that spans nodes runs per rail (simulated) or is priced by the cluster model (closed form), so every
# NIC of a node carries its share.
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
# makes the TP groups `0, 2, ..., 14` and `1, 3, ..., 15`, each spread over both nodes, four GPUs on each.
# Run one TP all-reduce of a GPT-3 175B activation (s·b·h = 2048 × 1 × 12288 in bfloat16, 48 MiB) on each.
# The spread groups run it two ways: one ring per group, and per rail, on the same GPUs seen as a 3-D mesh
# `("node", "tp_local", "dp") = (2, 4, 2)` (reduce-scatter over the group's 4 GPUs in a node, all-reduce with
# the twin on the other node, all-gather):

# %%
cluster = presets.multi_node(2, 8)
activation = meta((2048 * 1 * 12288,), "bfloat16")
layouts = {"TP inside nodes": ((2, 8), ("dp", "tp")), "TP across nodes": ((8, 2), ("tp", "dp"))}
tp_meshes = {}


def nic_bytes(mesh) -> int:
    return sum(r["bytes"] for r in mesh.trace.per_link() if r["link"].startswith("nic-out"))


print("one TP all-reduce of 48 MiB, α-β model at datasheet peak link rates (nominal)")
for name, (shape, names) in layouts.items():
    mesh = tpsim.Mesh(shape, names=names, topology=cluster)
    tpsim.all_reduce([activation] * 16, mesh, mesh_dim="tp")
    tp_meshes[name] = mesh
    t = mesh.trace.collectives[0].time
    print(f"{name + ', one ring':27s} groups {mesh.groups('tp')[0]}: {fmt_time(t)}, "
          f"{fmt_bytes(nic_bytes(mesh))} through {nics_used(mesh)} of 16 NICs")
rails = tpsim.Mesh((2, 4, 2), names=("node", "tp_local", "dp"), topology=cluster)
even = sorted(d for group in rails.groups("tp_local") if group[0] % 2 == 0 for d in group)
assert even == list(tp_meshes["TP across nodes"].groups("tp")[0])  # the same GPUs as the spread TP group
pieces = tpsim.reduce_scatter([activation] * 16, rails, mesh_dim="tp_local")  # NVLink, 4 GPUs
pieces = tpsim.all_reduce(pieces, rails, mesh_dim="node")  # 8 pairs across the nodes, one per NIC
tpsim.all_gather(pieces, rails, mesh_dim="tp_local")  # NVLink
rails_time = sum(c.time for c in rails.trace.collectives)
print(f"{'TP across nodes, per rail':27s} the same groups: {fmt_time(rails_time)}, "
      f"{fmt_bytes(nic_bytes(rails))} "
      f"through {nics_used(rails)} of 16 NICs")
assert nics_used(rails) == 16
inside, across = (tp_meshes[k].trace.collectives[0].time for k in layouts)
display(Markdown(
    f"The same all-reduce is **{rails_time / inside:.1f}×** slower when its group leaves the node, even "
    f"with "
    f"every NIC carrying a share (per rail, {nics_used(rails)} of 16 NICs).  One ring per group would use "
    f"{nics_used(tp_meshes['TP across nodes'])} NICs and take {across / inside:.1f}× as long: that figure "
    f"overstates the cross-node cost {across / rails_time:.1f}×."
))

# %% [markdown]
# The links the single rings used: a few NIC links (`nic-out*`, `nic-in*`) carry as much as the NVLink ports
# but at a ninth of the bandwidth, and every step of the ring waits for them.  Per rail, every NIC carries a
# share:

# %%
viz.link_load(tp_meshes["TP across nodes"]);

# %%
viz.link_load(rails);

# %% [markdown]
# TP runs four such all-reduces per layer and pass, on the critical path: nothing else can start until they
# end.  Here is a whole GPT-3 175B training iteration (96 layers, 8 micro-batches of 1 sequence) priced by
# `tpsim.plan.iteration`, with TP = 8 in one DGX H100, with TP = 16 over two DGX H100s (the rings' node
# crossings share all 8 NICs of each node), and, to separate the degree from the wiring, TP = 16 on a
# hypothetical 16-GPU NVLink domain.  Each row is priced twice: at the datasheet peak and with the H100's
# realistic GEMM and memory efficiency (`tpsim.efficiency`); every line below the table names what it assumes.

# %%
cfg = PRESETS["gpt3-175b"]
dgx_h100 = from_node(NODES["dgx-h100"])
cases = {
    "TP 8, one DGX H100": (8, dgx_h100),
    "TP 16, two DGX H100 (IB)": (16, dgx_h100),
    "TP 16, 16-GPU NVLink": (16, dataclasses.replace(
        dgx_h100, gpus_per_node=16, name="hypothetical 16-GPU NVSwitch domain, DGX H100 figures")),
}
run = dict(global_batch=8, micro_batch=1, recompute="none", kernels="fused")
steps = {name: {mode: iteration(cfg, Layout(tp=tp), cluster=cl, mode=mode, **run)
                for mode in ("peak", "realistic")} for name, (tp, cl) in cases.items()}
print(f"{'':25s} {'mode':9s} {'iteration':>9} {'compute':>8} {'TP comm':>8} {'optimizer':>9} {'MFU':>6}")
for name, by_mode in steps.items():
    for mode, r in by_mode.items():
        tm = r["time"]
        print(f"{name:25s} {mode:9s} {fmt_time(tm['iteration']):>9} {fmt_time(tm['compute']):>8} "
              f"{fmt_time(tm['tp_comm']):>8} {fmt_time(tm['optimizer']):>9} {r['mfu']:>6.1%}")
print("assumptions:")
for name, (_, cl) in cases.items():
    print(f"  {name}: {describe(steps[name]['realistic'], cl)}")
print("  peak rows: compute at datasheet peak; the realistic rows' efficiency and the cluster's figures:")
for line in sources("h100", dgx_h100):
    print(f"    {line}")

# %% [markdown]
# Memory per GPU, from `tpsim.plan.memory_train`: bf16 weights and gradients, mixed-precision Adam's fp32
# master copy, m and v (16 B per parameter in all, ZeRO-1 off: nothing else shares the optimizer state here),
# and the activations of one micro-batch, against the H100's memory:

# %%
print(f"{'':25s} {'weights':>10} {'grads':>10} {'optimizer':>10} {'activations':>12} {'total':>11} "
      f"{'of':>10} {'fits':>5}")
for name, by_mode in steps.items():
    mem = by_mode["realistic"]["memory"]
    print(f"{name:25s} {fmt_bytes(mem['weights']):>10} {fmt_bytes(mem['grads']):>10} "
          f"{fmt_bytes(mem['optimizer']):>10} {fmt_bytes(mem['activations']):>12} "
          f"{fmt_bytes(mem['total']):>11} "
          f"{fmt_bytes(mem['capacity']):>10} {mem['fits']!s:>5}")
print("memory: 16 B per parameter (bf16 weights 2 + grads 2, fp32 master + Adam m, v 12), ZeRO-1 off; "
      "recompute none")

# %%
a, b2, c = (steps[name]["realistic"] for name in cases)
ring_cluster = dataclasses.replace(dgx_h100, nics=1, name="one NIC per node: a single ring's crossing")
one_ring_r = iteration(cfg, Layout(tp=16), cluster=ring_cluster, mode="realistic", **run)
mem_a, mem_b = a["memory"], b2["memory"]
no_adam = {k: m["weights"] + m["grads"] + m["activations"] for k, m in (("a", mem_a), ("b", mem_b))}
display(Markdown(
    f"Weights, gradients and activations alone: TP = 8 needs {fmt_bytes(no_adam['a'])} of an H100's "
    f"{fmt_bytes(mem_a['capacity'])}, TP = 16 {fmt_bytes(no_adam['b'])}"
    f"{' (which would fit)' if no_adam['b'] <= mem_b['capacity'] else ''}.  "
    f"But training also keeps Adam's state: with mixed precision 16 B per parameter (bf16 weights and "
    f"gradients, fp32 master copy, m and v), {fmt_bytes(mem_b['optimizer'])} more per GPU at TP = 16, so it "
    f"{'fits' if mem_b['fits'] else '**does not fit** either'} ({fmt_bytes(mem_b['total'])}).  And across "
    f"InfiniBand, with every NIC in use, its TP communication grows from {fmt_time(a['time']['tp_comm'])} to "
    f"{fmt_time(b2['time']['tp_comm'])} per iteration (realistic mode), so twice the GPUs lift the iteration "
    f"only {a['time']['iteration'] / b2['time']['iteration']:.2f}× and each GPU's MFU falls from "
    f"{a['mfu']:.1%} to {b2['mfu']:.1%}; on NVLink the same TP = 16 would communicate for "
    f"{fmt_time(c['time']['tp_comm'])} (MFU {c['mfu']:.1%}).  Through one NIC per node (a single ring), the "
    f"communication would be {fmt_time(one_ring_r['time']['tp_comm'])}, "
    f"{one_ring_r['time']['tp_comm'] / b2['time']['tp_comm']:.1f}× too much.  So Megatron keeps TP inside a "
    "node and adds the other GPUs another way: data or pipeline parallelism, which also divide the Adam "
    "state (lesson 9)."
))
assert not mem_b["fits"]  # the sentence above says so, and lesson 9 builds on it

# %% [markdown]
# ## 4. A 2-D mesh: TP × DP
#
# The usual answer on two nodes: TP = 8 inside each node, and **data parallelism** (DP) across them.  Each
# node holds a full copy of the model, split 8 ways; the two copies see different data, and after the
# backward pass each GPU all-reduces its shard of the gradients with its twin on the other node.  On the
# mesh `("dp", "tp") = (2, 8)`: TP collectives run along `"tp"` (inside nodes), DP collectives along `"dp"`
# (across).  Here, one TP all-reduce of a GPT-3 1.3B activation and the DP all-reduce of each GPU's shard
# of the 1.3B gradients (bf16, 2 B per parameter of `tpsim.plan.memory_train`'s count at TP = 8):

# %%
grads = int(GRAD_BYTES * stage_parameters(PRESETS["gpt3-1.3b"], 8, 1))  # bytes of gradients per GPU, TP = 8
mesh = tpsim.Mesh((2, 8), names=("dp", "tp"), topology=presets.multi_node(2, 8))
tpsim.all_reduce([meta((2048 * 2048,), "bfloat16")] * 16, mesh, mesh_dim="tp", label="TP activation")
tpsim.all_reduce([meta((grads // 2,), "bfloat16")] * 16, mesh, mesh_dim="dp", label="DP gradients")
for c in mesh.trace.collectives:
    print(f"{c.label:14s} on {c.mesh_dim}: {c.num_groups} groups of {c.group_size}, "
          f"{fmt_bytes(c.nbytes)} each, {fmt_time(c.time)} (α-β model, datasheet peak link rates)")
dp_closed = dgx_h100.all_reduce(2, 8, grads)  # a ring of 2 at stride 8: the node's 8 pairs share its 8 NICs
print(f"the DP all-reduce in the cluster model's closed form: {fmt_time(dp_closed)} (nominal link rates); "
      f"achievable: {fmt_time(from_node(NODES['dgx-h100'], achievable=True).all_reduce(2, 8, grads))}")
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
#   nodes uses only 2 of their 16 NICs; NCCL's rings per rail (or RS + all-reduce per rail + AG) use all,
#   and so does `tpsim.plan.iteration`'s cluster model.  Even then TP across nodes costs more than inside.
# - A time names its assumptions: datasheet peak or realistic efficiency (and whose figure), nominal or
#   achievable link rates, overlap, recompute, kernels and batch.
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
