"""Cost curves: a collective's time against message size per algorithm, and TP efficiency against degree.

`cost_curves` draws the closed forms of `tpsim.collectives.costs` (alpha-beta, a uniform fully
connected network) and, with `measured=True`, marks the times the engine itself simulates on the
given topology (shape-only runs, so a 1 GiB buffer costs nothing).  Where the two differ the
topology is not a uniform fully connected one: shared ports, rings, several hops.
`efficiency_curve` draws `tpsim.nn.tp_efficiency`: one transformer layer, forward and backward,
at each TP degree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tpsim.collectives.algorithms import ALGORITHMS, check_algorithm
from tpsim.collectives.costs import cost
from tpsim.collectives.kinds import Collective
from tpsim.errors import TopologyError, WorldSizeError
from tpsim.viz.style import log_formatter, new_axes

DEFAULT_SIZES = tuple(1 << e for e in range(10, 31, 2))  # 1 KiB .. 1 GiB
GATHERS = (Collective.ALL_GATHER, Collective.GATHER)  # S is the output: each rank brings S / p


def alpha_bandwidth(topology, p: int) -> tuple[float, float, object]:
    """(alpha, bandwidth, Topology or None) for the closed forms: from an (alpha, bandwidth) pair, or
    from the path between devices 0 and 1 of a Topology or preset name (alphas summed, the slowest
    link's bandwidth)."""
    from tpsim import presets
    from tpsim.topology import Topology

    if isinstance(topology, str):
        topology = presets.preset(topology, p)
    if isinstance(topology, Topology):
        if topology.num_devices < p:
            raise TopologyError(
                f"topology {topology.name!r} has {topology.num_devices} devices; p = {p} needs at least {p}"
            )
        path = topology.path(0, 1)
        return sum(link.alpha for link in path), min(link.bandwidth for link in path), topology
    if isinstance(topology, Sequence) and len(topology) == 2:
        alpha, bandwidth = (float(v) for v in topology)
        return alpha, bandwidth, None
    raise TopologyError(
        f"topology {topology!r} is not a preset name, a Topology or an (alpha, bandwidth) pair; "
        f"presets: {', '.join(presets.PRESETS)}"
    )


def simulated_time(collective: str, algorithm: str, topology, p: int, nbytes: int, dtype="float32") -> float:
    """Seconds the engine takes for `collective` with S = nbytes on p devices of `topology`, shape-only."""
    from tpsim.collectives.api import run_collective
    from tpsim.mesh import Mesh
    from tpsim.meta import MetaArray

    itemsize = np.dtype(dtype).itemsize
    elements = max(1, nbytes // itemsize)
    mesh = Mesh(p, topology=topology)
    each = MetaArray((max(1, elements // p) if collective in GATHERS else elements,), dtype)
    buffers: list[MetaArray | None] = [each] * p
    if collective in (Collective.BROADCAST, Collective.SCATTER):
        buffers = [each] + [None] * (p - 1)  # only the root (rank 0) brings data
    run_collective(collective, buffers, mesh, algorithm=algorithm)
    return mesh.trace.collectives[-1].time


def cost_curves(
    collective: str,
    p: int,
    topology,
    *,
    sizes: Sequence[int] | None = None,
    algorithms: Sequence[str] | None = None,
    measured: bool = False,
    ax=None,
):
    """Time against message size S for each algorithm of `collective` on p devices (log-log).

    Args:
        collective: 'all_reduce', 'all_gather', ...
        p: the number of devices (>= 2).
        topology: a preset name ('nvlink', 'pcie4', ...), a Topology, or an (alpha, bandwidth) pair.
            The closed forms use the alpha and bandwidth of the path from device 0 to device 1.
        sizes: message sizes S in bytes (default 1 KiB to 1 GiB, every factor of 4).
        algorithms: the algorithms to draw (default: every one registered for `collective`).
        measured: also mark the engine's simulated time on the topology itself (not for an
            (alpha, bandwidth) pair, which has no topology: a fully connected one is built then).
        ax: axes to draw into; None makes a new figure.

    Returns:
        The Figure; line i holds `tpsim.collectives.costs.cost(collective, algorithms[i], p, S, alpha,
        bandwidth)` for each S, with gid 'closed form {algorithm}' (markers: 'simulated {algorithm}').
    """
    algorithms = list(algorithms) if algorithms is not None else list(ALGORITHMS.get(collective, ()))
    for a in algorithms or [None]:  # type: ignore[list-item]  # None: the collective's default
        check_algorithm(collective, a)
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 2:
        raise WorldSizeError(f"cost_curves needs p >= 2 devices, got {p!r} (one device moves nothing)")
    p = int(p)
    sizes = list(sizes) if sizes is not None else list(DEFAULT_SIZES)
    if not sizes or any(s <= 0 for s in sizes):
        raise WorldSizeError(f"message sizes must be > 0 bytes, got {sizes!r}")
    alpha, bandwidth, topo = alpha_bandwidth(topology, p)
    if measured and topo is None:
        from tpsim.presets import fully_connected

        topo = fully_connected(p, alpha, bandwidth)
    fig, ax = new_axes(ax, (6.4, 4.2))
    for a in algorithms:
        times = [cost(collective, a, p, s, alpha, bandwidth) for s in sizes]
        (line,) = ax.plot(sizes, times, marker="" if measured else ".", label=a, gid=f"closed form {a}")
        if measured:
            sim = [simulated_time(collective, a, topo, p, s) for s in sizes]
            ax.plot(sizes, sim, linestyle="none", marker="o", markersize=4, markerfacecolor="none",
                    color=line.get_color(), gid=f"simulated {a}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(log_formatter("bytes"))
    ax.yaxis.set_major_formatter(log_formatter("time"))
    ax.set_xlabel("message size S (bytes per rank, as nccl-tests)")
    ax.set_ylabel("time")
    ax.grid(True, which="major", alpha=0.3)
    name = getattr(topo, "name", "uniform")  # None: a bare (alpha, bandwidth) pair
    how = "lines: closed form, circles: simulated" if measured else "closed form"
    ax.set_title(f"{collective} on {p} devices ({name}: alpha {alpha * 1e6:.3g} us, "
                 f"{bandwidth / 1e9:.3g} GB/s)\n{how}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def block_builder(config, sp: bool = False) -> Callable:
    """build(mesh) -> (TransformerBlock, x, dy): one layer of `config` (a GPTConfig or preset name),
    shape-only, with x and dy (s, b, h) replicated (sharded by sequence with `sp`), dropout off."""
    from tpsim.darray import distribute
    from tpsim.meta import MetaArray
    from tpsim.nn.block import TransformerBlock
    from tpsim.nn.config import preset
    from tpsim.placement import Replicate, Shard

    cfg = preset(config) if isinstance(config, str) else config

    def build(mesh):
        block = TransformerBlock(mesh, cfg.hidden, cfg.num_heads, cfg.ffn, sequence_parallel=sp, init=None,
                                 dtype=cfg.dtype)
        shape, on = (cfg.seq_len, cfg.micro_batch, cfg.hidden), [Shard(0) if sp else Replicate()]
        x = distribute(MetaArray(shape, cfg.dtype), mesh, on)
        return block, x, distribute(MetaArray(shape, cfg.dtype), mesh, on)

    build.name = cfg.name  # type: ignore[attr-defined]  # the plot's label
    return build


def efficiency_curve(
    config_or_name,
    degrees: Sequence[int],
    *,
    sp: bool = False,
    device="h100",
    topology: str | Sequence[str] | Callable | None = None,
    ax=None,
    efficiency: str = "peak",
):
    """Predicted TP efficiency T_1 / (t T_t) of one transformer layer against the TP degree t.

    Args:
        config_or_name: a GPTConfig, a model preset name ('gpt3-175b', ...), or a function
            build(mesh) -> (module, x, dy) as `tpsim.nn.tp_efficiency` takes.
        degrees: the TP degrees (TP = 1 is always included, as the baseline).
        sp: sequence parallelism (for a config or name).
        device: the device preset ('h100', ...), for compute time.
        topology: a topology preset name, a list of them (one line each), a function t -> Topology, or
            None for the device's standard node.
        ax: axes to draw into; None makes a new figure.
        efficiency: the mode compute is priced in, "peak" or "realistic" (tpsim/efficiency.py); the
            title names it.

    Returns:
        The Figure; each line's y-data are the `efficiency` column of `tp_efficiency(...)` rows, its
        x-data their `tp`, with gid 'efficiency {topology}'.  The dashed line at 1 is perfect scaling.
    """
    from tpsim.nn.timeline import tp_efficiency

    build = config_or_name if callable(config_or_name) else block_builder(config_or_name, sp)
    name = getattr(build, "name", getattr(build, "__name__", "layer"))
    topologies: list[str | Callable | None]
    if topology is None or isinstance(topology, str) or callable(topology):
        topologies = [topology]
    else:
        topologies = list(topology)
    fig, ax = new_axes(ax, (5.6, 3.8))
    xs: list[int] = []
    for topo in topologies:
        rows = tp_efficiency(build, degrees, device=device, topology=topo, efficiency=efficiency)
        label = rows[-1]["topology"] if topo is None or callable(topo) else str(topo)
        xs = [r["tp"] for r in rows]
        ax.plot(xs, [r["efficiency"] for r in rows], marker="o", label=label, gid=f"efficiency {label}")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("TP degree t")
    ax.set_ylabel("efficiency T1 / (t Tt)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"TP efficiency of one {name} layer{' (SP)' if sp else ''} on {device}, fwd + bwd, "
                 f"no overlap, mode {efficiency}", fontsize=9)
    return fig
