"""A GPU cluster for the iteration model: nodes of g GPUs on a switch, NICs between nodes.

    intra      alpha and bandwidth (per direction) of one GPU's link into the node's switch
    inter      alpha, and the node's NICs: count x bandwidth, shared by the flows leaving the node

A group of p ranks laid out contiguously (TP inside, DP at stride t, as Megatron orders them) has m
members in each of n nodes.  Inside one node its ring steps are intra hops.  Spread over nodes, the
ring is NCCL's multi-rail ring: one channel per NIC, each crossing the node boundary on its own rail,
so a group with m members in a node gets m of the node's g NIC shares, capped by the intra link.

The time model (tpsim/plan/nccl_model.py) is chosen by the fields after `source`:

    algorithm      "ring", "tree", "nvls" (NVLink SHARP, on NVSwitch nodes with `nvls`), or "auto":
                   the enabled algorithm with the least predicted time, as NCCL's tuner picks
    hierarchical   across nodes: reduce-scatter inside the node, all-reduce of each GPU's 1/m shard
                   over its own NIC (every rail), all-gather inside the node: three calls, summed
    tuning         None: the cluster's alphas per hop, lockstep rings; else NCCL's base and hop
                   latencies per algorithm (nccl_model.NCCL_SIMPLE; NCCL_SIMPLE_CHUNKED: rings pay
                   them once per Simple-protocol slot, realistic(node, chunks=True))
    bandwidths     which figures intra_bandwidth and nic_bandwidth are: "nominal", "achievable", "given"

The bytes each rank sends are those of the algorithm's closed form whatever the options: the options
change the time only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsim.collectives.costs import bytes_sent_per_rank, ring_all_reduce, ring_reduce_scatter
from tpsim.errors import AlgorithmError, TopologyError
from tpsim.nodes import BY_DEVICE, NODES, Node
from tpsim.plan import nccl_model as nm
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
    algorithm: str = "ring"  # "auto" | "ring" | "tree" | "nvls"
    hierarchical: bool = False
    nvls: bool = False  # the node's switch reduces in place (NVLink SHARP: Hopper NVSwitch)
    tuning: nm.Tuning | None = None
    bandwidths: str = "given"  # "nominal" | "achievable" | "given"

    def __post_init__(self):
        if self.algorithm not in nm.CHOICES:
            raise AlgorithmError(f"Cluster algorithm {self.algorithm!r}; valid: {', '.join(nm.CHOICES)}")
        if self.algorithm == "nvls" and not self.nvls:
            raise TopologyError(
                f"Cluster algorithm 'nvls' on {self.name}: its switch has no in-switch reduction "
                "(nvls=False); valid: auto, ring, tree"
            )

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

    def span(self, p: int, stride: int) -> tuple[int, int]:
        """(m, n): the group's members in one node and the nodes it spans."""
        if p * stride <= self.gpus_per_node:
            return p, 1
        m = min(p, max(1, self.gpus_per_node // stride))
        return m, -(-p // m)

    @property
    def rail_bandwidth(self) -> float:
        """One GPU's own share of its node's NICs (its rail), capped by its intra link."""
        return min(self.intra_bandwidth, self.nics * self.nic_bandwidth / self.gpus_per_node)

    def enabled(self) -> tuple[str, ...]:
        return nm.ALGORITHMS if self.nvls else ("ring", "tree")

    def available(self, p: int, stride: int) -> tuple[str, ...]:
        """The enabled algorithms this group can run: NVLS needs two members in a node to reduce."""
        if self.span(p, stride)[0] > 1 or p == 1:
            return self.enabled()
        return tuple(a for a in self.enabled() if a != "nvls")

    def _hop(self, algorithm: str) -> nm.Hop:
        if self.tuning is None:
            return nm.Hop(0.0, self.intra_alpha, self.inter_alpha)
        return self.tuning.hop(algorithm)

    def phases(self, p: int, stride: int, nbytes: float, algorithm: str | None = None) -> list[nm.Phase]:
        """The all-reduce's parts under `algorithm` (default: the cluster's; "auto": its choice)."""
        valid = self.available(p, stride)
        if algorithm is None:  # the cluster's own; NVLS where a group has one GPU per node: the fastest
            algorithm = self.algorithm if self.algorithm in valid else "auto"
        if algorithm == "auto":
            algorithm = self._fastest(p, stride, nbytes)
        if algorithm not in valid:
            raise AlgorithmError(
                f"all_reduce algorithm {algorithm!r} for {p} ranks at stride {stride}; "
                f"valid: {', '.join(valid)}"
            )
        if p == 1:
            return []
        m, n = self.span(p, stride)
        hop, intra = self._hop(algorithm), self.intra_bandwidth
        if algorithm == "nvls":
            return [nm.nvls_all_reduce(m, n, nbytes, hop, intra, self.rail_bandwidth)]
        if n > 1 and self.hierarchical:
            return self._hierarchical(algorithm, m, n, nbytes)
        flat = self.ring(p, stride)[1]
        if algorithm == "tree":
            return [nm.tree_all_reduce(m, n, nbytes, hop, flat)]
        if n > 1 and self.tuning is None:  # lockstep: every step waits for its network hop
            sent = bytes_sent_per_rank("all_reduce", "ring", p, nbytes)
            seconds = ring_all_reduce(p, nbytes, self.inter_alpha, flat)
            return [nm.Phase(f"ring all-reduce, {p} ranks", seconds, sent)]
        return [nm.ring_all_reduce(p, n, nbytes, hop, flat, self._slots(p, nbytes), self._protocols)]

    @property
    def _protocols(self) -> tuple[nm.Protocol, ...]:
        return () if self.tuning is None else self.tuning.protocols

    def _slots(self, p: int, nbytes: float) -> int:
        """Simple slots per ring step: 1 (once per step) unless the tuning counts channels."""
        return 1 if self.tuning is None else nm.slots(p, nbytes, self.tuning.channels)

    def _hierarchical(self, algorithm: str, m: int, n: int, nbytes: float) -> list[nm.Phase]:
        """Reduce-scatter over the node's m members, all-reduce of each 1/m shard across the n nodes
        on the GPU's own rail, all-gather inside the node (m = 1: the middle one only)."""
        ring, shard, rail = self._hop("ring"), nbytes / m, self.rail_bandwidth
        if algorithm == "tree":
            across = nm.tree_all_reduce(1, n, shard, self._hop("tree"), rail)
        else:
            across = nm.ring_all_reduce(n, n, shard, ring, rail, self._slots(n, shard), self._protocols)
        across = nm.Phase(
            f"{across.name} across nodes, 1/{m} shard per rail", across.seconds, across.bytes_per_rank
        )
        if m == 1:
            return [across]
        intra, k = self.intra_bandwidth, self._slots(m, nbytes)
        return [
            nm.ring_half(m, 1, nbytes, ring, intra, "reduce-scatter inside the node", k, self._protocols),
            across,
            nm.ring_half(m, 1, nbytes, ring, intra, "all-gather inside the node", k, self._protocols),
        ]

    def predict(self, p: int, stride: int, nbytes: float, algorithm: str) -> float:
        return sum(ph.seconds for ph in self.phases(p, stride, nbytes, algorithm))

    def choose(self, p: int, stride: int, nbytes: float) -> str:
        """The cluster's algorithm; under "auto" (or "nvls" where the group has one GPU per node) the
        available one predicted fastest (the first on a tie)."""
        if self.algorithm in self.available(p, stride):
            return self.algorithm
        return self._fastest(p, stride, nbytes)

    def _fastest(self, p: int, stride: int, nbytes: float) -> str:
        return min(self.available(p, stride), key=lambda a: self.predict(p, stride, nbytes, a))

    def all_reduce(self, p: int, stride: int, nbytes: float) -> float:
        return sum(ph.seconds for ph in self.phases(p, stride, nbytes))

    def bytes_per_rank(self, p: int, stride: int, nbytes: float, algorithm: str | None = None) -> float:
        """Bytes each rank sends in the all-reduce: the algorithm's, whatever the time options."""
        return sum(ph.bytes_per_rank for ph in self.phases(p, stride, nbytes, algorithm))

    def reduce_scatter(self, p: int, stride: int, nbytes: float) -> float:
        """A ring (NCCL's reduce-scatter and all-gather): its lockstep form, or NCCL's latencies."""
        alpha, bw = self.ring(p, stride)
        if self.tuning is None or p == 1:
            return ring_reduce_scatter(p, nbytes, alpha, bw)
        n = self.span(p, stride)[1]
        k = self._slots(p, nbytes)
        return nm.ring_half(p, n, nbytes, self.tuning.ring, bw, "reduce-scatter", k, self._protocols).seconds

    def send(self, nbytes: float, across_nodes: bool) -> float:
        """One point-to-point send of `nbytes` (a pipeline boundary)."""
        if across_nodes:
            return self.inter_alpha + nbytes / self.nic_bandwidth
        return self.intra_alpha + nbytes / self.intra_bandwidth

    def describe(self) -> str:
        """One line naming every time-model choice, for the outputs that show this cluster's times."""
        algo = (
            f"auto (least predicted time of {', '.join(self.enabled())})"
            if self.algorithm == "auto"
            else "nvls (the fastest of ring, tree for groups with one GPU per node)"
            if self.algorithm == "nvls"
            else self.algorithm
        )
        across = (
            "hierarchical (reduce-scatter, all-reduce on every rail, all-gather)"
            if self.hierarchical
            else "flat multi-rail rings"
        )
        latency = "the cluster's alphas per lockstep step" if self.tuning is None else self.tuning.source
        return (
            f"all-reduce {algo}; across nodes {across}; {self.bandwidths} bandwidths "
            f"({self.intra_bandwidth / 1e9:.4g} GB/s inside, {self.rail_bandwidth / 1e9:.4g} GB/s per rail); "
            f"latencies: {latency}"
        )


def from_node(
    node: Node,
    achievable: bool = False,
    *,
    algorithm: str = "ring",
    hierarchical: bool = False,
    tuning: nm.Tuning | None = None,
) -> Cluster:
    """The cluster of a device's standard node (tpsim.nodes), with the alphas tpsim.presets assumes.

    The NICs are counted one per GPU at each GPU's share of the node's ports (a DGX-2's 8 ports for 16
    GPUs: 16 shares of 6.25 GB/s), so the node's total leaves it whatever the port count.  NVLS is
    enabled on NVLink 4 NVSwitch nodes (DGX H100, H200), whose switches reduce in place.
    """
    if node.nic is None:
        raise TopologyError(
            f"node {node.name} has no sourced fabric between nodes; valid: "
            f"{', '.join(n.name for n in NODES.values() if n.nic is not None)}"
        )
    return Cluster(
        f"{node.title} ({node.gpus} x {node.device} on {node.fabric}, {node.nic_fabric} between nodes)",
        node.gpus,
        node_alpha(node),
        node.link.pick(achievable),
        node.gpus,
        node.nic.pick(achievable),
        NIC_ALPHA,
        node.source,
        algorithm=algorithm,
        hierarchical=hierarchical,
        nvls=node.fabric.startswith("NVLink 4"),
        tuning=tuning,
        bandwidths="achievable" if achievable else "nominal",
    )


def realistic(
    node: Node, hierarchical: bool = False, chunks: bool = False, protocols: bool = False
) -> Cluster:
    """NCCL as it runs: achievable bandwidths, its Simple-protocol latencies, the fastest algorithm;
    `chunks`: ring hop latencies once per Simple slot (nccl_model.NCCL_SIMPLE_CHUNKED); `protocols`:
    rings may also run LL and LL128 (nccl_model.with_protocols); both for NVLink nodes only."""
    for name, on in (("chunks", chunks), ("protocols", protocols)):
        if on and not node.nvlink:
            raise TopologyError(
                f"{name} on {node.name}: NCCL's figures are sourced for NVLink nodes only; valid: "
                f"{', '.join(n.name for n in NODES.values() if n.nvlink)}"
            )
    tuning = (nm.NCCL_SIMPLE_CHUNKED if chunks else nm.NCCL_SIMPLE) if node.nvlink else nm.NCCL_SIMPLE_PCIE
    if protocols:
        tuning = nm.with_protocols(tuning, node.device)
    return from_node(node, achievable=True, algorithm="auto", hierarchical=hierarchical, tuning=tuning)


DGX2H = from_node(NODES["dgx-2"])  # DGX-2H: DGX-2's fabric, faster V100s (dgx2h_v100); nominal, ring
DGX2H_NCCL = realistic(NODES["dgx-2"])  # the same node as NCCL runs on it: the realistic mode's
NOMINAL_CLUSTERS = {device: from_node(node) for device, node in BY_DEVICE.items() if node.nic is not None}
CLUSTERS = {device: realistic(node) for device, node in BY_DEVICE.items() if node.nic is not None}


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
