"""`tpsim fit-nccl LOG`: fit alpha and beta to an nccl-tests run and report the error per size.

    tpsim fit-nccl all_reduce.log                         collective and ranks read from the log
    tpsim fit-nccl ag.log --collective all_gather --ranks 8 --algorithm ring --min-size 1MiB
    tpsim fit-nccl ar.log --split 4MiB --algorithm tree,ring    a tree fit below 4 MiB, a ring one above

The model is tpsim's closed form of the chosen algorithm (costs.py), linear in alpha and 1 / bandwidth,
fitted on the relative error (cli/fit.py) to the out-of-place times.  The bytes are those of the
closed form; only the two parameters are fitted.  A ring fits large messages; NCCL switches to
trees and other protocols for small ones, which shows as larger errors there: use --min-size, or
--split to fit each size region (NCCL's algorithm and protocol regions) with its own alpha, beta and
closed form.  The error per size is reported either way, with its region.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

from tpsim.cli.args import add_command, add_output_flags, parse_size, parse_sizes, positive_int
from tpsim.cli.fit import FitError, fit
from tpsim.nccl_tests import COLLECTIVES, read
from tpsim.report import fmt_bytes, fmt_time, table


def register(sub) -> None:
    p = add_command(
        sub, "fit-nccl", "fit alpha and beta to an nccl-tests log, with the error per size", __doc__
    )
    p.add_argument("log", type=Path, help="the output of all_reduce_perf, all_gather_perf, ...")
    p.add_argument("--collective", choices=COLLECTIVES, help="default: read from the log")
    p.add_argument("--ranks", type=positive_int, help="default: the '# Rank' lines of the log")
    p.add_argument(
        "--algorithm",
        default="ring",
        help="tpsim's closed form to fit (default ring); with --split, one per region, comma-separated",
    )
    p.add_argument("--min-size", type=parse_size, default=0, help="ignore smaller messages (default 0)")
    p.add_argument(
        "--split",
        type=parse_sizes,
        default=[],
        help="sizes where a new region starts (e.g. 64KiB,4MiB): each region gets its own fit",
    )
    add_output_flags(p)
    p.set_defaults(func=run)


def run(args) -> tuple[dict, str]:
    log = read(args.log)
    collective = args.collective or log["collective"]
    ranks = args.ranks or log["ranks"]
    if collective is None or ranks is None:
        missing = "--collective" if collective is None else "--ranks"
        raise FitError(f"{args.log}: cannot tell {missing[2:]} from the log; pass {missing}")
    rows = [r for r in log["rows"] if r["size"] >= args.min_size and r["size"] > 0]
    if not args.split:
        result = fit(
            collective, args.algorithm, ranks, [r["size"] for r in rows], [r["time_s"] for r in rows]
        )
        result["log"] = str(args.log)
        return result, text(result)
    result = fit_regions(collective, args.algorithm, ranks, rows, sorted(args.split))
    result["log"] = str(args.log)
    return result, regions_text(result)


def fit_regions(collective: str, algorithms: str, ranks: int, rows: list[dict], split: list[int]) -> dict:
    """One fit per size region [split[i-1], split[i]); `algorithms` one for all or one per region."""
    edges: list[int | None] = [0, *split, None]
    names = algorithms.split(",")
    if len(names) not in (1, len(edges) - 1):
        raise FitError(
            f"--algorithm {algorithms!r} names {len(names)} algorithms for {len(edges) - 1} regions; "
            "valid: one, or one per region"
        )
    regions, points = [], []
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        lo = lo or 0
        inside = [r for r in rows if r["size"] >= lo and (hi is None or r["size"] < hi)]
        where = f"region {i} [{fmt_bytes(lo)}, {fmt_bytes(hi) if hi is not None else 'end'})"
        if len(inside) < 2:
            raise FitError(f"{where} holds {len(inside)} sizes; a fit needs at least 2: move --split")
        algo = names[i] if len(names) > 1 else names[0]
        r = fit(collective, algo, ranks, [x["size"] for x in inside], [x["time_s"] for x in inside])
        regions.append(dict(r, region=i, min_size=lo, max_size=hi))
        points += [dict(pt, region=i, algorithm=algo) for pt in r["points"]]
    errors = [abs(pt["error"]) for pt in points]
    return {
        "collective": collective,
        "world_size": ranks,
        "regions": regions,
        "points": points,
        "max_abs_error": max(errors),
        "median_abs_error": statistics.median(errors),
    }


def text(r: dict) -> str:
    bw = fmt_bytes(r["bandwidth"]) + "/s" if r["bandwidth"] else "none"
    head = (
        f"{r['collective']} ({r['algorithm']}, {r['world_size']} ranks) fitted to {r['log']}: "
        f"alpha {fmt_time(r['alpha'])}, bandwidth {bw}; error median {r['median_abs_error']:.1%}, "
        f"worst {r['max_abs_error']:.1%}"
    )
    body = [
        (fmt_bytes(p["size"]), fmt_time(p["measured"]), fmt_time(p["predicted"]), f"{p['error']:+.1%}")
        for p in r["points"]
    ]
    return head + "\n\n" + table(body, ("size", "measured", "predicted", "error"), "Per size")


def regions_text(r: dict) -> str:
    heads = [
        f"{r['collective']} ({r['world_size']} ranks) fitted to {r['log']} in {len(r['regions'])} regions: "
        f"error median {r['median_abs_error']:.1%}, worst {r['max_abs_error']:.1%}"
    ]
    for g in r["regions"]:
        bw = fmt_bytes(g["bandwidth"]) + "/s" if g["bandwidth"] else "none"
        upto = fmt_bytes(g["max_size"]) if g["max_size"] else "end"
        heads.append(
            f"  region {g['region']} [{fmt_bytes(g['min_size'])}, {upto}), {g['algorithm']}: "
            f"alpha {fmt_time(g['alpha'])}, bandwidth {bw}, worst error {g['max_abs_error']:.1%}"
        )
    body = [
        (
            fmt_bytes(p["size"]),
            str(p["region"]),
            p["algorithm"],
            fmt_time(p["measured"]),
            fmt_time(p["predicted"]),
            f"{p['error']:+.1%}",
        )
        for p in r["points"]
    ]
    cols = ("size", "region", "algorithm", "measured", "predicted", "error")
    return "\n".join(heads) + "\n\n" + table(body, cols, "Per size")
