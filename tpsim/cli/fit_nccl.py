"""`tpsim fit-nccl LOG`: fit alpha and beta to an nccl-tests run and report the error per size.

    tpsim fit-nccl all_reduce.log                         collective and ranks read from the log
    tpsim fit-nccl ag.log --collective all_gather --ranks 8 --algorithm ring --min-size 1MiB

The model is tpsim's closed form of the chosen algorithm (costs.py), linear in alpha and 1 / bandwidth,
fitted on the relative error (cli/fit.py) to the out-of-place times.  The bytes are those of the
closed form; only the two parameters are fitted.  A ring fits large messages; NCCL switches to
trees and other protocols for small ones, which shows as larger errors there (use --min-size).
"""

from __future__ import annotations

from pathlib import Path

from tpsim.cli.args import add_command, add_output_flags, parse_size, positive_int
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
    p.add_argument("--algorithm", default="ring", help="tpsim's closed form to fit (default ring)")
    p.add_argument("--min-size", type=parse_size, default=0, help="ignore smaller messages (default 0)")
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
    result = fit(collective, args.algorithm, ranks, [r["size"] for r in rows], [r["time_s"] for r in rows])
    result["log"] = str(args.log)
    return result, text(result)


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
