"""The demo behind `python -m tpsim`: collectives on virtual devices, step by step, then the traffic table.

Who holds what after each step is a rich table (`tpsim.viz.holdings`), each device in its colour.
"""

from __future__ import annotations

import argparse

import numpy as np

import tpsim
from tpsim.collectives.kinds import Collective
from tpsim.report import fmt_bytes, fmt_rate, fmt_time, steps_text, table
from tpsim.viz.terminal import print_holdings  # rich only: the demo needs no matplotlib


def holds_table(snap, devices: list[int]) -> str:
    """Who holds what, as plain text: one row per device, one column per chunk, each cell the devices it
    contains.  The demo prints the rich version, `tpsim.viz.print_holdings`."""
    k = len(snap.holds[devices[0]])
    rows = []
    for d in devices:
        cells = []
        for c, atoms in enumerate(snap.holds[d]):
            if atoms is None:
                cells.append(".")
                continue
            label = "+".join(str(a) for a in sorted(atoms))
            if snap.buffers is not None and snap.buffers[d][c].size:
                label += f" = {snap.buffers[d][c].tolist()}"
            cells.append(label)
        rows.append([f"dev{d}", *cells])
    return table(rows, ["", *[f"chunk {c}" for c in range(k)]])


def show(collective: str, buffers: list, mesh, algorithm: str | None) -> None:
    print(f"\n=== {collective} ({algorithm or 'default'}) on {mesh.size} devices ===")
    devices = list(range(mesh.size))
    for snap in tpsim.stepwise(collective, buffers, mesh, algorithm=algorithm):
        if snap.step == 0:
            print("before the first step (cells: whose data a chunk holds = its values):")
        else:
            moves = ", ".join(
                f"dev{t.src}->dev{t.dst} chunk {t.chunks[0]} ({t.op})" for t in snap.transfers[:8]
            )
            more = f" and {len(snap.transfers) - 8} more" if len(snap.transfers) > 8 else ""
            print(f"\nstep {snap.step}: {moves}{more}")
            print(
                f"  simulated time {fmt_time(snap.time)}, bytes on links so far {fmt_bytes(snap.wire_bytes)}"
            )
        print_holdings(snap, devices=devices, describe=False)
    print()
    print(steps_text(mesh.trace))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tpsim", description=__doc__)
    ap.add_argument("--devices", type=int, default=4, help="virtual devices (default 4)")
    ap.add_argument("--length", type=int, default=8, help="elements per device buffer (default 8)")
    ap.add_argument(
        "--algorithm",
        default="ring",
        help="all-reduce algorithm: " + ", ".join(tpsim.ALGORITHMS[Collective.ALL_REDUCE]),
    )
    ap.add_argument(
        "--size-mib", type=int, default=256, help="buffer of the at-scale table (default 256 MiB)"
    )
    ap.add_argument("--topology", default="dgx-h100", help="preset: " + ", ".join(tpsim.presets.PRESETS))
    args = ap.parse_args(argv)
    if args.devices < 1 or args.length < 0:
        ap.error(f"--devices must be >= 1 (got {args.devices}) and --length >= 0 (got {args.length})")
    try:
        mesh = tpsim.Mesh(args.devices, topology=tpsim.presets.preset(args.topology, args.devices))
        # device d holds 10*d + [0, 1, 2, ...]: small integers, so every sum is exact
        buffers = [np.arange(args.length, dtype=np.float32) + 10 * d for d in range(args.devices)]
        show(Collective.ALL_REDUCE, buffers, mesh, args.algorithm)
        shards = [np.full(2, d, dtype=np.float32) for d in range(args.devices)]
        show(Collective.ALL_GATHER, shards, mesh, "ring")
    except tpsim.TpsimError as e:
        ap.error(str(e))
    print()
    print(at_scale(args.devices, args.topology, args.size_mib))
    print("\nThe traffic of the two collectives above, from the trace:\n")
    print(mesh.trace.summary())


def at_scale(devices: int, topology: str, size_mib: int) -> str:
    """Every all-reduce algorithm on a large buffer, shape-only: no data, the same schedules and bytes."""
    rows = []
    for algorithm in tpsim.ALGORITHMS[Collective.ALL_REDUCE]:
        mesh = tpsim.Mesh(devices, topology=tpsim.presets.preset(topology, devices))
        tpsim.all_reduce([tpsim.meta(size_mib << 18, "float32")] * devices, mesh, algorithm=algorithm)
        c = mesh.trace.collectives[-1]
        sent = max(d["sent"] for d in mesh.trace.per_device())
        rows.append(
            (algorithm, c.num_steps, fmt_bytes(sent), fmt_time(c.time), fmt_rate(c.algbw), fmt_rate(c.busbw))
        )
    return table(
        rows,
        ("algorithm", "steps", "max sent per device", "time", "algbw", "busbw"),
        f"A {size_mib} MiB float32 all-reduce on {devices} devices ({topology}), shape-only",
    )
