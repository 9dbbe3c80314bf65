"""Real nodes: each device preset's standard machine, with its links' figures and where they come from.

Every bandwidth is bytes/s in one direction, per GPU.  A datasheet's NVLink figure is both directions
added (DGX H100: "900 GB/s" = 450 GB/s each way), and InfiniBand's "400 Gb/s" is per direction.

Each link has two figures:

    nominal      the datasheet rate (what `--bandwidth nominal`, the default, simulates)
    achievable   what software reaches, labelled "measured (published)" with its source, or
                 "assumption" with the reason; never measured here

The achievable NVLink fraction comes from one published NCCL measurement: Azure's ND A100 v4 (8 x
A100 SXM4 80GB on NVSwitch, NCCL 2.18.5), all_reduce_perf busbw 231.58 GB/s at 8 GB, 77.2 % of the
300 GB/s link.  Hopper's published figures (Azure ND H100 v5 478.87 GB/s, ND H200 v5 479.98 GB/s) use
NVLS, whose in-switch reduction lifts busbw above the 450 GB/s link rate, so they measure the
switch, not a link; the A100 fraction stands in for Hopper and V100 links, as an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass

AZURE = "Azure/AI-benchmarking-guide, Azure_Results"
NVLINK_FRACTION = 231.58 / 300  # Azure ND A100 v4 all-reduce busbw / A100 NVLink per direction
NVLINK_MEASURED = (
    f"measured (published): {AZURE}/ND_A100_v4_results.md, NCCL 2.18.5 all_reduce_perf busbw "
    "231.58 GB/s at 8 GB on 8 x A100 SXM4 80GB (NVSwitch)"
)
NVLINK_ASSUMED = (
    f"assumption: A100's published fraction {NVLINK_FRACTION:.3f} of the nominal rate ({NVLINK_MEASURED}); "
    "Hopper's published busbw (ND H100 v5 478.87, ND H200 v5 479.98 GB/s) uses NVLS in-switch "
    "reduction, so it is not a link rate"
)
PCIE4_FRACTION = 26.28 / 32  # Azure ND A100 v4 nvbandwidth host -> device over PCIe Gen4 x16
PCIE5_FRACTION = 51 / 64  # Azure ND H100 v5 nvbandwidth host -> device over PCIe Gen5 x16
PCIE_MEASURED = {
    4: f"measured (published): {AZURE}/ND_A100_v4_results.md, nvbandwidth host to device 26.28 GB/s "
    "over PCIe Gen4 x16 (a host copy, not GPU peer to peer)",
    5: f"measured (published): {AZURE}/ND_H100_v5_results.md, nvbandwidth host to device 51 GB/s "
    "over PCIe Gen5 x16 (a host copy, not GPU peer to peer)",
}
NIC_FRACTION = 0.9
NIC_ASSUMED = "assumption: 90 % of the InfiniBand line rate (protocol overhead); no measurement cited"


@dataclass(frozen=True)
class Bandwidth:
    """One link's rate per direction in bytes/s: the datasheet figure and an achievable one, each sourced."""

    nominal: float
    achievable: float
    nominal_source: str
    achievable_source: str

    def pick(self, achievable: bool) -> float:
        return self.achievable if achievable else self.nominal


@dataclass(frozen=True)
class Node:
    """A device preset's standard node.  `nic` is None where tpsim has no sourced fabric between nodes."""

    name: str  # the topology preset's name, e.g. "dgx-h100"
    device: str  # the device preset it belongs to (tpsim.hardware.DEVICES)
    title: str
    gpus: int
    fabric: str
    link: Bandwidth  # inside the node, per GPU
    nic: Bandwidth | None  # between nodes, per GPU
    nic_fabric: str
    source: str  # the node's datasheet: name, address, date

    @property
    def nvlink(self) -> bool:
        return self.fabric.startswith("NVLink")

    def summary(self, achievable: bool = False) -> str:
        """One line: the GPUs, the fabric and the rates it simulates."""
        kind = "per GPU, " + ("achievable" if achievable else "nominal")
        inside = f"{self.fabric} at {self.link.pick(achievable) / 1e9:.4g} GB/s"
        between = f"{self.nic_fabric} at {self.nic.pick(achievable) / 1e9:.4g} GB/s" if self.nic else "none"
        return f"{self.title}, {self.gpus} x {self.device}: {inside}; between nodes {between}; {kind}"


