"""A collective, step by step: devices on a ring or a grid, their chunks, and the step's transfers.

Each device is a box holding its buffer's chunks.  A chunk is cut into vertical stripes, one per
device whose contribution it holds (`Snapshot.holds`), in that device's colour: a chunk of a
finished all-reduce shows every colour.  Each transfer of the step that crosses a link is an arrow
from the sender's box to the receiver's, labelled with its chunk ids ('+' when it reduces); local
copies (src == dst) cross no link and are only counted in the title, with the running byte count
and simulated time.  `animate_collective` runs `tpsim.collectives.stepwise` and draws one frame per
snapshot: the state before the first step, then after each step.  Under each box is its buffer's
placement, the change the collective makes (P -> R for an all-reduce; `tpsim.viz.placements`).
"""

from __future__ import annotations

import math

from matplotlib.animation import FuncAnimation
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from tpsim.collectives.algorithms import build
from tpsim.collectives.api import stepwise
from tpsim.collectives.schedule import REDUCE, ROOTED
from tpsim.report import fmt_bytes, fmt_time
from tpsim.viz import placements
from tpsim.viz.style import EDGE, EMPTY, IDLE, device_color, fmt_value

CHUNK = 1.0  # chunk cell side, in data units
BOX_H = 1.7  # device box height: the label above one row of chunks
PAD = 0.25


def box_size(num_chunks: int) -> tuple[float, float]:
    """(width, height) of a device box holding `num_chunks` chunks."""
    return num_chunks * CHUNK + 2 * PAD, BOX_H


