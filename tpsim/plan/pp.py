"""Pipeline parallelism's point-to-point traffic: activations forward, their gradients backward.

Stage i sends each microbatch's output, (s, b, h) per TP rank, to stage i+1, and gets the
gradient of it back in backward (Megatron's p2p_communication; with sequence parallelism the
tensor is already split by t, (s/t, b, h)).  On a (pp, dp, tp) mesh every (dp, tp) position
sends at once, device (i, d, r) to (i+1, d, r).

A send/recv between two devices is a broadcast in a group of two with the direct algorithm: one
transfer of the whole buffer.  That is how this file runs it, through the engine (the one door),
for every stage boundary and both directions, so the bytes and times come from the trace.
"""

from __future__ import annotations

from tpsim.collectives import broadcast
from tpsim.meta import meta
from tpsim.plan.dp import sent_per_device


def stage_sends(mesh, shape: tuple[int, ...], dtype, *, dim: str = "pp") -> dict:
    """One microbatch's sends across every stage boundary of `dim`, forward then backward.

    Returns the bytes of one send, the bytes each device sent for one microbatch (the maximum over
    devices: a middle stage sends an activation and a gradient), and the longest single send.
    """
    first = len(mesh.trace.collectives)
    buffers = [meta(shape, dtype)] * mesh.size
    groups = mesh.groups(dim)  # each (stage 0, ..., stage p-1) at one (dp, tp) position
    longest = 0.0
    for direction, step in (("forward", 1), ("backward", -1)):
        for i in range(len(groups[0]) - 1):
            src, dst = (i, i + 1) if step == 1 else (i + 1, i)
            pairs = [(g[src], g[dst]) for g in groups]  # rank 0 of each pair sends
            label = f"pp.send_{direction}.{src}->{dst}"
            broadcast(
                buffers, mesh, root=0, algorithm="direct", groups=pairs, label=label, direction=direction
            )
            longest = max(longest, mesh.trace.collectives[-1].time)
    return {
        "send_bytes": buffers[0].nbytes,
        "sent_per_device_per_microbatch": sent_per_device(mesh.trace, first),
        "send_time": longest,
    }