def _nvlink(bidirectional_gb: float, source: str, measured: bool = False) -> Bandwidth:
    nominal = bidirectional_gb / 2 * 1e9
    achieved = 231.58e9 if measured else nominal * NVLINK_FRACTION
    return Bandwidth(
        nominal,
        achieved,
        f"{source}: {bidirectional_gb:g} GB/s per GPU, both directions = {nominal / 1e9:g} per direction",
        NVLINK_MEASURED if measured else NVLINK_ASSUMED,
    )


def _ib(gbit_per_port: float, gpus_per_port: int, source: str) -> Bandwidth:
    nominal = gbit_per_port / 8 / gpus_per_port * 1e9
    share = f", one port per {gpus_per_port} GPUs" if gpus_per_port > 1 else ", one port per GPU"
    return Bandwidth(
        nominal,
        nominal * NIC_FRACTION,
        f"{source}: {gbit_per_port:g} Gb/s InfiniBand per port{share} = {nominal / 1e9:g} GB/s per GPU",
        NIC_ASSUMED,
    )


def pcie_bandwidth(gen: int, source: str) -> Bandwidth:
    nominal = {4: 32e9, 5: 64e9}[gen]
    fraction = {4: PCIE4_FRACTION, 5: PCIE5_FRACTION}[gen]
    return Bandwidth(
        nominal,
        nominal * fraction,
        f"{source}: PCIe Gen{gen} x16, {2 * nominal / 1e9:g} GB/s both directions = {nominal / 1e9:g} each",
        PCIE_MEASURED[gen],
    )


DGX2 = "NVIDIA DGX-2 datasheet (2018), https://www.nvidia.com/en-us/data-center/dgx-2/"
DGXA100 = "NVIDIA DGX A100 datasheet (2020), https://www.nvidia.com/en-us/data-center/dgx-a100/"
DGXH100 = "NVIDIA DGX H100 datasheet (2023), https://www.nvidia.com/en-us/data-center/dgx-h100/"
DGXH200 = "NVIDIA DGX H200 datasheet (2024), https://www.nvidia.com/en-us/data-center/dgx-h200/"
L40S = "NVIDIA L40S datasheet (2023), https://www.nvidia.com/en-us/data-center/l40s/"

NODES = {
    node.name: node
    for node in (
        Node(
            "dgx-2",
            "v100",
            "NVIDIA DGX-2",
            16,
            "NVLink 2 via 12 NVSwitches",
            _nvlink(300, DGX2),
            _ib(100, 2, DGX2 + ", 8 x 100 Gb/s EDR for 16 GPUs"),
            "InfiniBand EDR",
            DGX2 + "; DGX-2H has the same fabric with faster-clocked V100s.  Not DGX-1: its hybrid "
            "cube-mesh NVLink is not all-to-all, which tpsim's routings do not model",
        ),
        Node(
            "dgx-a100",
            "a100",
            "NVIDIA DGX A100",
            8,
            "NVLink 3 via 6 NVSwitches",
            _nvlink(600, DGXA100, measured=True),
            _ib(200, 1, DGXA100 + ", 8 x ConnectX-6 HDR"),
            "InfiniBand HDR",
            DGXA100,
        ),
        Node(
            "dgx-h100",
            "h100",
            "NVIDIA DGX H100",
            8,
            "NVLink 4 via 4 NVSwitches",
            _nvlink(900, DGXH100),
            _ib(400, 1, DGXH100 + ", 8 x ConnectX-7 NDR"),
            "InfiniBand NDR",
            DGXH100,
        ),
        Node(
            "dgx-h200",
            "h200",
            "NVIDIA DGX H200",
            8,
            "NVLink 4 via 4 NVSwitches",
            _nvlink(900, DGXH200),
            _ib(400, 1, DGXH200 + ", 8 x ConnectX-7 NDR"),
            "InfiniBand NDR",
            DGXH200,
        ),
        Node(
            "pcie-l40s",
            "l40s",
            "8-GPU PCIe server",
            8,
            "PCIe Gen4 x16 (no NVLink)",
            pcie_bandwidth(4, L40S),
            None,
            "",
            L40S + " (NVLink: no).  8 GPUs behind one non-blocking PCIe switch is an assumption: "
            "L40S servers vary, and NVIDIA names no reference node",
        ),
    )
}
BY_DEVICE = {node.device: node for node in NODES.values()}