def device_positions(mesh, num_chunks: int) -> dict[int, tuple[float, float]]:
    """Centre of every device's box: a ring (clockwise from the top) for a 1-d mesh, a grid
    (mesh row r, column c at (c, -r), leading dims folded into rows) otherwise."""
    w, h = box_size(num_chunks)
    n = mesh.size
    if mesh.ndim == 1:
        if n == 1:
            return {0: (0.0, 0.0)}
        # big enough that neighbouring boxes keep a gap: chord 2 R sin(pi/n) > box diagonal + margin
        radius = max(2.2 * h, (math.hypot(w, h) + 1.2) / (2 * math.sin(math.pi / n)))
        angles = [2 * math.pi * d / n for d in range(n)]
        return {d: (radius * math.sin(a), radius * math.cos(a)) for d, a in enumerate(angles)}
    cols = mesh.shape[-1]
    return {d: ((d % cols) * (w + 1.6), -(d // cols) * (h + 1.6)) for d in range(n)}


def edge_point(centre, toward, num_chunks: int, margin: float = 0.12) -> tuple[float, float]:
    """Where the segment from `centre` to `toward` leaves the box at `centre` (plus a margin)."""
    w, h = box_size(num_chunks)
    vx, vy = toward[0] - centre[0], toward[1] - centre[1]
    t = min(w / 2 / abs(vx) if vx else math.inf, h / 2 / abs(vy) if vy else math.inf)
    norm = math.hypot(vx, vy)
    t += margin / norm if norm else 0.0
    return centre[0] + t * vx, centre[1] + t * vy


def show_step(
    snapshot,
    mesh,
    *,
    title: str | None = None,
    num_steps: int | None = None,
    values: bool | None = None,
    root: int | None = None,
    ax=None,
):
    """Draw one snapshot of a collective (from `tpsim.stepwise`): chunks, holdings, and transfers.

    Args:
        snapshot: a `Snapshot`; step 0 is the state before the first step.
        mesh: the mesh it ran on (for the device layout).
        title: the collective's name for the title; None takes it from the last collective in
            `mesh.trace` (the one a stepwise run is running).
        num_steps: the collective's step count, for 'step s of n' (None: 'step s').
        values: write each chunk's value in it; None does when every chunk has at most 1 element.
        root: the group rank of a rooted collective's root, as passed to stepwise (labels R on it).
        ax: axes to draw into; None makes a new figure.

    Returns:
        The Figure.  Arrows have gid 'transfer {src}->{dst}', device boxes 'box dev{d}', a chunk's
        stripes 'chunk {d}.{c} from dev{q}', the text under a box 'placement dev{d}': its buffer's
        placement (`tpsim.viz.placements`: P, R, S(0), "P -> R" while the steps run).
    """
    holds = snapshot.holds
    k = max((len(v) for v in holds.values()), default=1)
    pos = device_positions(mesh, k)
    w, h = box_size(k)
    n = mesh.size
    if values is None:
        buffers = snapshot.buffers or {}
        values = bool(buffers) and all(b.size <= 1 for chunks in buffers.values() for b in chunks)
    values = bool(values) and snapshot.buffers is not None
    if ax is None:
        import matplotlib.pyplot as plt

        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        span_x, span_y = max(xs) - min(xs) + w + 2, max(ys) - min(ys) + h + 2
        scale = 7.0 / max(span_x, span_y)
        fig, ax = plt.subplots(figsize=(max(4.0, span_x * scale + 0.5), max(3.5, span_y * scale + 1.2)),
                               layout="constrained")
    fig = ax.figure
    last = mesh.trace.collectives[-1] if mesh.trace.collectives else None
    labels = _placement_labels(last, mesh, snapshot.step, num_steps, root)
    for d in range(n):
        x0, y0 = pos[d][0] - w / 2, pos[d][1] - h / 2
        taking_part = d in holds
        ax.add_patch(
            FancyBboxPatch(
                (x0, y0), w, h, boxstyle="round,pad=0.02,rounding_size=0.15", facecolor="white",
                edgecolor=device_color(d, n) if taking_part else IDLE, linewidth=2.2, gid=f"box dev{d}",
            )
        )
        ax.text(pos[d][0], y0 + h - 0.33, f"dev{d}", ha="center", va="center", fontsize=9,
                color=EDGE if taking_part else IDLE, fontweight="bold")
        if d in labels:
            ax.text(pos[d][0], y0 - 0.08, labels[d], ha="center", va="top", fontsize=8, color=EDGE,
                    gid=f"placement dev{d}")
        for c, atoms in enumerate(holds.get(d, [])):
            _draw_chunk(ax, d, c, atoms, (x0 + PAD + c * CHUNK, y0 + PAD), n, snapshot if values else None)
    local = 0
    for t in snapshot.transfers:
        if t.src == t.dst:
            local += 1
            continue
        _draw_arrow(ax, t, pos, k, n)
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - w / 2 - 0.8, max(xs) + w / 2 + 0.8)
    ax.set_ylim(min(ys) - h / 2 - 0.8, max(ys) + h / 2 + 0.8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.text(0.5, -0.01, "a chunk is striped with the colours of the devices whose data it holds; "
            "arrow label: chunk ids, + = reduced into the receiver's", transform=ax.transAxes, ha="center",
            va="top", fontsize=7, color="#555555", wrap=True)
    if title is None:
        title = f"{last.collective} ({last.algorithm})" if last is not None else "collective"
    of = f" of {num_steps}" if num_steps is not None else ""
    where = "before the first step" if snapshot.step == 0 else f"step {snapshot.step}{of}"
    moves = len(snapshot.transfers) - local
    copies = f" + {local} local cop{'y' if local == 1 else 'ies'}" if local else ""
    ax.set_title(
        f"{title}: {where}, {moves} transfer{'s' if moves != 1 else ''}{copies}\n"
        f"{fmt_bytes(snapshot.wire_bytes)} on links so far, t = {fmt_time(snapshot.time)}",
        fontsize=10,
    )
    return fig


def _placement_labels(record, mesh, step: int, num_steps: int | None, root: int | None) -> dict[int, str]:
    """{device: its buffer's placement now} for the collective `record` (the one stepwise runs)."""
    if record is None or record.collective not in placements.CHANGES:
        return {}
    if num_steps is None:
        rooted = record.collective in ROOTED
        steps = build(record.collective, record.algorithm, record.group_size, (root or 0) if rooted else None)
        num_steps = len(steps.steps)
    groups = mesh.groups(record.mesh_dim)
    return placements.buffer_labels(record.collective, groups, step, num_steps, root)


def _draw_chunk(ax, d: int, c: int, atoms, corner, n: int, snapshot) -> None:
    """Chunk c of device d at `corner`: a stripe per contributing device, or blank when it holds none."""
    x, y = corner
    if not atoms:
        ax.add_patch(Rectangle((x, y), CHUNK, CHUNK, facecolor=EMPTY, edgecolor="#999999",
                               linestyle=(0, (2, 2)), linewidth=0.8, gid=f"chunk {d}.{c} empty"))
        return
    owners = sorted(atoms)
    for i, q in enumerate(owners):
        width = CHUNK / len(owners)
        ax.add_patch(Rectangle((x + i * width, y), width, CHUNK, facecolor=device_color(q, n),
                               edgecolor="none", gid=f"chunk {d}.{c} from dev{q}"))
    ax.add_patch(Rectangle((x, y), CHUNK, CHUNK, fill=False, edgecolor=EDGE, linewidth=0.8))
    if snapshot is not None and snapshot.buffers[d][c].size:
        ax.text(x + CHUNK / 2, y + CHUNK / 2, fmt_value(snapshot.buffers[d][c][0]), ha="center", va="center",
                fontsize=7, bbox=dict(boxstyle="round,pad=0.1", facecolor="white", alpha=0.8, linewidth=0),
                gid=f"value {d}.{c}")


def _draw_arrow(ax, t, pos, k: int, n: int) -> None:
    a, b = pos[t.src], pos[t.dst]
    start, end = edge_point(a, b, k), edge_point(b, a, k)
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=14, color=device_color(t.src, n), linewidth=1.6,
            connectionstyle="arc3,rad=0.18", shrinkA=0, shrinkB=0, gid=f"transfer {t.src}->{t.dst}",
            zorder=3,
        )
    )
    # the label sits a little off the chord, on the side the arc bends to
    mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
    dx, dy = end[0] - start[0], end[1] - start[1]
    off = 0.09
    chunks = ",".join(str(c) for c in t.chunks)
    ax.text(mx + off * dy, my - off * dx, ("+" if t.op == REDUCE else "") + f"c{chunks}", fontsize=7,
            ha="center", va="center", color=device_color(t.src, n), zorder=4,
            bbox=dict(boxstyle="round,pad=0.1", facecolor="white", alpha=0.85, linewidth=0))


def animate_collective(
    collective: str,
    buffers,
    mesh,
    *,
    algorithm: str | None = None,
    interval: int = 800,
    values: bool | None = None,
    figsize: tuple[float, float] | None = None,
    **kwargs,
) -> FuncAnimation:
    """Run `collective` step by step on `mesh` and animate it, one frame per snapshot.

    The collective really runs (`tpsim.collectives.stepwise`): its bytes land in `mesh.trace` and its
    time on the devices' clocks.  Frame 0 is the state before the first step, frame s the state
    after step s.

    Args:
        collective: 'all_reduce', 'all_gather', ... (see `tpsim.ALGORITHMS`).
        buffers: one array per device, as for `tpsim.all_reduce` & co.
        mesh: the mesh to run on.
        algorithm: the schedule (None: the default one).
        interval: milliseconds per frame.
        values: passed to `show_step`.
        figsize: the figure size; None sizes it to the layout.
        **kwargs: passed to stepwise (root, op, mesh_dim, ...).

    Returns:
        The FuncAnimation; its `snapshots` attribute holds the snapshots it draws.  Show it with
        `to_html(anim)` in a notebook, or write it with `save_gif(anim, path)`.
    """
    import matplotlib.pyplot as plt

    snapshots = list(stepwise(collective, buffers, mesh, algorithm=algorithm, **kwargs))
    record = mesh.trace.collectives[-1]
    title = f"{record.collective} ({record.algorithm}, {record.group_size} ranks)"
    steps = len(snapshots) - 1
    root = kwargs.get("root")
    first = show_step(snapshots[0], mesh, title=title, num_steps=steps, values=values, root=root)
    if figsize is not None:
        first.set_size_inches(figsize)
    ax = first.axes[0]

    def draw(i: int):
        ax.clear()
        show_step(snapshots[i], mesh, title=title, num_steps=steps, values=values, root=root, ax=ax)
        return []

    anim = FuncAnimation(first, draw, frames=len(snapshots), interval=interval, repeat=True, blit=False)
    anim.snapshots = snapshots  # type: ignore[attr-defined]  # the frames' data, for tests and to_html
    plt.close(first)  # shown through to_html / save_gif, not as a stray still image in notebooks
    return anim
