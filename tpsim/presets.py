"""Topology presets: generic shapes for lessons, and real systems with their figures' sources.

Bandwidths of real systems are datasheet figures, per direction (a datasheet's "900 GB/s"
NVLink figure is both directions added).  Latencies are modelling assumptions unless a
docstring says otherwise: they are not on any datasheet, so calibrate them by measurement
(save the result with `Topology.save`) before trusting a small-message prediction.

In a switch, a transfer crosses two port links; the presets give each port half of the
end-to-end alpha, so a lone transfer sees `alpha + bytes / bandwidth` whatever the shape.
"""

from __future__ import annotations

from collections.abc import Callable

from tpsim.errors import TopologyError
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

# gpu -> (NVLink bandwidth per direction in bytes/s, where the figure comes from)
NVLINK = {
    "h100": (
        450e9,
        "NVIDIA H100 Tensor Core GPU datasheet: H100 SXM NVLink 4, 900 GB/s total = 450 per direction",
    ),
    "h200": (
        450e9,
        "NVIDIA H200 Tensor Core GPU datasheet: H200 SXM NVLink 4, 900 GB/s total = 450 per direction",
    ),
    "a100": (
        300e9,
        "NVIDIA A100 Tensor Core GPU datasheet: A100 SXM NVLink 3, 600 GB/s total = 300 per direction",
    ),
}
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


def _nvlink(gpu: str) -> tuple[float, str]:
    if str(gpu).lower() not in NVLINK:
        raise TopologyError(f"unknown gpu {gpu!r}; valid: {', '.join(NVLINK)}")
    return NVLINK[str(gpu).lower()]


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


def nvlink_node(n: int = 8, gpu: str = "h100") -> Topology:
    """One HGX/DGX-style node: n SXM GPUs on NVSwitch, modelled as one non-blocking switch.

    Bandwidth per GPU per direction: H100 and H200 (NVLink 4) 450 GB/s, A100 (NVLink 3)
    300 GB/s, half the bidirectional totals on the NVIDIA H100, H200 and A100 datasheets.
    The 2 us end-to-end latency is an assumption, not a datasheet figure.  Real nodes have 8
    GPUs; other n model a hypothetical NVSwitch domain with the same per-GPU figures.
    """
    bandwidth, source = _nvlink(gpu)
    source += f"; alpha {NVLINK_ALPHA * 1e6:g} us end-to-end is an assumption"
    return _uniform(f"nvlink-{gpu.lower()}", n, SwitchRouting(), NVLINK_ALPHA / 2, bandwidth, source)


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
    nic_bandwidth: float = NDR_BANDWIDTH,
    nic_alpha: float = NIC_ALPHA,
) -> Topology:
    """`nodes` NVLink nodes joined by InfiniBand, one NIC per GPU, as in NVIDIA DGX H100.

    Inside a node: `nvlink_node`'s figures.  Between nodes: each GPU's own NIC, InfiniBand
    NDR 400 Gb/s = 50 GB/s per direction (DGX H100 datasheet: 8x ConnectX-7 400 Gb/s for
    the compute fabric), into a fabric assumed non-blocking (a rail-optimised fat tree).
    The 5 us end-to-end NIC latency is an assumption.  Device d lives on node d // gpus_per_node.
    """
    nodes = _check_count(nodes, "nodes")
    g = _check_count(gpus_per_node, "gpus_per_node")
    bandwidth, nvl_source = _nvlink(gpu)
    n = nodes * g
    routing = HierarchicalRouting(g)
    names = routing.link_names(n)
    links = _links(names[: 2 * n], NVLINK_ALPHA / 2, bandwidth)
    links += _links(names[2 * n :], nic_alpha / 2, nic_bandwidth)
    source = (
        f"inside a node: {nvl_source}; between nodes: InfiniBand NDR 400 Gb/s "
        f"per GPU, NVIDIA DGX H100 datasheet (8x ConnectX-7); alphas ({NVLINK_ALPHA * 1e6:g} us NVLink, "
        f"{nic_alpha * 1e6:g} us NIC, end-to-end) and a non-blocking fabric are assumptions"
    )
    return Topology(f"multi-node-{gpu.lower()}-{nodes}x{g}", n, links, routing, source)


def _multi_node_of(n: int) -> Topology:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n % 8:
        raise TopologyError(
            f"preset 'multi-node' puts 8 GPUs in a node, so n must be a multiple of 8; got {n!r} "
            "(call multi_node(nodes, gpus_per_node) for other shapes)"
        )
    return multi_node(n // 8, 8)


PRESETS: dict[str, Callable[[int], Topology]] = {
    "nvlink": lambda n: nvlink_node(n, "h100"),
    "nvlink-h200": lambda n: nvlink_node(n, "h200"),
    "nvlink-a100": lambda n: nvlink_node(n, "a100"),
    "pcie4": lambda n: pcie(n, 4),
    "pcie5": lambda n: pcie(n, 5),
    "multi-node": _multi_node_of,
    "ring": ring,
    "switch": switch,
    "fully-connected": fully_connected,
}


def preset(name: str, n: int) -> Topology:
    """The preset topology `name` for n devices, as named on the command line."""
    if name not in PRESETS:
        raise TopologyError(f"unknown topology preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name](n)
