"""Shared looks: one colour per device, colours per event kind, and axes in bytes or seconds.

Every picture colours device d with `device_color(d, n)`, so a device keeps its colour from the
sharded array to the collective to the heatmap.  Artists hold raw numbers (bytes, seconds); only the
tick labels are scaled, so a test can compare what was drawn with what the simulator reported.
"""

from __future__ import annotations

import math

import matplotlib as mpl
from matplotlib import ticker

EMPTY = "#f4f4f4"  # a chunk or block that holds nothing
IDLE = "#bdbdbd"  # a device that takes no part
EDGE = "#333333"

# timeline: (kind, direction) -> colour; backward is the lighter shade of the same hue
EVENT_COLORS = {
    ("compute", "forward"): "#1f77b4",
    ("compute", "backward"): "#9ecae1",
    ("compute", None): "#1f77b4",
    ("collective", "forward"): "#d62728",
    ("collective", "backward"): "#fc9272",
    ("collective", None): "#d62728",
}

# memory categories in stacking order; anything else stacks after them in grey shades
MEMORY_COLORS = {
    "weights": "#1f77b4",
    "grads": "#ff7f0e",
    "activations": "#2ca02c",
    "tensor": "#9467bd",
    "comm": "#d62728",
}

BYTE_UNITS = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40))
TIME_UNITS = (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0))


def device_color(device: int, num_devices: int) -> tuple[float, float, float, float]:
    """The RGBA colour of `device` among `num_devices`: tab10 up to 10 devices, tab20 up to 20, then a
    sweep of the turbo colormap."""
    if num_devices <= 10:
        return mpl.colormaps["tab10"](device)
    if num_devices <= 20:
        return mpl.colormaps["tab20"](device)
    return mpl.colormaps["turbo"](device / max(1, num_devices - 1))


def device_hex(device: int, num_devices: int) -> str:
    """`device_color` as '#rrggbb' (for rich and HTML)."""
    return mpl.colors.to_hex(device_color(device, num_devices))


def unit(value: float, kind: str) -> tuple[str, float]:
    """The unit that shows `value` (bytes or seconds) as a number >= 1: ("MiB", 2**20), ("us", 1e-6)."""
    units = BYTE_UNITS if kind == "bytes" else TIME_UNITS
    name, scale = units[0]
    for n, s in units:
        if abs(value) >= s:
            name, scale = n, s
    return name, scale


def scaled_axis(axis, top: float, kind: str, label: str) -> float:
    """Tick `axis` (holding raw bytes or seconds) in the unit of `top`, about 5 round ticks; returns
    the scale (bytes or seconds per unit)."""
    name, scale = unit(top, kind)
    span = top / scale if top > 0 else 1.0
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    axis.set_major_locator(ticker.MultipleLocator(step * scale))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / scale:g}"))
    axis.set_label_text(f"{label} ({name})")
    return scale


def log_formatter(kind: str) -> ticker.FuncFormatter:
    """Tick labels for a log axis of raw bytes or seconds: '1 KiB', '4 MiB', '10 us'."""

    def fmt(v: float, _) -> str:
        if v <= 0:
            return "0"
        name, scale = unit(v, kind)
        return f"{v / scale:g} {name}"

    return ticker.FuncFormatter(fmt)


def new_axes(ax, figsize: tuple[float, float]):
    """`ax` and its figure, or a new pyplot figure with one axes when `ax` is None."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def fmt_value(v) -> str:
    """A number as short text: integers without '.0', others to 3 significant digits."""
    f = float(v)
    if math.isfinite(f) and f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.3g}"
