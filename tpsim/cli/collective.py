"""`tpsim collective`: one collective on n virtual devices, shape-only: steps, bytes, time, closed form.

    tpsim collective all-reduce --devices 8 --algorithm ring --size 64MiB --steps
    tpsim collective all-gather --devices 16 --device a100        on two DGX A100 nodes

The size is S as nccl-tests reports it: the whole buffer of one rank (all-gather: its output,
reduce-scatter: its input).  The engine runs the schedule on shape-only buffers on the topology;
the topology is --device's standard node (default h100: dgx-h100) unless --topology; the closed form
(tpsim.collectives.costs) uses the alpha and bandwidth of the path from device 0
to device 1 as if every pair had its own link, so the two differ where links are shared.
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.cli import budget
from tpsim.cli.args import add_command, add_device_flags, add_output_flags, choice, parse_size, positive_int
from tpsim.cli.node import choose
from tpsim.collectives import costs
from tpsim.collectives.algorithms import ALGORITHMS, check_algorithm
from tpsim.collectives.kinds import Collective
from tpsim.errors import AlgorithmError, ShapeError, WorldSizeError
from tpsim.report import fmt_bytes, fmt_rate, fmt_time, steps_text, table

NAMES = {c.replace("_", "-"): c for c in ALGORITHMS}
DTYPES = ("float32", "bfloat16", "float16", "float64", "int32", "int8")


def register(sub) -> None:
    p = add_command(
        sub, "collective", "one collective: steps, bytes per device, time vs closed form", __doc__
    )
    p.add_argument(
        "collective",
        type=choice(NAMES | {c: c for c in ALGORITHMS}, "collective", NAMES),
        help=", ".join(NAMES) + " (or with underscores)",
    )
    p.add_argument("--devices", type=positive_int, default=8, help="virtual devices (default 8)")
    p.add_argument(
        "--algorithm",
        default=None,
        help="; ".join(f"{NAMES_R[c]}: {', '.join(a)}" for c, a in ALGORITHMS.items())
        + " (default: the first)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("64MiB"),
        help="S per rank, e.g. 64MiB, 1GB (default 64MiB)",
    )
    p.add_argument(
        "--dtype", default="float32", type=choice(DTYPES, "dtype"), help="element type (default float32)"
    )
    p.add_argument("--root", type=int, default=0, help="root rank of broadcast, reduce, scatter, gather")
    p.add_argument("--steps", action="store_true", help="list every step: transfers, bytes, timing")
    p.add_argument(
        "--force",
        action="store_true",
        help=f"run even when the estimate is past {budget.LIMIT_S:.0f} s or "
        f"{budget.LIMIT_BYTES >> 30} GiB (estimated for more than {budget.FREE_UP_TO} devices)",
    )
    p.add_argument(
        "--holdings",
        action="store_true",
        help="after every step, who holds what: each chunk's contributing devices "
        f"(up to {MAX_HOLDINGS} devices)",
    )
    p.add_argument("--plot", metavar="PNG", help="save the traffic matrix and the cost curves (matplotlib)")
    p.add_argument("--trace", metavar="JSON", help="save a Chrome/Perfetto trace of the run")
    add_device_flags(p)
    add_output_flags(p)
    p.set_defaults(func=run)


NAMES_R = {c: c.replace("_", "-") for c in ALGORITHMS}
MAX_HOLDINGS = 16  # a table per step, a column per chunk: wider than this is no longer readable


def run(args) -> tuple[dict, str]:
    coll, p = args.collective, args.devices
    algorithm = check_algorithm(coll, args.algorithm)
    itemsize = np.dtype(tpsim.bfloat16 if args.dtype == "bfloat16" else args.dtype).itemsize
    per_rank = args.size // p if coll in (Collective.ALL_GATHER, Collective.GATHER) else args.size
    unit = itemsize * (
        p
        if coll
        in (
            Collective.ALL_GATHER,
            Collective.GATHER,
            Collective.REDUCE_SCATTER,
            Collective.SCATTER,
            Collective.ALL_TO_ALL,
        )
        else 1
    )
    if args.size % unit:
        raise ShapeError(
            f"--size {args.size} B does not split into {p} ranks of whole {args.dtype} elements "
            f"for {coll}; valid: a multiple of {unit} B"
        )
    if (
        coll in (Collective.BROADCAST, Collective.REDUCE, Collective.SCATTER, Collective.GATHER)
        and not 0 <= args.root < p
    ):
        raise AlgorithmError(f"--root {args.root} is not a rank of {p} devices; valid: 0..{p - 1}")
    if args.holdings and p > MAX_HOLDINGS:
        raise WorldSizeError(
            f"--holdings shows at most {MAX_HOLDINGS} devices, not --devices {p}; valid: 1..{MAX_HOLDINGS}"
        )
    kw = (
        {"root": args.root}
        if coll in (Collective.BROADCAST, Collective.REDUCE, Collective.SCATTER, Collective.GATHER)
        else {}
    )
    budget.check(  # before p's own topology is built (seconds at 10^6 devices)
        coll,
        algorithm,
        p,
        lambda q: choose(args, q).topology,
        kw,
        args.force,
        lambda: _closed_form_note(coll, algorithm, p, args.size, choose(args, budget.PROBES[1]).topology),
    )
    machine = choose(args, p)
    topo, note = machine.topology, machine.note
    mesh = tpsim.Mesh(p, topology=topo)
    buffers = [tpsim.meta((per_rank // itemsize,), args.dtype)] * p
    getattr(tpsim, coll)(buffers, mesh, algorithm=algorithm, **kw)
    rec = mesh.trace.collectives[-1]
    sent = [d["sent"] for d in mesh.trace.per_device()]
    path = topo.path(0, 1) if p > 1 else ()
    alpha = sum(lk.alpha for lk in path)
    bandwidth = min((lk.bandwidth for lk in path), default=float("inf"))
    closed: dict[str, object] = {
        "alpha": alpha,
        "bandwidth": bandwidth,
        "time": costs.cost(coll, algorithm, p, args.size, alpha, bandwidth) if p > 1 else 0.0,
    }
    try:
        closed["sent_per_rank"] = costs.bytes_sent_per_rank(coll, algorithm, p, args.size)
    except AlgorithmError:
        closed["sent_per_rank"] = None  # ranks send different amounts: see sent_per_device
    result = {
        "collective": coll,
        "algorithm": algorithm,
        "devices": p,
        "size": args.size,
        "dtype": args.dtype,
        "topology": topo.name,
        "topology_note": note,
        "machine": machine.record(),
        "steps": rec.num_steps,
        "time": rec.time,
        "algbw": rec.algbw if rec.time else None,
        "busbw": rec.busbw if rec.time else None,
        "wire_bytes": rec.wire_bytes,
        "sent_per_device": sent,
        "closed_form": closed,
    }
    if args.steps:
        result["per_step"] = mesh.trace.per_step()
    snapshots = _snapshots(coll, buffers, p, topo, algorithm, kw) if args.holdings else []
    if snapshots:  # device -> per chunk: the sorted devices whose data it holds (None: nothing yet)
        result["holdings"] = [{"step": s.step, "holds": _holds(s)} for s in snapshots]
    if args.trace:
        mesh.trace.to_chrome_trace(args.trace)
        result["trace_file"] = args.trace
    if args.plot:
        result["plot_file"] = _plot(args.plot, mesh, coll, algorithm, p, topo, args.size)
    return result, _text(result, mesh, args.steps) + _holdings_text(snapshots)


def _closed_form_note(coll: str, algorithm: str, p: int, size: int, topo) -> str:
    """The closed form's time (free to compute), from the alpha and bandwidth of one pair of links."""
    path = topo.path(0, 1)
    alpha, bandwidth = sum(lk.alpha for lk in path), min(lk.bandwidth for lk in path)
    seconds = costs.cost(coll, algorithm, p, size, alpha, bandwidth)
    return f"The closed form, with no simulation: {fmt_time(seconds)} for the collective itself."


