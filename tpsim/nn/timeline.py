"""What each device did and when: a timeline of compute and communication read from the trace.

The time model: a device does one thing at a time.  A local op runs for its time in the mesh's
efficiency mode (`efficiency.op_time`: "peak", the roofline `hardware.DeviceSpec.time`, or
"realistic", GEMMs by their shape and the rest memory-bound) from the moment the device is free;
a collective starts when the last of its devices is free, and every one of them is busy until it
ends.  Compute and collectives therefore serialise on a device and never overlap.  Waiting for a
slower partner counts as idle, not as communication.

That is Megatron's forward: its TP all-reduces (and SP's all-gathers and reduce-scatters) block
the compute stream between the GEMMs that need their result.  Its backward overlaps one thing
this model does not: a column-parallel layer launches the all-reduce (SP: reduce-scatter) of
its input gradient asynchronously and computes the weight gradient meanwhile
(megatron/core/tensor_parallel/layers.py, relying on CUDA_DEVICE_MAX_CONNECTIONS=1).  So
predicted backward times are an upper bound, and efficiencies a lower bound.  The iteration model's
stream timeline (tpsim/plan/timeline.py, tp_overlap) does model that overlap.

    device_timeline(mesh, d)   the events of device d in order: compute ops and collectives
    utilisation(mesh)          per device: busy computing, busy communicating, idle, end time
    tp_efficiency(build, ts)   one layer at TP = 1 and at each t: T_1 / (t T_t), what a planner reads,
                               in either efficiency mode

The timeline reads the whole trace, so it assumes the mesh's clocks were never reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tpsim.darray import DArray
from tpsim.errors import TopologyError, WorldSizeError
from tpsim.hardware import device_spec
from tpsim.mesh import Mesh
from tpsim.report import fmt_time, table


def device_timeline(mesh, device: int) -> list[dict]:
    """Every compute op and collective of `device`, by start time.

    Each event: kind ("compute" / "collective"), name (the op or the collective), label (the
    module), direction ("forward" / "backward" / None), start, end (seconds), bytes; compute
    events add flops, gemm (the matmul's shape, None for a memory-bound op) and mode (the
    efficiency mode that priced it), collectives their algorithm.
    """
    _check_device(mesh, device)
    events = [
        {
            "kind": "compute",
            "name": op.name,
            "label": op.label,
            "direction": op.direction,
            "start": op.start,
            "end": op.end,
            "flops": op.flops,
            "bytes": op.nbytes,
            "gemm": op.gemm,
            "mode": op.mode,
        }
        for op in mesh.trace.compute
        if op.device == device
    ]
    events += [
        {
            "kind": "collective",
            "name": c.collective,
            "label": c.label,
            "direction": c.direction,
            "start": c.start,
            "end": c.end,
            "algorithm": c.algorithm,
            "bytes": c.nbytes,
        }
        for c in mesh.trace.collectives
        if device in c.devices
    ]
    return sorted(events, key=lambda e: (e["start"], e["end"]))


def utilisation(mesh) -> dict[int, dict[str, float]]:
    """Per device: seconds computing, communicating and idle, and when its last event ended.

    Idle is the rest of the whole run, [0, latest end over devices]: waiting for the partners of
    a collective, and waiting at the end for the slowest device.
    """
    compute = [0.0] * mesh.size
    comm = [0.0] * mesh.size
    end = [0.0] * mesh.size
    for op in mesh.trace.compute:
        compute[op.device] += op.end - op.start
        end[op.device] = max(end[op.device], op.end)
    for c in mesh.trace.collectives:
        for d in c.devices:
            comm[d] += c.end - c.start
            end[d] = max(end[d], c.end)
    makespan = max(end)
    return {
        d: {"compute": compute[d], "comm": comm[d], "idle": makespan - compute[d] - comm[d], "end": end[d]}
        for d in range(mesh.size)
    }


def tp_efficiency(
    build: Callable,
    tp_degrees: Iterable[int],
    device="h100",
    topology: str | Callable | None = None,
    efficiency: str = "peak",
) -> list[dict]:
    """Predicted forward + backward time of one layer at TP = 1 and at each degree t, and its efficiency.

    `build(mesh)` returns (module, x, dy): the layer on `mesh` and shape-only inputs (init=None,
    `tpsim.meta`), so that the analysis allocates nothing.  `topology` is a preset name
    (`presets.PRESETS`), a function t -> Topology, or None for the device's standard node.  Each row:
    tp, time (the latest device's end), compute, comm and idle (of the device that ends last),
    speedup T_1 / T_t and efficiency T_1 / (t T_t), 1.0 for perfect scaling, and mode: `efficiency`,
    the mode the meshes price compute in ("peak" or "realistic", tpsim/efficiency.py).
    """
    degrees = list(tp_degrees)
    for t in degrees:
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise WorldSizeError(f"TP degree {t!r} is invalid; valid: an integer >= 1")
    spec = device_spec(device)  # a device is needed: without one compute takes no time
    topology_of = _topology_maker(topology, spec)
    rows = []
    for t in dict.fromkeys([1, *degrees]):  # TP = 1 first, each degree once
        # unbounded memory: this asks how fast, not whether it fits (gpt.analyse reports memory)
        mesh = Mesh(t, device=spec, topology=topology_of(t), memory=1 << 62, efficiency=efficiency)
        module, x, dy = build(mesh)
        for name, value in (("x", x), ("dy", dy)):
            if not isinstance(value, DArray) or value.mesh is not mesh:
                raise WorldSizeError(f"build(mesh) returned {name} = {value!r}; it must be a DArray on it")
        module(x)
        module.backprop(dy)
        use = utilisation(mesh)
        last = max(use, key=lambda d: use[d]["end"])
        row = {"tp": t, "topology": mesh.topology.name, "device": spec.name, "mode": efficiency}
        row["time"] = use[last]["end"]
        rows.append(row | {k: use[last][k] for k in ("compute", "comm", "idle")})
    t1 = rows[0]["time"]
    for r in rows:
        r["speedup"] = t1 / r["time"] if r["time"] else float("nan")
        r["efficiency"] = r["speedup"] / r["tp"]
    return rows


def format_efficiency(rows: list[dict], title: str | None = None) -> str:
    """tp_efficiency's rows as a plain-text table; the default title names the efficiency mode."""
    if title is None:
        modes = sorted({r.get("mode", "peak") for r in rows})
        title = f"TP efficiency (mode {', '.join(modes)}; no compute/comm overlap)"
    body = [
        (
            r["tp"],
            fmt_time(r["time"]),
            fmt_time(r["compute"]),
            fmt_time(r["comm"]),
            f"{r['speedup']:.2f}",
            f"{r['efficiency']:.2f}",
        )
        for r in rows
    ]
    return table(body, ("tp", "time", "compute", "comm", "speedup", "efficiency"), title)


def _topology_maker(topology, spec) -> Callable:
    if callable(topology):
        return topology
    from tpsim.presets import PRESETS, for_device, preset

    if topology is None:
        for_device(spec, 1)  # an unknown device fails here, before any layer runs
        return lambda n: for_device(spec, n)
    if topology not in PRESETS:
        raise TopologyError(f"unknown topology preset {topology!r}; valid: {', '.join(PRESETS)}")
    return lambda n: preset(topology, n)


def _check_device(mesh, device) -> None:
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < mesh.size:
        raise WorldSizeError(f"device {device!r} is not on the mesh; valid: 0..{mesh.size - 1}")
