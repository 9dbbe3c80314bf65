"""The `tpsim` command: how much TP costs on given hardware, against DP and PP, in numbers.

    tpsim collective all-reduce --devices 8 --size 64MiB    one collective, step by step
    tpsim layer mlp --hidden 12288 --tp 8 [--sp]             one layer's communication table
    tpsim model gpt3-175b --tp 8 --dp 4 --pp 8               a training step: traffic, memory, time
    tpsim compare --model gpt3-175b --devices 64             every TP x DP x PP layout, ranked
    tpsim serve-plan llama3-70b --gpus 8                     TP degrees for serving, by latency and throughput
    tpsim calibrate                                          measure gloo/NCCL, fit alpha and beta
    tpsim fit-gemm --numpy                                   measure GEMMs, fit compute efficiency
    tpsim fit-nccl all_reduce.log                            fit alpha and beta to an nccl-tests run
    tpsim bench                                              every benchmark, one results file
    tpsim demo  (or no arguments, or python -m tpsim)        the demo

--device D (default h100) runs on D's standard node (docs/hardware.md) unless --topology names another
machine; collective, layer, model and compare print the machine they used as their first line.
Every subcommand has --help and --json.  Bad arguments exit with status 2 and a message naming
the value and what would be valid, as argparse does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from tpsim.cli import bench, calibrate, collective, compare, fit_gemm, fit_nccl, layer, model, serve_plan
from tpsim.errors import TpsimError

SUBCOMMANDS = (collective, layer, model, compare, serve_plan, calibrate, fit_gemm, fit_nccl, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpsim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    demo = sub.add_parser("demo", help="the demo of `python -m tpsim` (its own --help)", add_help=False)
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    demo.set_defaults(func=None)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)  # errors print the subcommand's own usage
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] == "demo":
        from tpsim.demo import main as demo

        demo(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        result, text = args.func(args)
    except TpsimError as e:
        args.command_parser.error(str(e))  # exits with status 2
    if args.json:
        print(json.dumps(_finite(result), indent=2, default=_jsonable))
    else:
        print(text)
    return result.get("exit_code", 0) if isinstance(result, dict) else 0


def _finite(x):
    """JSON has no inf or nan: they become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _jsonable(x):
    if hasattr(x, "item"):  # NumPy scalars
        return _finite(x.item())
    return str(x)
