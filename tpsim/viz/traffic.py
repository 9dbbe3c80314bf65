"""Where the bytes went: the src x dst traffic matrix and the load on each link, from a trace."""

from __future__ import annotations

import numpy as np

from tpsim.report import fmt_bytes, fmt_time
from tpsim.viz.style import new_axes, scaled_axis


def _trace_of(trace_or_mesh):
    """A Trace, given a Trace or a Mesh."""
    trace = getattr(trace_or_mesh, "trace", trace_or_mesh)
    if not hasattr(trace, "traffic_matrix"):
        raise TypeError(f"need a tpsim Trace or Mesh, got {type(trace_or_mesh).__name__}")
    return trace


def traffic_heatmap(trace, *, annotate: bool | None = None, ax=None):
    """Bytes sent from each device (row) to each device (column): `trace.traffic_matrix()`.

    Args:
        trace: a Trace (`mesh.trace`) or a Mesh.
        annotate: write the bytes in each cell; None does for at most 8 devices.
        ax: axes to draw into; None makes a new figure.

    Returns:
        The Figure; its image holds the matrix itself, in bytes.
    """
    trace = _trace_of(trace)
    m = trace.traffic_matrix()
    n = len(m)
    fig, ax = new_axes(ax, (min(9.0, 2.8 + 0.45 * n), min(8.0, 2.4 + 0.42 * n)))
    image = ax.imshow(m, cmap="viridis", origin="upper", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    if m.max() > 0:
        scaled_axis(bar.ax.yaxis, float(m.max()), "bytes", "sent")
    if annotate is None:
        annotate = n <= 8
    if annotate:
        top = m.max() if m.max() > 0 else 1
        for s, d in np.ndindex(m.shape):
            if m[s, d]:
                ax.text(d, s, fmt_bytes(m[s, d]), ha="center", va="center", fontsize=7,
                        color="black" if m[s, d] > 0.6 * top else "white")
    ticks = np.arange(n) if n <= 32 else np.linspace(0, n - 1, 9).astype(int)
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.set_xlabel("destination device")
    ax.set_ylabel("source device")
    ax.set_title(f"Traffic: {fmt_bytes(m.sum())} on links, {len(trace.collectives)} collectives", fontsize=10)
    return fig


def link_load(trace, *, top: int | None = 32, ax=None):
    """Bytes each link carried over the whole trace (`trace.per_link()`), one bar per link used.

    Args:
        trace: a Trace or a Mesh.
        top: show only the `top` busiest links (None: all), in the topology's link order.
        ax: axes to draw into; None makes a new figure.

    Returns:
        The Figure; bar heights are bytes, labels the link names, and each bar is annotated with
        how long the link was busy (bytes / bandwidth).
    """
    trace = _trace_of(trace)
    rows = trace.per_link()
    if top is not None and len(rows) > top:
        keep = sorted(np.argsort([-r["bytes"] for r in rows], kind="stable")[:top])
        rows = [rows[i] for i in keep]
    fig, ax = new_axes(ax, (min(14.0, 2.5 + 0.38 * max(len(rows), 4)), 3.8))
    if not rows:
        ax.text(0.5, 0.5, "no bytes crossed a link", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    names = [r["link"] for r in rows]
    heights = [r["bytes"] for r in rows]
    bars = ax.bar(range(len(rows)), heights, color="#4c72b0")
    for bar, r in zip(bars, rows, strict=True):
        bar.set_gid(f"link {r['link']}")
    if len(rows) <= 16:
        ax.bar_label(bars, [fmt_time(r["busy"]) for r in rows], fontsize=7, padding=2)
    ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
    scaled_axis(ax.yaxis, max(heights), "bytes", "bytes carried")
    ax.set_ylim(0, max(heights) * 1.12)
    busiest = max(rows, key=lambda r: r["busy"])
    ax.set_title(f"Link load ({len(rows)} links); busiest {busiest['link']}: {fmt_bytes(busiest['bytes'])}, "
                 f"busy {fmt_time(busiest['busy'])}", fontsize=10)
    return fig
