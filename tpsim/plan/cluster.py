"""A GPU cluster for the iteration model: nodes of g GPUs on a switch, NICs between nodes.

    intra      alpha and bandwidth (per direction) of one GPU's link into the node's switch
    inter      alpha, and the node's NICs: count x bandwidth, shared by the flows leaving the node

A group of p ranks laid out contiguously (TP inside, DP at stride t, as Megatron orders them) runs a
ring.  Inside one node, a ring step is one intra hop.  Spread over nodes, every group with members
in a node crosses the node boundary once per ring step, so the node's NICs carry
(groups in the node) flows at once, each at nics x nic_bandwidth / flows, and no faster than the
intra link.  Bandwidths are nominal link rates, not NCCL's achieved bus bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsim.collectives.costs import ring_all_reduce, ring_reduce_scatter
from tpsim.errors import TopologyError
from tpsim.nodes import BY_DEVICE, NODES, Node
from tpsim.presets import NIC_ALPHA, node_alpha


@dataclass(frozen=True)
class Cluster:
    name: str
    gpus_per_node: int
    intra_alpha: float
    intra_bandwidth: float  # bytes/s per direction, per GPU
    nics: int  # per node
    nic_bandwidth: float  # bytes/s per direction, per NIC
    inter_alpha: float
    source: str

    def ring(self, p: int, stride: int) -> tuple[float, float]:
        """(alpha, bandwidth) of a ring of p ranks at `stride` apart (the ranks in between are
        other groups, running their own rings at the same time)."""
        g = self.gpus_per_node
        if p * stride <= g:
            return self.intra_alpha, self.intra_bandwidth
        members = max(1, g // stride)  # of one group in one node
        groups_in_node = g // members
        nic = self.nics * self.nic_bandwidth / groups_in_node
        return self.inter_alpha, min(self.intra_bandwidth, nic)

    def all_reduce(self, p: int, stride: int, nbytes: float) -> float:
        alpha, bw = self.ring(p, stride)
        return ring_all_reduce(p, nbytes, alpha, bw)

    def reduce_scatter(self, p: int, stride: int, nbytes: float) -> float:
        alpha, bw = self.ring(p, stride)
        return ring_reduce_scatter(p, nbytes, alpha, bw)

    def send(self, nbytes: float, across_nodes: bool) -> float:
        """One point-to-point send of `nbytes` (a pipeline boundary)."""
        if across_nodes:
            return self.inter_alpha + nbytes / self.nic_bandwidth
        return self.intra_alpha + nbytes / self.intra_bandwidth


def from_node(node: Node, achievable: bool = False) -> Cluster:
    """The cluster of a device's standard node (tpsim.nodes), with the alphas tpsim.presets assumes.

    The NICs are counted one per GPU at each GPU's share of the node's ports (a DGX-2's 8 ports for 16
    GPUs: 16 shares of 6.25 GB/s), so the node's total leaves it whatever the port count.
    """
    if node.nic is None:
        raise TopologyError(f"node {node.name} has no sourced fabric between nodes; valid: "
                            f"{', '.join(n.name for n in NODES.values() if n.nic is not None)}")
    return Cluster(
        f"{node.title} ({node.gpus} x {node.device} on {node.fabric}, {node.nic_fabric} between nodes)",
        node.gpus,
        node_alpha(node),
        node.link.pick(achievable),
        node.gpus,
        node.nic.pick(achievable),
        NIC_ALPHA,
        node.source,
    )


DGX2H = from_node(NODES["dgx-2"])  # DGX-2H: DGX-2's fabric, faster V100s (dgx2h_v100)
CLUSTERS = {device: from_node(node) for device, node in BY_DEVICE.items() if node.nic is not None}


def dgx2h_v100():
    """The DGX-2H's GPU: a V100 SXM3 32 GB at the DGX-2H's clocks (its datasheet: 2.1 PFLOPS fp16 tensor
    for 16 GPUs = 131.25 TFLOP/s each, above the V100 SXM2's 125); HBM2 900 GB/s as the V100's."""
    from tpsim.hardware import DeviceSpec, T

    return DeviceSpec(
        "V100-SXM3-32GB (DGX-2H)",
        {"float16": 2100 * T / 16, "float32": 15.7 * T},
        900e9,
        32 << 30,
        "NVIDIA DGX-2H datasheet (2019): 2.1 PFLOPS tensor (fp16) for 16 V100 = 131.25 TFLOP/s per GPU; "
        "V100 datasheet: 900 GB/s HBM2, 32 GB",
    )


