"""`tpsim calibrate`: measure collectives on this machine through the reference, fit alpha and beta,
and write a topology file that every other command takes (--topology FILE).

    tpsim calibrate                                        1 KiB .. 64 MiB, gloo on CPU (NCCL on GPUs)
    tpsim calibrate --sizes 1KiB,64KiB,1MiB --reps 2 --out /tmp/t.json

For each collective (all_reduce, all_gather, reduce_scatter) the native backend (gloo or NCCL) is
timed over the size sweep at world size 2 and fitted, by least squares on the relative error, to
the closed form of each of tpsim's algorithms for it (costs.py): alpha and beta per collective and
algorithm, and the prediction error per size.  With --modes native,schedule, tpsim's own schedules
run over isend/irecv (reference.comm schedule mode) are timed and fitted to their own closed form too.

The topology written is a switch of `world size` devices whose links carry the fit named by --fit
(default all_reduce/ring of the native backend); the file also keeps every fit, every measurement
and the machine (tpsim.machine.describe_machine).  Commands extend it to more devices with the
same links.  Needs torch and a checkout (the reference is not installed with the wheel).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import tpsim
from tpsim.cli.args import add_command, add_output_flags, parse_sizes, positive_int
from tpsim.cli.fit import fit
from tpsim.cli.progress import bar
from tpsim.collectives.algorithms import ALGORITHMS, check_algorithm
from tpsim.collectives.kinds import Collective
from tpsim.errors import CalibrationError, TpsimError
from tpsim.machine import describe_machine
from tpsim.presets import switch
from tpsim.report import fmt_bytes, fmt_rate, fmt_time, table

COLLECTIVES = (Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.REDUCE_SCATTER)
CHECKOUT = Path(tpsim.__file__).resolve().parents[1]


def register(sub) -> None:
    p = add_command(
        sub, "calibrate", "measure collectives (gloo/NCCL), fit alpha and beta, write a topology", __doc__
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("1KiB..64MiB"),
        help="comma list or LOW..HIGH (powers of 2), S per rank (default 1KiB..64MiB)",
    )
    p.add_argument("--reps", type=positive_int, default=5, help="timed calls per size (default 5)")
    p.add_argument(
        "--statistic",
        choices=tuple(STATISTICS),
        default="median",
        help="per size, of the calls' times (each the slowest rank's): median (default) or min; min "
        "drops scheduler delays on a crowded machine (a woken rank may wait a whole timer tick)",
    )
    p.add_argument(
        "--collectives",
        default=",".join(COLLECTIVES),
        help=f"comma list of {', '.join(COLLECTIVES)} (default all)",
    )
    p.add_argument(
        "--modes", default="native", help="native, schedule, or both comma-separated (default native)"
    )
    p.add_argument("--world-size", type=positive_int, default=2, help="ranks (default 2)")
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto: CUDA (NCCL) when there are GPUs, else CPU (gloo)",
    )
    p.add_argument("--backend", default=None, choices=("gloo", "nccl"), help="override the backend choice")
    p.add_argument(
        "--fit",
        default="all_reduce/ring",
        help="the fit the topology's links carry (default all_reduce/ring)",
    )
    p.add_argument(
        "--out", help="topology file to write (default topologies/<backend>-<device>-<cpu or gpu>.json)"
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds before the run is ended (default 600)"
    )
    p.add_argument(
        "--gpu-report",
        metavar="FILE",
        help="instead of measuring: write a device preset (devices/<gpu>-<date>.json, or --out) from a "
        "python -m reference.gpu_check report's JSON; --device FILE then uses it",
    )
    add_output_flags(p)
    p.set_defaults(func=run)


def _parse(args) -> tuple[list[str], list[tuple[str, str | None]], tuple[str, str]]:
    colls = [c.strip().replace("-", "_") for c in args.collectives.split(",") if c.strip()]
    for c in colls:
        if c not in COLLECTIVES:
            raise CalibrationError(f"--collectives: unknown {c!r}; valid: {', '.join(COLLECTIVES)}")
    modes: list[tuple[str, str | None]] = []
    for m in args.modes.split(","):
        if m.strip() == "native":
            modes.append(("native", None))
        elif m.strip() == "schedule":
            algs = dict.fromkeys(a for c in colls for a in ALGORITHMS[c])
            modes += [("schedule", a) for a in algs]
        else:
            raise CalibrationError(f"--modes: unknown {m!r}; valid: native, schedule")
    coll, _, alg = args.fit.partition("/")
    if coll not in colls:
        raise CalibrationError(
            f"--fit {args.fit!r}: {coll!r} is not measured; valid collectives: {', '.join(colls)}"
        )
    check_algorithm(coll, alg or None)
    bad = [s for s in args.sizes if s % (4 * args.world_size)]
    if bad:
        raise CalibrationError(
            f"--sizes: {bad[0]} B is not a multiple of {4 * args.world_size} B "
            f"(float32 elements split over {args.world_size} ranks)"
        )
    return colls, modes, (coll, alg or check_algorithm(coll))


STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}


def measure(args, colls, modes) -> tuple[list[dict], dict]:
    """Spawn the ranks, run the sweep; rows of (mode, algorithm, collective, size, time) and the backend."""
    try:
        from reference.backend import choose_backend
        from reference.launch import spawn
        from tpsim.cli.measure import sweep
    except ImportError as e:
        where = f"cd {CHECKOUT}" if (CHECKOUT / "reference").is_dir() else "clone tpsim and cd into it"
        raise CalibrationError(
            f"calibration needs torch and the reference, which runs from a checkout, not an install "
            f"({e}); run it from the checkout's root: {where} && python -m tpsim calibrate ..."
        ) from e
    backend = choose_backend(args.world_size, args.device, args.backend)
    per_rank = spawn(
        sweep,
        args.world_size,
        args.sizes,
        args.reps,
        colls,
        modes,
        device=args.device,
        backend=args.backend,
        timeout=args.timeout,
    )
    rows = []
    for i, (mode, alg, coll, size, _) in enumerate(per_rank[0]):
        calls = zip(*(r[i][4] for r in per_rank), strict=True)  # per call: every rank's time
        slowest = [max(c) for c in calls]
        rows.append(
            {
                "mode": mode,
                "algorithm": alg,
                "collective": coll,
                "size": size,
                "time": STATISTICS[args.statistic](slowest),
                "calls": slowest,
            }
        )
    return rows, {"name": backend.name, "device_type": backend.device_type, "staged": backend.staged}


def fits_of(rows: list[dict], p: int) -> list[dict]:
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["algorithm"], r["collective"]), []).append(r)
    for (mode, alg, coll), rs in groups.items():
        models = ALGORITHMS[coll] if mode == "native" else (alg,)  # native: its algorithm is the backend's
        for model in models:
            f = fit(coll, model, p, [r["size"] for r in rs], [r["time"] for r in rs])
            out.append({"mode": mode, "measured_algorithm": alg, **f})
    return out


def run(args) -> tuple[dict, str]:
    if args.gpu_report:
        from tpsim.cli.gpu_report import run_calibrate

        return run_calibrate(args)
    colls, modes, (fit_coll, fit_alg) = _parse(args)
    start = time.perf_counter()
    with bar(args, f"measuring {len(args.sizes)} sizes on {args.world_size} ranks", 1) as update:
        try:
            rows, backend = measure(args, colls, modes)
        except TpsimError as e:
            raise CalibrationError(f"measurement failed: {e}") from e
        update(1, 1)
    fits = fits_of(rows, args.world_size)
    chosen = (
        next(
            f
            for f in fits
            if f["mode"] == "native" and f["collective"] == fit_coll and f["algorithm"] == fit_alg
        )
        if ("native", None) in modes
        else next(f for f in fits if f["collective"] == fit_coll and f["algorithm"] == fit_alg)
    )
    machine = describe_machine()
    if backend["device_type"] == "cuda":
        import torch

        machine["gpu"] = torch.cuda.get_device_name(0)
    name = f"{backend['name']}-{backend['device_type']}-{_slug(machine.get('gpu') or machine['cpu'])}"
    out = Path(args.out) if args.out else CHECKOUT / "topologies" / f"{name}.json"
    sizes = f"{fmt_bytes(min(args.sizes))}..{fmt_bytes(max(args.sizes))}"
    source = (
        f"fitted by `tpsim calibrate`: {backend['name']} on {backend['device_type']}, world size "
        f"{args.world_size}, {len(args.sizes)} sizes {sizes}, {args.statistic} of {args.reps} calls each; "
        "links carry the "
        f"{chosen['mode']} {fit_coll} fit to the {fit_alg} closed form; machine: {machine['summary']}"
        + (f", {machine['gpu']}" if "gpu" in machine else "")
    )
    if not chosen["bandwidth"]:
        raise CalibrationError(
            f"the {fit_coll}/{fit_alg} fit found no bandwidth term (beta = 0); measure larger sizes"
        )
    topo = switch(args.world_size, chosen["alpha"], chosen["bandwidth"])
    doc = {
        **topo.to_dict(),
        "name": name,
        "source": source,
        "machine": machine,
        "calibration": {
            "backend": backend,
            "world_size": args.world_size,
            "sizes": args.sizes,
            "reps": args.reps,
            "statistic": args.statistic,
            "links_from": f"{chosen['mode']} {fit_coll}/{fit_alg}",
            "wall_s": time.perf_counter() - start,
            "measurements": rows,
            "fits": fits,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    import json

    out.write_text(json.dumps(doc, indent=1) + "\n")
    tpsim.topology.Topology.load(out)  # what every command will do with it
    result = {
        "file": str(out),
        "name": name,
        "alpha": chosen["alpha"],
        "bandwidth": chosen["bandwidth"],
        "backend": backend,
        "machine": machine,
        "fits": fits,
    }
    return result, _text(result, chosen)


def _slug(text: str) -> str:
    words = re.sub(r"\(.*?\)|processor|cpu|\d+-core|@.*", "", text, flags=re.I).lower()
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:40] or "unknown"


def _text(r: dict, chosen: dict) -> str:
    rows = [
        (
            f["mode"] + (f" ({f['measured_algorithm']})" if f["measured_algorithm"] else ""),
            f["collective"],
            f["algorithm"],
            fmt_time(f["alpha"]),
            fmt_rate(f["bandwidth"]) if f["bandwidth"] else "-",
            f"{f['median_abs_error']:.1%}",
            f"{f['max_abs_error']:.1%}",
        )
        for f in r["fits"]
    ]
    parts = [
        table(
            rows,
            ("measured", "collective", "closed form", "alpha", "bandwidth", "median |err|", "max |err|"),
            f"Fits on {r['backend']['name']} ({r['backend']['device_type']}), {r['machine']['summary']}",
        )
    ]
    pts = [
        (fmt_bytes(q["size"]), fmt_time(q["measured"]), fmt_time(q["predicted"]), f"{q['error']:+.1%}")
        for q in chosen["points"]
    ]
    parts.append(
        table(
            pts,
            ("size", "measured", "predicted", "error"),
            f"{chosen['mode']} {chosen['collective']} against the {chosen['algorithm']} closed form",
        )
    )
    parts.append(
        f"wrote {r['file']}: alpha {fmt_time(r['alpha'])}, {fmt_rate(r['bandwidth'])} per link; "
        f"use it with --topology {r['file']}"
    )
    return "\n\n".join(parts)
