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


DGX2H = Cluster(
    "DGX-2H (16 x V100 on NVSwitch, 8 x 100 Gb/s InfiniBand EDR per node)",
    16,
    2e-6,
    150e9,
    8,
    12.5e9,
    5e-6,
    "NVIDIA DGX-2H datasheet (2019): 16 V100 SXM3 32 GB on NVSwitch, each GPU 6 NVLink2 links x 25 GB/s "
    "per direction = 150 GB/s; 8 x 100 Gb/s EDR InfiniBand = 12.5 GB/s each; alpha 2 us (NVSwitch) and "
    "5 us (InfiniBand) are assumptions, as tpsim.presets assumes them",
)


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


DGXA100 = Cluster(
    "DGX A100 (8 x A100 on NVSwitch, 8 x 200 Gb/s InfiniBand HDR per node)",
    8,
    2e-6,
    300e9,
    8,
    25e9,
    5e-6,
    "NVIDIA DGX A100 datasheet (2020): 12 NVLink3 links x 25 GB/s = 300 GB/s per direction per GPU; "
    "8 x 200 Gb/s HDR InfiniBand for compute = 25 GB/s each; alphas assumed as for DGX-2H",
)
DGXH100 = Cluster(
    "DGX H100 (8 x H100 on NVSwitch, 8 x 400 Gb/s InfiniBand NDR per node)",
    8,
    2e-6,
    450e9,
    8,
    50e9,
    5e-6,
    "NVIDIA DGX H100 datasheet (2023): 18 NVLink4 links x 25 GB/s = 450 GB/s per direction per GPU; "
    "8 x 400 Gb/s NDR (ConnectX-7) = 50 GB/s each; alphas assumed as for DGX-2H",
)
CLUSTERS = {"v100": DGX2H, "a100": DGXA100, "h100": DGXH100, "h200": DGXH100}
