"""Memory per device: what is in use, stacked by category, against the device's capacity.

Read from `mesh.memory()`: the bytes each device has in use now under each category (weights,
grads, activations, tensor, comm, ...), its peak, and its capacity.
"""

from __future__ import annotations

from tpsim.report import fmt_bytes
from tpsim.viz.style import MEMORY_COLORS, new_axes, scaled_axis

NOT_CATEGORIES = ("device", "used", "peak", "capacity")
OFF_SCALE = 4.0  # a capacity this many times above the tallest bar is written, not drawn


def categories(rows: list[dict]) -> list[str]:
    """The categories in use on any device: the known ones in their order, then the rest by name."""
    seen = {k for r in rows for k, v in r.items() if k not in NOT_CATEGORIES and v}
    return [c for c in MEMORY_COLORS if c in seen] + sorted(seen - set(MEMORY_COLORS))


def memory(mesh, *, peak: bool = True, ax=None):
    """Stacked bars of each device's memory in use by category, with its capacity as a line.

    Args:
        mesh: the Mesh whose devices to show (`mesh.memory()`).
        peak: mark each device's peak use with a short black tick.
        ax: axes to draw into; None makes a new figure.

    Returns:
        The Figure.  Bar segments are in bytes, with gid '{category} dev{d}'; the capacity line has
        gid 'capacity' (drawn when every device has the same finite capacity and it is within 4x of
        the tallest bar, else stated in the title).
    """
    rows = mesh.memory()
    cats = categories(rows)
    n = len(rows)
    fig, ax = new_axes(ax, (min(12.0, 3.0 + 0.5 * n), 3.8))
    bottom = [0] * n
    for i, c in enumerate(cats):
        heights = [r.get(c, 0) for r in rows]
        color = MEMORY_COLORS.get(c, str(0.35 + 0.5 * i / max(1, len(cats))))
        bars = ax.bar(range(n), heights, bottom=bottom, color=color, label=c, width=0.7)
        for d, bar in enumerate(bars):
            bar.set_gid(f"{c} dev{d}")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    tallest = max([*bottom, *(r["peak"] for r in rows)] if peak else bottom, default=0)
    if peak:
        ax.hlines([r["peak"] for r in rows], [d - 0.4 for d in range(n)], [d + 0.4 for d in range(n)],
                  colors="black", linewidth=1.5, label="peak", gid="peak")
    caps = {r["capacity"] for r in rows}
    capacity = caps.pop() if len(caps) == 1 else None
    note = ""
    if capacity is not None and capacity <= OFF_SCALE * max(tallest, 1):
        ax.axhline(capacity, color="#d62728", linestyle="--", linewidth=1.5, label="capacity", gid="capacity")
        tallest = max(tallest, capacity)
    elif capacity is not None:
        note = f"; capacity {fmt_bytes(capacity)} (off the scale)"
    elif any(r["capacity"] for r in rows):
        note = "; capacities differ: " + ", ".join(fmt_bytes(r["capacity"] or 0) for r in rows)
    if tallest > 0:
        scaled_axis(ax.yaxis, tallest, "bytes", "memory")
        ax.set_ylim(0, tallest * 1.1)
    ax.set_xticks(range(n), [f"dev{r['device']}" for r in rows], fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    most = max(rows, key=lambda r: r["used"]) if rows else None
    used = f"most in use: dev{most['device']} {fmt_bytes(most['used'])}" if most else ""
    ax.set_title(f"Memory per device\n{used}{note}", fontsize=9)
    return fig