def _holds(snapshot) -> dict:
    return {d: [None if h is None else sorted(h) for h in chunks] for d, chunks in snapshot.holds.items()}


def _snapshots(coll: str, buffers, p: int, topo, algorithm: str, kw: dict) -> list:
    """Step through the same collective on a fresh mesh, shapes only, keeping every Snapshot."""
    return list(tpsim.stepwise(coll, buffers, tpsim.Mesh(p, topology=topo), algorithm=algorithm, **kw))


def _holdings_text(snapshots: list) -> str:
    if not snapshots:
        return ""
    import io

    from rich.console import Console

    from tpsim.viz import holdings

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for s in snapshots:
        console.print(holdings(s))
    return "\n" + out.getvalue().rstrip()


def _plot(path: str, mesh, coll: str, algorithm: str, p: int, topo, size: int) -> str:
    from tpsim.cli.plotting import figure

    with figure(path, ncols=2, width=12.5) as axes:
        from tpsim import viz

        viz.traffic_heatmap(mesh.trace, ax=axes[0])
        axes[0].set_title(f"bytes sent, src -> dst: {coll} ({algorithm}), {fmt_bytes(size)}", fontsize=9)
        if p > 1:
            sizes = sorted({1 << k for k in range(10, 31, 2)} | {size})
            viz.cost_curves(coll, p, topo, sizes=sizes, algorithms=[algorithm], measured=True, ax=axes[1])
            axes[1].axvline(size, color="grey", linestyle=":")
    return path


def _text(r: dict, mesh, steps: bool) -> str:
    c = r["closed_form"]
    rows = [
        (
            "simulated on the topology",
            r["steps"],
            fmt_bytes(max(r["sent_per_device"])),
            fmt_time(r["time"]),
            fmt_rate(r["algbw"] or 0),
            fmt_rate(r["busbw"] or 0),
        ),
        (
            f"closed form (alpha {c['alpha'] * 1e6:.3g} us, {c['bandwidth'] / 1e9:.3g} GB/s per pair)",
            "",
            fmt_bytes(c["sent_per_rank"]) if c["sent_per_rank"] is not None else "(uneven)",
            fmt_time(c["time"]),
            "",
            "",
        ),
    ]
    title = (
        f"{r['collective']} ({r['algorithm']}) of {fmt_bytes(r['size'])} {r['dtype']} on {r['devices']} "
        f"devices, {r['topology']}"
    )
    head = ("", "steps", "max sent/device", "time", "algbw", "busbw")
    out = [r["machine"]["line"], table(rows, head, title)]
    if r["topology_note"]:
        out.append("note: " + r["topology_note"])
    out.append(f"bytes on links: {fmt_bytes(r['wire_bytes'])}")
    if steps:
        out.append(steps_text(mesh.trace))
    for key in ("trace_file", "plot_file"):
        if key in r:
            out.append(f"wrote {r[key]}")
    return "\n".join(out)
