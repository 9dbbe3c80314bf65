"""Lesson 8 exercises: links, meshes and where the bytes go, measured on the simulator.

    8.1 pcie_allreduce_time   a ring all-reduce on a PCIe 4.0 server, in the alpha-beta model
    8.2 tp_inside_node        which 2-D mesh keeps each TP group inside one node
    8.3 nic_bytes             bytes one GPU sends through its NIC in the DP gradient all-reduce
"""

from __future__ import annotations

import tpsim
from tpsim import presets
from tpsim.exercises.core import Exercise, Measured, Prediction

P, S = 8, 64 << 20  # 8.1: 64 MiB over 8 GPUs
GPUS_PER_NODE, NODES = 8, 2
GRAD_SHARD = 64 << 20  # 8.3: each GPU's shard of the gradients
LAYOUTS = {"(2, 8) dp x tp": ((2, 8), ("dp", "tp")), "(8, 2) tp x dp": ((8, 2), ("tp", "dp"))}


def _pcie_allreduce_time() -> Measured:
    topo = presets.pcie(P, gen=4)
    mesh = tpsim.Mesh(P, topology=topo)
    tpsim.all_reduce([tpsim.meta((S // 2,), "bfloat16")] * P, mesh, algorithm="ring")
    c = mesh.trace.collectives[0]
    path = topo.path(0, 1)
    alpha, beta = sum(link.alpha for link in path), min(link.bandwidth for link in path)
    nvlink = tpsim.Mesh(P, topology=presets.nvlink_node(P))
    tpsim.all_reduce([tpsim.meta((S // 2,), "bfloat16")] * P, nvlink, algorithm="ring")
    return Measured(
        c.time,
        f"The ring ran {c.num_steps} steps; each moves one S/p = {S // P} B chunk per GPU at alpha = "
        f"{alpha * 1e6:g} us and {beta / 1e9:g} GB/s: 2 (p-1) (alpha + S/(p beta)) = {c.time * 1e3:.4g} ms "
        "(answers within 1% are accepted).",
        traps=((nvlink.trace.collectives[0].time, "the time on an NVLink node"),
               (S / beta, "S / beta: one whole buffer over one link, not the ring's 2 (p-1)/p S")),
    )


def _tp_inside_node() -> Measured:
    topo = presets.multi_node(NODES, GPUS_PER_NODE)
    inside = []
    for name, (shape, names) in LAYOUTS.items():
        groups = tpsim.Mesh(shape, names=names, topology=topo).groups("tp")
        if all(len({d // GPUS_PER_NODE for d in g}) == 1 for g in groups):
            inside.append((name, shape, names, groups))
    ((name, shape, names, groups),) = inside
    return Measured(
        name,
        f"Mesh({shape}, names={names}) gives the TP groups {groups[0]} and {groups[1]}: "
        f"GPU d sits on node d // {GPUS_PER_NODE}, so each group is one node.",
    )


def _nic_bytes() -> Measured:
    topo = presets.multi_node(NODES, GPUS_PER_NODE)
    mesh = tpsim.Mesh((NODES, GPUS_PER_NODE), names=("dp", "tp"), topology=topo)
    tpsim.all_reduce([tpsim.meta((GRAD_SHARD // 2,), "bfloat16")] * mesh.size, mesh, mesh_dim="dp")
    (sent,) = {r["bytes"] for r in mesh.trace.per_link() if r["link"].startswith("nic-out")}
    return Measured(
        sent,
        f"Each DP group is a GPU and its twin on the other node (p = {NODES}); a ring all-reduce sends "
        f"2 (p-1)/p S = {sent} B per GPU, all of it through the GPU's NIC (link nic-out).",
        traps=(
            (2 * GRAD_SHARD, "2 S: the ring's 2 (p-1)/p is 1 for p = 2"),
            (GRAD_SHARD * GPUS_PER_NODE, "a whole node's gradients; each GPU has its own NIC"),
        ),
        trace="\n".join(f"{r['link']:12s} {r['bytes']:>12,} B" for r in mesh.trace.per_link()
                        if r["link"].startswith("nic")),
    )


pcie_allreduce_time = Exercise(
    "8.1",
    f"A ring all-reduce of S = 64 MiB (bfloat16) on {P} GPUs of a PCIe 4.0 server "
    f"(presets.pcie({P}, gen=4)).  "
    "How long does it take in tpsim's alpha-beta model?",
    measure=_pcie_allreduce_time,
    unit="seconds",
    rel_tol=0.01,
    hint='a ring all-reduce takes 2(p-1) steps of one latency plus S/p over the PCIe link',
)
tp_inside_node = Exercise(
    "8.2",
    f"{NODES} nodes of {GPUS_PER_NODE} GPUs (presets.multi_node({NODES}, {GPUS_PER_NODE})).  "
    "Which mesh keeps "
    "every TP group inside one node?",
    measure=_tp_inside_node,
    kind="choice",
    choices=tuple(LAYOUTS),
    hint=(
        "Mesh names are listed slowest-varying first: the last dim groups neighbouring ranks, which share"
        " a node"
    ),
)
nic_bytes = Prediction(
    "8.3",
    "Predict, then run: "
    f"On Mesh(({NODES}, {GPUS_PER_NODE}), names=('dp', 'tp')) over "
    f"presets.multi_node({NODES}, {GPUS_PER_NODE}), "
    "each GPU holds a 64 MiB shard of the gradients and all-reduces it along 'dp'.  How many bytes does one "
    "GPU send through its NIC?",
    measure=_nic_bytes,
    unit="bytes",
    hint="along 'dp' each group has one GPU per node, so every byte the ring sends crosses a NIC",
)
