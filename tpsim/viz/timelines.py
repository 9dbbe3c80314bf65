"""What each device did and when: compute and collectives as bars on one lane per device.

Drawn from `tpsim.nn.device_timeline` rows: compute in blue, collectives in red, backward in the
lighter shade of each.  Gaps are idle time (waiting for a slower partner, or for the end).
"""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.patches import Patch

from tpsim.nn.timeline import device_timeline
from tpsim.report import fmt_time
from tpsim.viz.style import EVENT_COLORS, new_axes, scaled_axis

LANE = 0.7  # bar height; lanes are 1 apart


def lanes(rows_or_mesh) -> dict[int, list[dict]]:
    """{device: its timeline rows}, from a Mesh (every device), one device's rows, or such a dict."""
    if hasattr(rows_or_mesh, "trace") and hasattr(rows_or_mesh, "size"):
        return {d: device_timeline(rows_or_mesh, d) for d in range(rows_or_mesh.size)}
    if isinstance(rows_or_mesh, Mapping):
        return {int(d): list(r) for d, r in rows_or_mesh.items()}
    rows = list(rows_or_mesh)
    if any(not isinstance(r, Mapping) or not {"kind", "start", "end"} <= set(r) for r in rows):
        raise TypeError("timeline needs a Mesh, device_timeline(...) rows, or {device: rows}")
    return {0: rows}


def timeline(rows_or_mesh, *, labels: bool | None = None, ax=None):
    """Per-device timeline: a bar per compute op and per collective, forward and backward.

    Args:
        rows_or_mesh: a Mesh (every device, from its trace), the rows of one device
            (`tpsim.nn.device_timeline(mesh, d)`), or {device: rows}.
        labels: write each collective's name on its bar; None does when a lane has at most 60 events.
        ax: axes to draw into; None makes a new figure.

    Returns:
        The Figure.  Each bar starts at its event's start, spans end - start seconds, and has gid
        'event dev{d} {i}' for the i-th row of device d.
    """
    by_device = lanes(rows_or_mesh)
    devices = sorted(by_device)
    fig, ax = new_axes(ax, (10.0, 1.6 + 0.45 * len(devices)))
    end = max((r["end"] for rows in by_device.values() for r in rows), default=0.0)
    if labels is None:
        labels = max((len(r) for r in by_device.values()), default=0) <= 60
    for lane, d in enumerate(devices):
        for i, r in enumerate(by_device[d]):
            color = EVENT_COLORS.get((r["kind"], r.get("direction")), "#7f7f7f")
            (bar,) = ax.barh(lane, r["end"] - r["start"], left=r["start"], height=LANE, color=color,
                             edgecolor="white", linewidth=0.3)
            bar.set_gid(f"event dev{d} {i}")
            wide = end > 0 and (r["end"] - r["start"]) > 0.04 * end
            if labels and r["kind"] == "collective" and wide:
                ax.text((r["start"] + r["end"]) / 2, lane, r["name"].replace("_", "-"), ha="center",
                        va="center", fontsize=6, color="black")
    ax.set_yticks(range(len(devices)), [f"dev{d}" for d in devices], fontsize=8)
    ax.set_ylim(len(devices) - 0.5, -0.5)  # dev0 on top
    if end > 0:
        scaled_axis(ax.xaxis, end, "time", "simulated time")
        ax.set_xlim(0, end * 1.01)
    kinds = {(r["kind"], r.get("direction")) for rows in by_device.values() for r in rows}
    names = {"compute": "compute", "collective": "communication"}
    handles = [
        Patch(color=EVENT_COLORS[k], label=f"{names[k[0]]}, {k[1]}" if k[1] else names[k[0]])
        for k in EVENT_COLORS
        if k in kinds
    ]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    forward = [r["end"] for rows in by_device.values() for r in rows if r.get("direction") == "forward"]
    extra = f"; forward ends at {fmt_time(max(forward))}" if forward and max(forward) < end else ""
    ax.set_title(f"Per-device timeline: {fmt_time(end)} in all{extra}", fontsize=10)
    return fig
