"""A sharded array as a picture: the global grid, each block coloured by the device that holds it.

The array is drawn in its global view, folded to 2-d (a 1-d array is one row; an n-d array has
its leading dims folded into rows).  Each device's patches, in its colour, cover exactly its block,
`local_slices(...)`: one rectangle (or one per run of rows, for n-d arrays sharded on a leading dim).
A block that m devices hold (Replicate, Partial) is striped instead: every cell (every twelfth of a
big block) is cut into m slivers, one per holder, so each holder's colour shows in every element.
Small arrays print their values: the global values, or with Partial each device's own term, one
line per device in each cell.
"""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Patch, Rectangle

from tpsim.darray import DArray
from tpsim.placement import Partial, local_slices
from tpsim.viz.style import EDGE, device_color, fmt_value, new_axes

AUTO_VALUES = 64  # print values when the array has at most this many elements
GRID_LINES = 48  # draw element borders when neither side of the 2-d view is longer


def view_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of the 2-d view of an array of `shape`: leading dims fold into rows."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return int(np.prod(shape[:-1])), shape[-1]


def device_rects(shape: tuple[int, ...], block: tuple[slice, ...]) -> list[tuple[int, int, int, int]]:
    """The block `block` of an array of `shape` in the 2-d view: (row, col, height, width) rectangles."""
    if len(shape) == 0:
        return [(0, 0, 1, 1)]
    if len(shape) == 1:
        s = block[0]
        return [(0, s.start, 1, s.stop - s.start)] if s.stop > s.start else []
    cols = block[-1]
    if cols.stop <= cols.start or any(s.stop <= s.start for s in block[:-1]):
        return []
    lead = np.ix_(*[np.arange(s.start, s.stop) for s in block[:-1]])
    rows = np.sort(np.ravel_multi_index(tuple(np.broadcast_arrays(*lead)), shape[:-1]).ravel())
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # split into runs of consecutive rows
    return [
        (int(run[0]), cols.start, len(run), cols.stop - cols.start) for run in np.split(rows, breaks)
    ]


def placement_text(x: DArray) -> str:
    """'tp=S(0)' or 'dp=R, tp=S(1)': the placement on each mesh dim, by name."""
    return ", ".join(f"{n}={p!r}" for n, p in zip(x.mesh.names, x.placements, strict=True))


def short_placement(x: DArray) -> str:
    """'S(0)' on a 1-d mesh, 'R,S(1)' on a 2-d one: what every block of `x` is labelled with."""
    return ",".join(repr(p) for p in x.placements)


