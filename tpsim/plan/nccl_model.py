"""NCCL's all-reduce algorithms as its tuner prices them: a latency, plus bytes over a bandwidth.

NCCL predicts each algorithm's time for a message of S bytes as

    latency + S / algbw

and runs the enabled algorithm with the smallest prediction (src/graph/tuning.cc, ncclTopoTuneModel
and the time lookup next to it).  The latency is a base latency (one launch of the algorithm) plus a
latency per hop, one figure for hops on NVLink or PCIe inside a node and one for network hops.  For
an all-reduce of p ranks on n nodes, m = p / n per node, the hops are counted as:

    ring   2(p-1) steps, 2(n-1) of them cross a node boundary
    tree   a chain inside the node and a double binary tree across nodes: 2((m-1) + floor(log2 n))
    nvls   one switch hop inside the node (NVLink SHARP reduces in the NVSwitch and multicasts the
           result), plus one network hop when the group spans nodes

and the bandwidth term is, per rank (what each GPU sends, and receives, at its link's rate):

    ring   2(p-1)/p S         (each of 2(p-1) steps moves one S/p chunk)
    tree   2 S / efficiency   (S up the tree to reduce, S down to broadcast, half on each of two trees)
    nvls   S / efficiency     (S into the switch, the reduced S back out: once, not 2(p-1)/p times)

`Tuning` holds those base and hop latencies, and a bandwidth efficiency per algorithm.  NCCL_SIMPLE
takes NCCL's published tuner figures for its Simple protocol (the one that carries large messages);
its LL and LL128 protocols, which lower the latency of small messages, are not modelled.  With no
Tuning, the cluster's own alphas are the hop latencies, with no base and no efficiency factor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ALGORITHMS = ("ring", "tree", "nvls")
CHOICES = ("auto", *ALGORITHMS)
US = 1e-6


@dataclass(frozen=True)
class Hop:
    """One algorithm's latencies (s) and the fraction of the link rate its bandwidth term reaches."""

    base: float
    intra: float  # per hop on NVLink or PCIe, inside a node
    inter: float  # per hop on the network, between nodes
    efficiency: float = 1.0


@dataclass(frozen=True)
class Tuning:
    ring: Hop
    tree: Hop
    nvls: Hop
    source: str

    def hop(self, algorithm: str) -> Hop:
        return getattr(self, algorithm)

    def scaled(self, latency: float = 1.0) -> Tuning:
        """Every latency times `latency` (a slower fabric), the efficiencies as they are."""

        def s(h: Hop) -> Hop:
            return replace(h, base=h.base * latency, intra=h.intra * latency, inter=h.inter * latency)

        return replace(self, ring=s(self.ring), tree=s(self.tree), nvls=s(self.nvls))


NCCL_SOURCE = (
    "NCCL src/graph/tuning.cc (NVIDIA/nccl, 2.19 to 2.23), Simple protocol: baseLat (ring 8.4, tree 8.4, "
    "NVLS 0 us); hwLat on NVLink (ring 3.4, tree 4.0, NVLS 25 us) and on the network (ring 14, tree 14, "
    "NVLS 18 us); tree all-reduce busbw x 0.92, NVLS algbw x 5/6 of busbw"
)
NCCL_SIMPLE = Tuning(
    ring=Hop(8.4 * US, 3.4 * US, 14 * US),
    tree=Hop(8.4 * US, 4.0 * US, 14 * US, 0.92),
    nvls=Hop(0.0, 25 * US, 18 * US, 5 / 6),
    source=NCCL_SOURCE,
)
# PCIe nodes: NCCL's hwLat for PCI (ring 5.7, tree 4.0 us); NVLS needs an NVSwitch, so never runs here
NCCL_SIMPLE_PCIE = replace(
    NCCL_SIMPLE,
    ring=Hop(8.4 * US, 5.7 * US, 14 * US),
    source=NCCL_SOURCE.replace("on NVLink (ring 3.4", "on PCIe (ring 5.7"),
)


def log2_floor(n: int) -> int:
    return n.bit_length() - 1


@dataclass(frozen=True)
class Phase:
    """One part of an all-reduce: what it is, its seconds, and the bytes each rank sends in it."""

    name: str
    seconds: float
    bytes_per_rank: float


def ring_all_reduce(p: int, n: int, nbytes: float, hop: Hop, bandwidth: float) -> Phase:
    """NCCL's pipelined ring on p ranks over n nodes: 2(p-n) intra hops, 2(n-1) network hops."""
    latency = hop.base + 2 * (p - n) * hop.intra + 2 * (n - 1) * hop.inter
    sent = 2 * (p - 1) / p * nbytes
    return Phase(f"ring all-reduce, {p} ranks", latency + sent / (hop.efficiency * bandwidth), sent)


def ring_half(p: int, n: int, nbytes: float, hop: Hop, bandwidth: float, what: str) -> Phase:
    """A ring reduce-scatter or all-gather: p-1 steps of one S/p chunk, n-1 of them across nodes."""
    latency = hop.base + (p - n) * hop.intra + (n - 1) * hop.inter
    sent = (p - 1) / p * nbytes
    return Phase(f"ring {what}, {p} ranks", latency + sent / (hop.efficiency * bandwidth), sent)


def tree_all_reduce(m: int, n: int, nbytes: float, hop: Hop, bandwidth: float) -> Phase:
    """Chain of m inside each node, double binary tree over n nodes; ~2S per rank at efficiency."""
    latency = hop.base + 2 * ((m - 1) * hop.intra + log2_floor(n) * hop.inter)
    sent = 2 * nbytes if m * n > 1 else 0.0
    return Phase(f"tree all-reduce, {m * n} ranks", latency + sent / (hop.efficiency * bandwidth), sent)


def nvls_all_reduce(m: int, n: int, nbytes: float, hop: Hop, intra_bw: float, rail_bw: float) -> Phase:
    """The NVSwitch reduces and multicasts inside the node (S each way per GPU); across nodes each
    GPU's 1/m shard runs a ring on its own rail, pipelined with the switch, so the slower one counts."""
    latency = hop.base + hop.intra + (hop.inter if n > 1 else 0.0)  # NCCL: one network latency
    switch = nbytes / (hop.efficiency * intra_bw)
    rails = 2 * (n - 1) / n * (nbytes / m) / rail_bw if n > 1 else 0.0
    sent = nbytes + (2 * (n - 1) / n * nbytes / m if n > 1 else 0.0)
    return Phase(f"NVLS all-reduce, {m} per node x {n} nodes", latency + max(switch, rails), sent)
