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

Chunks (a Tuning with `channels`, NCCL_SIMPLE_CHUNKED): NCCL splits the message over its channels, and
each channel's Simple-protocol FIFO holds NCCL_STEPS slots of NCCL_BUFFSIZE / NCCL_STEPS bytes.  A ring
step moves one rank's share S / (p x channels) per channel in k = ceil(S / (p x channels x slot))
slots, and each slot pays the per-hop latency the tuner charges once per step, so

    ring   base + k x hop latencies + bytes / bandwidth     (k = 1: the formula above)

The bytes over bandwidth are unchanged: every slot crosses the link once per step, pipelined or not.

Protocols (a Tuning with `protocols`, ring_protocols): NCCL's rings also run LL and LL128, which trade
bandwidth for latency; each is a Protocol (its hop latencies, the fraction of the link rate it keeps, a
ceiling), and a ring takes whichever of Simple, LL, LL128 is predicted fastest, as NCCL's tuner does.
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
class Protocol:
    """A ring protocol other than Simple: its latencies and link fraction (hop), its busbw ceiling (B/s)."""

    name: str
    hop: Hop
    cap: float


@dataclass(frozen=True)
class Tuning:
    ring: Hop
    tree: Hop
    nvls: Hop
    source: str
    channels: int = 0  # > 0: rings pay their hop latencies once per Simple slot (see `slots`)
    protocols: tuple[Protocol, ...] = ()  # rings may also run these (LL, LL128): the fastest counts

    def hop(self, algorithm: str) -> Hop:
        return getattr(self, algorithm)

    def scaled(self, latency: float = 1.0) -> Tuning:
        """Every latency times `latency` (a slower fabric), the efficiencies as they are."""

        def s(h: Hop) -> Hop:
            return replace(h, base=h.base * latency, intra=h.intra * latency, inter=h.inter * latency)

        protocols = tuple(replace(p, hop=s(p.hop)) for p in self.protocols)
        return replace(self, ring=s(self.ring), tree=s(self.tree), nvls=s(self.nvls), protocols=protocols)


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


# NCCL 2.18 src/include/device.h: NCCL_STEPS 8 (slots of each channel's FIFO); src/init.cc:
# DEFAULT_BUFFSIZE (NCCL_BUFFSIZE) 4 MiB for the Simple protocol: one slot is 512 KiB per channel
NCCL_STEPS = 8
NCCL_BUFFSIZE = 4 << 20
SLOT = NCCL_BUFFSIZE // NCCL_STEPS
# Ring channels on one 8-GPU NVSwitch node: 24 ("Channel 23/24" in the NCCL INFO log of an HGX A100,
# NVIDIA/nccl-tests issue #100); taken for every NVLink node, the H100's ring included
NVSWITCH_RING_CHANNELS = 24
NCCL_SIMPLE_CHUNKED = replace(
    NCCL_SIMPLE,
    channels=NVSWITCH_RING_CHANNELS,
    source=NCCL_SOURCE + f"; ring hop latencies once per {SLOT >> 10} KiB Simple slot on each of "
    f"{NVSWITCH_RING_CHANNELS} channels (NCCL 2.18 NCCL_BUFFSIZE / NCCL_STEPS)",
)


# NCCL v2.18.5 src/graph/tuning.cc, rings inside one node: baseLat (LL 6.6, LL128 14.0 us); hwLat on
# NVLink (LL 0.6, LL128 1.9 us) and on the network (LL 2.7, LL128 4.0 us); LL all-reduce busbw x 1/4
# up to llMaxBws (one node: Volta 39.0, Ampere and Hopper 87.7 GB/s); LL128 busbw x 0.92 up to
# nChannels x perChMaxRingLL128Bws (Volta and Ampere 20.0, Hopper 36.7 GB/s per channel).  Across nodes
# NCCL lowers the LL ceiling (llMaxBws by CPU); the one-node figures are kept here.
PROTOCOL_CEILINGS = {"v100": (39.0e9, 20.0e9), "a100": (87.7e9, 20.0e9), "h100": (87.7e9, 36.7e9)}
PROTOCOL_CEILINGS["h200"] = PROTOCOL_CEILINGS["h100"]


