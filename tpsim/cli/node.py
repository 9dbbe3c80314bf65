"""--device and --topology together: a device runs on its own node unless --topology names another.

    choose(args, n) -> Choice       the DeviceSpec, the Topology for n devices, and how they were chosen

`--device a100` alone gives dgx-a100 (tpsim.nodes); `--topology dgx-h100 --device a100` is an error
(exit 2) unless --allow-mismatch, and then the output says so.  Generic topologies (pcie4, ring, ...)
and topology files belong to no device, so any device may use them.  Every command prints
`Choice.line` and records `Choice.record()` under "machine" in its --json output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpsim import presets
from tpsim.cli.args import topology_for
from tpsim.errors import TopologyError
from tpsim.hardware import DEVICES, DeviceSpec, device_spec
from tpsim.nodes import BY_DEVICE, NODES, Node
from tpsim.topology import Topology


@dataclass(frozen=True)
class Choice:
    device: str  # as given: a DEVICES key, or a saved preset's name or path
    spec: DeviceSpec
    topology: Topology
    own: Node | None  # the device's standard node
    node: Node | None  # the node the topology is, if it is one
    asked: bool  # --topology was given
    mismatch: bool  # the topology is another device's node (only with --allow-mismatch)
    achievable: bool
    note: str | None  # topology_for's note (a file extended to more devices)

    @property
    def line(self) -> str:
        t = self.topology
        rates = " and ".join(f"{b / 1e9:.4g}" for b in sorted(set(t.bandwidths.tolist())))
        links = f"links at {rates} GB/s per direction" if rates else "no links"
        generic = f"{links}; {t.source or 'no source given'}"
        what = self.node.summary(self.achievable) if self.node else generic
        if self.mismatch and self.node is not None and self.own is not None:
            not_own = f"NOT {self.device}'s ({self.own.name})"
            why = f"{self.node.device}'s node, {not_own}: allowed by --allow-mismatch"
        elif self.asked:
            why = "as --topology asked"
        else:
            why = f"{self.device}'s standard node"
        return f"machine: {self.spec.name} on {t.name}, {t.num_devices} devices ({what}); {why}"

    def record(self) -> dict:
        return {
            "device": self.device,
            "device_name": self.spec.name,
            "device_source": self.spec.source,
            "topology": self.topology.name,
            "topology_source": self.topology.source,
            "devices": self.topology.num_devices,
            "standard_node": self.own.name if self.own else None,
            "chosen_by": "--topology" if self.asked else "default",
            "mismatch": self.mismatch,
            "bandwidth": "achievable" if self.achievable else "nominal",
            "line": self.line,
        }


def own_node(device: str, spec: DeviceSpec) -> Node | None:
    """The standard node of a built-in device, or of a saved preset whose name names one ('...-h100-...')."""
    if device.lower() in BY_DEVICE:
        return BY_DEVICE[device.lower()]
    text = f"{Path(device).stem} {spec.name}".lower()
    return next((node for key, node in BY_DEVICE.items() if key in text), None)


def choose(args, n: int) -> Choice:
    """The device and the topology for n devices that args (--device, --topology, ...) ask for."""
    device = args.device
    spec = device_spec(device)
    own = own_node(device, spec)
    achievable = getattr(args, "bandwidth", "nominal") == "achievable"
    asked = args.topology is not None
    if not asked and own is None:
        raise TopologyError(
            f"device {device!r} names no standard node (built-in devices: {', '.join(DEVICES)}); "
            f"valid: pass --topology, a preset ({', '.join(presets.PRESETS)}) or a topology .json file"
        )
    assert asked or own is not None  # raised above: no --topology and no node of its own
    spec_text = args.topology if asked or own is None else own.name
    name = presets.canonical(spec_text) if spec_text in presets.PRESETS else None
    node = NODES.get(name) if name else None
    mismatch = node is not None and own is not None and node is not own
    if node is not None and own is not None and mismatch and not getattr(args, "allow_mismatch", False):
        raise TopologyError(
            f"--topology {spec_text} is the {node.title} node of {node.device}, not of --device {device}; "
            f"valid for {device}: {own.name} (its standard node, the default), a generic topology "
            f"({', '.join(presets.GENERIC)}) or a topology .json file; or pass --allow-mismatch to run "
            f"{device} on {node.device}'s node anyway"
        )
    topology, note = topology_for(spec_text, n, achievable)
    return Choice(device, spec, topology, own, node, asked, mismatch, achievable, note)
