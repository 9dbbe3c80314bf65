"""Shared argument parsing of the tpsim command: sizes, topologies, models, and the common flags.

parse_size("64MiB") -> 67108864      B, KiB, MiB, GiB (powers of 2), KB, MB, GB (powers of 10)
topology_for("dgx-h100", 64)          a preset for n devices, or a topology file (e.g. from
                                      `tpsim calibrate`); a file with uniform links and fewer
                                      devices is extended to n devices with the same links
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tpsim import presets
from tpsim.errors import TopologyError, TpsimError
from tpsim.hardware import DEVICES, device_spec
from tpsim.nn.config import PRESETS as MODELS
from tpsim.nodes import BY_DEVICE
from tpsim.topology import Link, PairwiseRouting, RingRouting, SwitchRouting, Topology

UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """'64MiB' -> 67108864 bytes; an argparse type, so a bad value exits with status 2 and says why."""
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in UNITS:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}; valid: a number with an optional unit, one of B, KiB, MiB, GiB, TiB, "
            "KB, MB, GB, TB (e.g. 64MiB)"
        )
    value = float(m.group(1)) * UNITS[unit]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: {value:g} is not a whole number of bytes")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """'1KiB,64KiB,1MiB' -> [1024, 65536, 1048576]; 'a..b' -> every power of two from a to b."""
    if ".." in text:
        lo, hi = (parse_size(t) for t in text.split("..", 1))
        if lo < 1 or hi < lo:
            raise argparse.ArgumentTypeError(
                f"invalid size range {text!r}; valid: LOW..HIGH with 1 <= LOW <= HIGH"
            )
        out = []
        while lo <= hi:
            out.append(lo)
            lo *= 2
        return out
    return [parse_size(t) for t in text.split(",") if t.strip()]


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; valid: an integer >= 1")
    return v


def choice(valid, what: str, shown=None):
    """An argparse type accepting one of `valid` (a dict maps aliases to names); else it names them."""

    def parse(text: str) -> str:
        key = text.lower()
        if key not in valid:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; valid: {', '.join(shown or valid)}")
        return valid[key] if isinstance(valid, dict) else key

    return parse


def device_name(text: str) -> str:
    """A built-in device (DEVICES) or a saved device preset; the preset is loaded once to check it."""
    if text.lower() in DEVICES:
        return text.lower()
    try:
        device_spec(text)
    except TpsimError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def model_name(text: str) -> str:
    if text in MODELS or Path(text).suffix in (".json", ".toml"):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown model {text!r}; valid: a preset ({', '.join(MODELS)}) or a .json/.toml config file"
    )


def topology_for(spec: str, n: int, achievable: bool = False) -> tuple[Topology, str | None]:
    """(topology for n devices, a note or None).  `spec`: a preset name or a topology JSON file.

    `achievable`: a real node's achievable link rates instead of its datasheet ones (tpsim.nodes).
    """
    if spec in presets.PRESETS or spec in presets.RENAMED:
        return presets.preset(spec, n, achievable), None
    path = Path(spec)
    if path.suffix != ".json":
        raise TopologyError(
            f"unknown topology {spec!r}; valid: a preset ({', '.join(presets.PRESETS)}) "
            "or a topology .json file"
        )
    if not path.exists():
        raise TopologyError(f"topology file {spec!r} does not exist")
    if achievable:
        raise TopologyError(
            f"--bandwidth achievable applies to presets; topology file {spec!r} has its own figures"
        )
    topo = Topology.load(path)
    if topo.num_devices >= n:
        return topo, None
    figures = {(lk.alpha, lk.bandwidth) for lk in topo.links}
    rules = {"switch": SwitchRouting, "pairwise": PairwiseRouting, "ring": RingRouting}
    if len(figures) != 1 or topo.kind not in rules:
        raise TopologyError(
            f"topology file {spec!r} has {topo.num_devices} devices, fewer than the {n} needed, and its "
            "links differ, so it cannot be extended; write one for enough devices"
        )
    alpha, bandwidth = figures.pop()
    routing = rules[topo.kind]()
    links = [Link(name, alpha, bandwidth) for name in routing.link_names(n)]
    bigger = Topology(topo.name, n, links, routing, topo.source)
    note = (
        f"{spec}: measured on {topo.num_devices} devices; extended to {n} with the same {topo.kind} "
        f"links (per link: alpha {alpha * 1e6:.3g} us, {bandwidth / 1e9:.3g} GB/s)"
    )
    return bigger, note


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON (no progress bar)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    nodes = ", ".join(f"{n.device}: {n.name}" for n in BY_DEVICE.values())
    parser.add_argument(
        "--topology",
        default=None,
        help=f"a preset ({', '.join(presets.PRESETS)}) or a topology .json file, e.g. from `tpsim calibrate` "
        f"(default: the device's standard node, {nodes}; nvlink and multi-node are old names of dgx-h100)",
    )
    parser.add_argument(
        "--device",
        default="h100",
        type=device_name,
        help=f"accelerator: {', '.join(DEVICES)}, or a saved preset (a .json path or a name in devices/, "
        "from `tpsim calibrate --gpu-report`) (default h100)",
    )
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="allow --topology to be another device's node (e.g. dgx-h100 with --device v100)",
    )
    parser.add_argument(
        "--bandwidth",
        default="nominal",
        choices=("nominal", "achievable"),
        help="a real node's link rates: datasheet (nominal, the default) or achievable (tpsim.nodes)",
    )


def add_command(sub, name: str, help: str, doc: str | None) -> argparse.ArgumentParser:
    """One `tpsim` subcommand: its one-line help, and its module docstring as --help's text, as written."""
    return sub.add_parser(
        name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