def ring_protocols(device: str, channels: int = NVSWITCH_RING_CHANNELS) -> tuple[Protocol, ...]:
    """LL and LL128 as NCCL 2.18.5's tuner prices them on an NVLink node of `device`."""
    ll_max, ll128_per_channel = PROTOCOL_CEILINGS[device]
    return (
        Protocol("LL", Hop(6.6 * US, 0.6 * US, 2.7 * US, 1 / 4), ll_max),
        Protocol("LL128", Hop(14.0 * US, 1.9 * US, 4.0 * US, 0.92), channels * ll128_per_channel),
    )


def with_protocols(tuning: Tuning, device: str) -> Tuning:
    """`tuning` whose rings may also run LL and LL128 (NCCL 2.18.5's figures for `device`)."""
    return replace(
        tuning,
        protocols=ring_protocols(device),
        source=tuning.source + "; rings also LL, LL128 (NCCL v2.18.5 tuning.cc: baseLat 6.6, 14.0 us; "
        "NVLink hwLat 0.6, 1.9 us; busbw x 1/4 up to llMaxBws, x 0.92 up to 24 x perChMaxRingLL128Bws)",
    )


def _fastest_protocol(
    simple: Phase, protocols: tuple[Protocol, ...], steps: tuple[int, int], sent: float, bandwidth: float
) -> Phase:
    """The Simple phase or a protocol's, whichever is faster; steps = (intra hops, network hops)."""
    best = simple
    for proto in protocols:
        h = proto.hop
        seconds = h.base + steps[0] * h.intra + steps[1] * h.inter
        seconds += sent / min(h.efficiency * bandwidth, proto.cap)
        if seconds < best.seconds:
            best = Phase(f"{simple.name} ({proto.name})", seconds, sent)
    return best


def slots(p: int, nbytes: float, channels: int) -> int:
    """Simple-protocol slots one ring step takes: one rank's share S / p over `channels` channels,
    SLOT bytes per slot; 1 where the model has no channels (channels = 0)."""
    if channels <= 0 or p <= 1:
        return 1
    return max(1, -(-int(nbytes) // (p * channels * SLOT)))


def log2_floor(n: int) -> int:
    return n.bit_length() - 1


@dataclass(frozen=True)
class Phase:
    """One part of an all-reduce: what it is, its seconds, and the bytes each rank sends in it."""

    name: str
    seconds: float
    bytes_per_rank: float


def ring_all_reduce(
    p: int,
    n: int,
    nbytes: float,
    hop: Hop,
    bandwidth: float,
    k: int = 1,
    protocols: tuple[Protocol, ...] = (),
) -> Phase:
    """NCCL's pipelined ring on p ranks over n nodes: 2(p-n) intra hops, 2(n-1) network hops, each
    paid once per slot (k slots a step; k = 1: once per step); or a faster protocol's ring."""
    latency = hop.base + k * (2 * (p - n) * hop.intra + 2 * (n - 1) * hop.inter)
    sent = 2 * (p - 1) / p * nbytes
    simple = Phase(f"ring all-reduce, {p} ranks", latency + sent / (hop.efficiency * bandwidth), sent)
    return _fastest_protocol(simple, protocols, (2 * (p - n), 2 * (n - 1)), sent, bandwidth)


def ring_half(
    p: int,
    n: int,
    nbytes: float,
    hop: Hop,
    bandwidth: float,
    what: str,
    k: int = 1,
    protocols: tuple[Protocol, ...] = (),
) -> Phase:
    """A ring reduce-scatter or all-gather: p-1 steps of one S/p chunk, n-1 of them across nodes
    (hop latencies once per slot, k slots a step); or a faster protocol's (at its all-reduce fraction)."""
    latency = hop.base + k * ((p - n) * hop.intra + (n - 1) * hop.inter)
    sent = (p - 1) / p * nbytes
    simple = Phase(f"ring {what}, {p} ranks", latency + sent / (hop.efficiency * bandwidth), sent)
    return _fastest_protocol(simple, protocols, (p - n, n - 1), sent, bandwidth)


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
