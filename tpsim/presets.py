"""Topology presets: each device's real node (tpsim.nodes), and generic shapes for lessons.

    preset("dgx-a100", 16)      two DGX A100 nodes joined by their InfiniBand, as `--device a100` runs
    preset("ring", 8)           a generic shape with round teaching figures, no device's

Bandwidths of real systems are datasheet figures, per direction (a datasheet's "900 GB/s"
NVLink figure is both directions added), or on request the achievable ones (tpsim.nodes says
which are measured and which assumed).  Latencies are modelling assumptions: they are not on any
datasheet, so calibrate them by measurement (save the result with `Topology.save`) before
trusting a small-message prediction.  This module builds on tpsim.topology, never the reverse.

In a switch, a transfer crosses two port links; the presets give each port half of the
end-to-end alpha, so a lone transfer sees `alpha + bytes / bandwidth` whatever the shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from tpsim.errors import TopologyError
from tpsim.nodes import BY_DEVICE, NODES, Node, pcie_bandwidth
from tpsim.topology import (
    HierarchicalRouting,
    Link,
    PairwiseRouting,
    RingRouting,
    Routing,
    SwitchRouting,
    Topology,
)

ALPHA, BANDWIDTH = 1e-6, 100e9  # round teaching figures of the generic shapes

# gpu -> (NVLink bandwidth per direction in bytes/s, where the figure comes from), from its node
NVLINK = {n.device: (n.link.nominal, n.link.nominal_source) for n in NODES.values() if n.nvlink}
NVLINK_ALPHA = 2e-6  # assumption: end-to-end, NVLink hardware latency plus NCCL-like software overhead

# PCIe generation -> x16 bandwidth per direction in bytes/s (PCI-SIG: 16 and 32 GT/s per lane)
PCIE = {4: 32e9, 5: 64e9}
PCIE_ALPHA = 5e-6  # assumption: end-to-end through one PCIe switch, with software overhead

NDR_BANDWIDTH = 50e9  # InfiniBand NDR, 400 Gb/s per port = 50 GB/s per direction
NIC_ALPHA = 5e-6  # assumption: end-to-end across the InfiniBand fabric, with software overhead


def _check_count(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TopologyError(f"{what} is {n!r}; valid: an integer >= 1")
    return n


def _links(names: list[str], alpha: float, bandwidth: float) -> list[Link]:
    return [Link(name, alpha, bandwidth) for name in names]


def _generic_source(alpha: float, bandwidth: float) -> str:
    if (alpha, bandwidth) == (ALPHA, BANDWIDTH):
        return "round teaching figures (alpha 1 us, 100 GB/s per direction), not a real system"
    return (
        f"figures given by the caller (alpha {alpha * 1e6:g} us, {bandwidth / 1e9:g} GB/s), not a real system"
    )


def _uniform(name: str, n: int, routing: Routing, alpha: float, bandwidth: float, source: str) -> Topology:
    n = _check_count(n, "n")
    return Topology(name, n, _links(routing.link_names(n), alpha, bandwidth), routing, source)


def _node_of(gpu: str) -> Node:
    key = str(gpu).lower()
    if key not in NVLINK:
        extra = f" ({key} has no NVLink: its node is {BY_DEVICE[key].name})" if key in BY_DEVICE else ""
        raise TopologyError(f"unknown gpu {gpu!r}; valid: {', '.join(NVLINK)}{extra}")
    return BY_DEVICE[key]


def node_alpha(node: Node) -> float:
    return NVLINK_ALPHA if node.nvlink else PCIE_ALPHA


def fully_connected(n: int, alpha: float = ALPHA, bandwidth: float = BANDWIDTH) -> Topology:
    """Every ordered pair of n devices has its own link: the contention-free ideal.

    The default figures are round teaching numbers, not a real system.
    """
    return _uniform(
        "fully-connected", n, PairwiseRouting(), alpha, bandwidth, _generic_source(alpha, bandwidth)
    )


def ring(n: int, alpha: float = ALPHA, bandwidth: float = BANDWIDTH) -> Topology:
    """A bidirectional ring of n devices, links only between neighbours; alpha is per hop.

    The default figures are round teaching numbers, not a real system.
    """
    return _uniform("ring", n, RingRouting(), alpha, bandwidth, _generic_source(alpha, bandwidth))


def switch(n: int, alpha: float = ALPHA, bandwidth: float = BANDWIDTH) -> Topology:
    """n devices on one non-blocking switch; each port gets alpha / 2, so a transfer sees alpha.

    The default figures are round teaching numbers, not a real system.
    """
    return _uniform("switch", n, SwitchRouting(), alpha / 2, bandwidth, _generic_source(alpha, bandwidth))


def nvlink_node(n: int = 8, gpu: str = "h100", achievable: bool = False) -> Topology:
    """n SXM GPUs of one DGX node on NVSwitch, modelled as one non-blocking switch.

    Bandwidth per GPU per direction, nominal: V100 (DGX-2) 150 GB/s, A100 300, H100 and H200 450,
    half the bidirectional totals on the DGX datasheets (tpsim.nodes; `achievable` takes the
    achievable figure instead).  The 2 us end-to-end latency is an assumption.  More GPUs than
    the node holds model a hypothetical NVSwitch domain with the same per-GPU figures.
    """
    node = _node_of(gpu)
    n = _check_count(n, "n")
    name = node.name if n <= node.gpus else f"nvswitch-{node.device}-{n}"
    return _node_switch(node, n, achievable, name)


def _node_switch(node: Node, n: int, achievable: bool, name: str) -> Topology:
    alpha = node_alpha(node)
    source = f"{node.link.nominal_source}; alpha {alpha * 1e6:g} us end-to-end is an assumption"
    if achievable:
        source += f"; achievable rate, {node.link.achievable_source}"
    if n > node.gpus:
        source = f"hypothetical {n}-GPU domain with {node.title}'s per-GPU figures: {source}"
    return _uniform(name, n, SwitchRouting(), alpha / 2, node.link.pick(achievable), source)


def pcie(n: int = 8, gen: int = 4) -> Topology:
    """n GPUs behind one PCIe switch, each on an x16 link, peer-to-peer enabled.

    Bandwidth per direction (PCI-SIG): PCIe 4.0 x16 ~32 GB/s, PCIe 5.0 x16 ~64 GB/s (raw rate;
    encoding leaves 31.5 and 63, and measured copies reach less).  The 5 us end-to-end latency,
    and the switch being non-blocking with no trip through the CPU, are assumptions.
    """
    if gen not in PCIE:
        raise TopologyError(f"unknown PCIe gen {gen!r}; valid: {', '.join(map(str, PCIE))}")
    source = (
        f"PCI-SIG PCIe {gen}.0 specification: x16 ~{PCIE[gen] / 1e9:g} GB/s per direction; "
        f"one non-blocking switch and alpha {PCIE_ALPHA * 1e6:g} us end-to-end are assumptions"
    )
    return _uniform(f"pcie{gen}", n, SwitchRouting(), PCIE_ALPHA / 2, PCIE[gen], source)


def multi_node(
    nodes: int = 2,
    gpus_per_node: int = 8,
    gpu: str = "h100",
    nic_bandwidth: float | None = None,
    nic_alpha: float = NIC_ALPHA,
    achievable: bool = False,
) -> Topology:
    """`nodes` NVLink nodes of `gpu` joined by InfiniBand, one NIC port per GPU, as in its DGX node.

    Inside a node: `nvlink_node`'s figures.  Between nodes: the GPU's DGX node's InfiniBand per GPU
    (DGX H100 and H200: 8x ConnectX-7 NDR 400 Gb/s = 50 GB/s per direction; DGX A100: HDR 25 GB/s;
    DGX-2: EDR, a port per two GPUs, 6.25 GB/s), unless `nic_bandwidth` says otherwise, into a
    fabric assumed non-blocking (a rail-optimised fat tree).  The 5 us end-to-end NIC latency is
    an assumption.  Device d lives on node d // gpus_per_node.
    """
    node = _node_of(gpu)
    name = f"multi-node-{node.device}-{nodes}x{gpus_per_node}"
    return _hierarchical(node, name, nodes, gpus_per_node, achievable, nic_bandwidth, nic_alpha)


def _hierarchical(
    node: Node,
    name: str,
    nodes: int,
    g: int,
    achievable: bool,
    nic_bandwidth: float | None = None,
    nic_alpha: float = NIC_ALPHA,
) -> Topology:
    nodes = _check_count(nodes, "nodes")
    g = _check_count(g, "gpus_per_node")
    if node.nic is None:
        raise TopologyError(f"{node.name} has no sourced fabric between nodes; valid: 1..{node.gpus} GPUs")
    n = nodes * g
    routing = HierarchicalRouting(g)
    names = routing.link_names(n)
    alpha = node_alpha(node)
    nic = node.nic.pick(achievable) if nic_bandwidth is None else nic_bandwidth
    links = _links(names[: 2 * n], alpha / 2, node.link.pick(achievable))
    links += _links(names[2 * n :], nic_alpha / 2, nic)
    nic_source = node.nic.nominal_source if nic_bandwidth is None else "NIC bandwidth given by the caller"
    source = (
        f"inside a node: {node.link.nominal_source}; between nodes: {nic_source}; alphas "
        f"({alpha * 1e6:g} us inside, {nic_alpha * 1e6:g} us NIC, end-to-end) and a non-blocking fabric "
        "are assumptions"
    )
    if achievable:
        source += f"; achievable rates: {node.link.achievable_source}; {node.nic.achievable_source}"
    return Topology(name, n, links, routing, source)


def node_topology(node: Node, n: int, achievable: bool = False) -> Topology:
    """`node`'s machine for n GPUs: part of one node, or whole nodes joined by its InfiniBand."""
    n = _check_count(n, "n")
    if n <= node.gpus:
        return _node_switch(node, n, achievable, node.name)
    if node.nic is None:
        raise TopologyError(
            f"{node.name} is one node of {node.gpus} GPUs, and tpsim has no sourced fabric between such "
            f"nodes; valid: 1..{node.gpus} devices, or --topology with a topology .json file"
        )
    if n % node.gpus:
        raise TopologyError(
            f"{node.name} puts {node.gpus} GPUs in a node, so n must be 1..{node.gpus} or a multiple of "
            f"{node.gpus}; got {n}"
        )
    return _hierarchical(node, node.name, n // node.gpus, node.gpus, achievable)


GENERIC: dict[str, Callable[[int], Topology]] = {
    "pcie4": lambda n: pcie(n, 4),
    "pcie5": lambda n: pcie(n, 5),
    "ring": ring,
    "switch": switch,
    "fully-connected": fully_connected,
}
ALIASES = {"nvlink": "dgx-h100", "multi-node": "dgx-h100"}  # the old names, kept for lessons and scripts
RENAMED = {"nvlink-a100": "dgx-a100", "nvlink-h200": "dgx-h200", "nvlink-h100": "dgx-h100"}


class Presets(Mapping):
    """Topology builders n -> Topology by name: the real nodes (tpsim.nodes), then the generic shapes.

    Each preset has one name, which is also its topology's name.  ALIASES are found (`in`, `[]`)
    but not listed.
    """

    def __getitem__(self, name: str) -> Callable[[int], Topology]:
        key = ALIASES.get(name, name)
        if key in NODES:
            return lambda n: node_topology(NODES[key], n)
        return GENERIC[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and ALIASES.get(name, name) in NODES.keys() | GENERIC.keys()

    def __iter__(self) -> Iterator[str]:
        return iter([*NODES, *GENERIC])

    def __len__(self) -> int:
        return len(NODES) + len(GENERIC)


PRESETS = Presets()


def canonical(name: str) -> str:
    """The preset's one name: aliases resolved; TopologyError naming the valid ones if unknown."""
    if name in RENAMED:
        raise TopologyError(f"topology preset {name!r} is now {RENAMED[name]!r} (one name per preset)")
    if name not in PRESETS:
        raise TopologyError(f"unknown topology preset {name!r}; valid: {', '.join(PRESETS)}")
    return ALIASES.get(name, name)


def preset(name: str, n: int, achievable: bool = False) -> Topology:
    """The preset topology `name` for n devices, as named on the command line.

    `achievable` takes a real node's achievable rates (tpsim.nodes) instead of the nominal ones.
    """
    key = canonical(name)
    if key in NODES:
        return node_topology(NODES[key], n, achievable)
    if achievable and key not in ("pcie4", "pcie5"):
        raise TopologyError(
            f"topology {key!r} has only teaching figures, no achievable rate; valid with achievable "
            f"rates: {', '.join([*NODES, 'pcie4', 'pcie5'])}"
        )
    topo = GENERIC[key](n)
    if achievable:
        return _pcie_achievable(topo, int(key[-1]))
    return topo


def _pcie_achievable(topo: Topology, gen: int) -> Topology:
    bw = pcie_bandwidth(gen, "PCI-SIG")
    links = [Link(lk.name, lk.alpha, bw.achievable) for lk in topo.links]
    source = f"{topo.source}; achievable rate, {bw.achievable_source}"
    return Topology(topo.name, topo.num_devices, links, topo.routing, source)


def for_device(device, n: int, achievable: bool = False) -> Topology:
    """The standard node of a built-in device (a name from tpsim.hardware.DEVICES, or its DeviceSpec)
    for n devices: never another device's node.  A saved or custom device has none: pass a topology."""
    from tpsim.hardware import DEVICES  # hardware imports nothing of presets; kept local for import cost

    key = next((k for k, spec in DEVICES.items() if spec is device), str(device).lower())
    if key not in BY_DEVICE:
        raise TopologyError(
            f"device {getattr(device, 'name', device)!r} has no standard node; valid devices: "
            f"{', '.join(BY_DEVICE)}; for another device pass a topology (a preset or a Topology)"
        )
    return node_topology(BY_DEVICE[key], n, achievable)