def show_darray(x: DArray, *, values: bool | None = None, title: str | None = None, ax=None):
    """Draw the global array `x`, each block coloured by the device(s) holding it.

    Args:
        x: a DArray (data or shape-only).
        values: print the values in the cells; None prints them when `x` has data and at most
            64 elements.  With a Partial placement each device's term is printed, a line per device.
        title: replaces the first title line (the default names the shape, dtype and placements).
        ax: axes to draw into; None makes a new figure.

    Returns:
        The matplotlib Figure.  Each device's patches have gid 'dev{d}' and that device's colour;
        each block's top-left corner has its placement (`short_placement`), gid 'placement dev{d}'
        for the first device holding it, and the legend names each device with it.
    """
    if not isinstance(x, DArray):
        raise TypeError(f"show_darray needs a tpsim DArray, got {type(x).__name__}")
    mesh, n = x.mesh, x.mesh.size
    rows, cols = view_shape(x.shape)
    if values is None:
        values = not x.is_meta and int(np.prod(x.shape)) <= AUTO_VALUES
    values = bool(values) and not x.is_meta
    fig, ax = new_axes(ax, (min(12.0, 2.5 + 0.55 * cols), min(8.0, 1.4 + 0.55 * rows)))
    blocks: dict[tuple, list[int]] = {}  # the block's slices -> the devices that hold it
    for d in range(n):
        key = tuple((s.start, s.stop) for s in local_slices(x.shape, mesh, x.placements, d))
        blocks.setdefault(key, []).append(d)
    partial = any(isinstance(p, Partial) for p in x.placements)
    where = short_placement(x)
    for key, holders in blocks.items():
        block = tuple(slice(a, b) for a, b in key)
        rects = device_rects(x.shape, block)
        m = len(holders)
        for r0, c0, h, w in rects:
            for i, d in enumerate(holders):
                for left, width in _stripes(c0, w, i, m, fine=rows <= GRID_LINES and cols <= GRID_LINES):
                    ax.add_patch(
                        Rectangle((left, r0), width, h, facecolor=device_color(d, n), alpha=0.75,
                                  edgecolor="none", gid=f"dev{d}")
                    )
            ax.add_patch(Rectangle((c0, r0), w, h, fill=False, edgecolor=EDGE, linewidth=1.8))
            ax.text(c0 + 0.06, r0 + 0.06, where, ha="left", va="top", fontsize=6, color=EDGE,
                    gid=f"placement dev{holders[0]}",
                    bbox=dict(boxstyle="round,pad=0.05", facecolor="white", alpha=0.7, linewidth=0))
            if not values and rects:
                many = f"dev{holders[0]}..{holders[-1]}"
                names = "dev" + ",".join(str(d) for d in holders) if m <= 4 else many
                ax.text(c0 + w / 2, r0 + h / 2, names, ha="center", va="center", fontsize=8)
        if values and partial and rects:
            for line, d in enumerate(holders):
                _print_values(ax, x.shape, block, x.local(d), line, m, color=device_color(d, n))
    if values and not partial:
        full = x.full()
        _print_values(ax, x.shape, tuple(slice(0, s) for s in x.shape), full, 0, 1)
    if rows <= GRID_LINES and cols <= GRID_LINES:
        ax.hlines(np.arange(1, rows), 0, cols, color="white", linewidth=0.6)
        ax.vlines(np.arange(1, cols), 0, rows, color="white", linewidth=0.6)
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)  # row 0 on top, as the array prints
    ax.set_aspect("equal" if max(rows, cols) <= 50 * min(rows, cols) else "auto")
    ax.set_xticks(np.arange(cols) + 0.5 if cols <= GRID_LINES else [])
    ax.set_xticklabels([str(i) for i in range(cols)] if cols <= GRID_LINES else [], fontsize=7)
    ax.set_yticks(np.arange(rows) + 0.5 if rows <= GRID_LINES else [])
    ax.set_yticklabels(_row_labels(x.shape) if rows <= GRID_LINES else [], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    first = title or f"{x.shape} {x.dtype}: {placement_text(x)}"
    kind = "values are each device's term" if partial and values else ("values" if values else "")
    dims = dict(zip(mesh.names, mesh.shape, strict=True))
    ax.set_title(f"{first}\nmesh {dims}" + (f", {kind}" if kind else ""), fontsize=9)
    if n <= 16:
        handles = [Patch(facecolor=device_color(d, n), alpha=0.75, label=f"dev{d} {where}") for d in range(n)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


def _stripes(c0: int, w: int, i: int, m: int, fine: bool) -> list[tuple[float, float]]:
    """(left, width) of holder i's stripes in a block of width w held by m devices: the whole block
    when m == 1, else the i-th sliver of every period (a cell for small arrays, w / 12 for big ones),
    so that a shared block reads as striped, never as split."""
    if m == 1:
        return [(c0, w)]
    periods = w if fine else min(w, 12)
    period = w / periods
    return [(c0 + j * period + i * period / m, period / m) for j in range(periods)]


def _print_values(ax, shape, block, data, line: int, lines: int, color="black") -> None:
    """Write `data` (the block's values) into the block's cells, as line `line` of `lines` in each."""
    data = np.asarray(data).reshape(tuple(s.stop - s.start for s in block))
    look = dict(fontsize=8 if lines == 1 else max(5, 8 - lines), color=color,
                fontweight="bold" if lines > 1 else "normal",
                bbox=dict(boxstyle="round,pad=0.05", facecolor="white", alpha=0.6, linewidth=0))
    for index in np.ndindex(data.shape):
        where = tuple(s.start + i for s, i in zip(block, index, strict=True))
        r, c = _view_index(shape, where)
        ax.text(c + 0.5, r + (line + 0.5) / lines, fmt_value(data[index]), ha="center", va="center",
                gid="value", **look)


def _view_index(shape: tuple[int, ...], index: tuple[int, ...]) -> tuple[int, int]:
    """(row, col) of the element `index` of an array of `shape`, in the 2-d view."""
    if len(shape) == 0:
        return 0, 0
    if len(shape) == 1:
        return 0, index[0]
    return int(np.ravel_multi_index(index[:-1], shape[:-1])), index[-1]


def _row_labels(shape: tuple[int, ...]) -> list[str]:
    if len(shape) <= 2:
        return [str(i) for i in range(view_shape(shape)[0])]
    return [",".join(map(str, i)) for i in np.ndindex(shape[:-1])]
