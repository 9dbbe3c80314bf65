"""Who holds what, in the terminal (rich): for a collective's snapshot or a distributed array.

No matplotlib here: the CLI and `python -m tpsim` use this with tpsim's own dependencies only.
Device d has the same colour as in the matplotlib pictures (up to 10 devices; then colours cycle).

    holdings(snapshot)   a row per device, a column per chunk; a cell lists the devices whose data
                         the chunk holds ('0+1+2'), and its values when they are few
    holdings(x)          a row per device: its block of the global array, its shape, its role
                         (shard / replica / partial term) and its values when they are few
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from tpsim.darray import DArray
from tpsim.placement import Partial, Replicate, local_slices
from tpsim.report import fmt_bytes, fmt_time

MAX_VALUES = 4  # print a chunk's or shard's values when it has at most this many elements
PALETTE = (  # tab10, as '#rrggbb', so that the terminal matches the figures without matplotlib
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


def device_style(device: int) -> str:
    """The rich style of a device: its figure colour (tab10, cycling), bold."""
    return f"bold {PALETTE[device % len(PALETTE)]}"


def _values(a) -> str:
    """Nested like the array: '[[0, 1], [2, 3]]'; integers without '.0'."""
    a = np.asarray(a)
    if a.ndim == 0:
        return _num(a)
    if a.ndim == 1:
        return "[" + ", ".join(_num(v) for v in a) + "]"
    return "[" + ", ".join(_values(row) for row in a) + "]"


def _num(v) -> str:
    f = float(v)
    return str(int(f)) if np.isfinite(f) and f == int(f) and abs(f) < 1e6 else f"{f:.4g}"


def chunk_label(atoms, buffer=None) -> Text:
    """'0+1+2' in the devices' colours (plus ' = [values]' for a small buffer), or '.' for nothing."""
    if atoms is None:
        return Text(".", style="dim")
    text = Text()
    for i, q in enumerate(sorted(atoms)):
        if i:
            text.append("+")
        text.append(str(q), style=device_style(q))
    if buffer is not None and 0 < np.size(buffer) <= MAX_VALUES:
        text.append(f" = {_values(buffer)}")
    return text


def snapshot_table(snapshot, devices=None, describe: bool = True) -> Table:
    """A snapshot of `tpsim.stepwise(...)` as a table: a row per device, a column per chunk; with
    `describe`, the step, bytes so far and time as its title, the step's transfers as its caption."""
    devices = sorted(snapshot.holds) if devices is None else list(devices)
    k = max((len(snapshot.holds[d]) for d in devices), default=0)
    if snapshot.step == 0:
        title = "before the first step"
    else:
        title = (f"step {snapshot.step}: {fmt_bytes(snapshot.wire_bytes)} on links so far, "
                 f"t = {fmt_time(snapshot.time)}")
    table = Table(title=title if describe else None, title_justify="left", show_lines=False)
    table.add_column("")
    for c in range(k):
        table.add_column(f"chunk {c}", no_wrap=True)
    for d in devices:
        cells = [
            chunk_label(atoms, None if snapshot.buffers is None else snapshot.buffers[d][c])
            for c, atoms in enumerate(snapshot.holds[d])
        ]
        table.add_row(Text(f"dev{d}", style=device_style(d)), *cells)
    if describe and snapshot.transfers:
        moves = [f"dev{t.src}->dev{t.dst} chunk {','.join(map(str, t.chunks))} ({t.op})"
                 for t in snapshot.transfers]
        more = f" and {len(moves) - 8} more" if len(moves) > 8 else ""
        table.caption = "moved: " + ", ".join(moves[:8]) + more
        table.caption_justify = "left"
    return table


def role_text(x: DArray) -> str:
    """What each device holds: 'shard', 'replicated on tp', 'shard, partial term on dp', ..."""
    names = x.mesh.names
    rep = [n for n, p in zip(names, x.placements, strict=True) if isinstance(p, Replicate)]
    par = [n for n, p in zip(names, x.placements, strict=True) if isinstance(p, Partial)]
    parts = ["shard"] if any(p.is_shard() for p in x.placements) else []
    if rep:
        parts.append(f"replicated on {','.join(rep)}")
    if par:
        parts.append(f"partial term on {','.join(par)}")
    return ", ".join(parts)


def darray_table(x: DArray) -> Table:
    """A DArray as a table: a row per device with its block, shape, role and (few) values."""
    mesh = x.mesh
    pl = ", ".join(f"{n}={p!r}" for n, p in zip(mesh.names, x.placements, strict=True))
    table = Table(title=f"{x.shape} {x.dtype}: {pl}", title_justify="left")
    table.add_column("device")
    if mesh.ndim > 1:
        table.add_column("coord")
    for name in ("block", "shape", "role", "values"):
        table.add_column(name, no_wrap=True)
    role = role_text(x)
    for d in range(mesh.size):
        block = "[" + ", ".join(f"{s.start}:{s.stop}" for s in local_slices(x.shape, mesh, x.placements, d))
        block += "]"
        shard = x.local(d)
        vals = "" if x.is_meta or shard.size > MAX_VALUES * MAX_VALUES else _values(shard)
        coord = [str(mesh.coordinate(d))] if mesh.ndim > 1 else []
        dev = Text(f"dev{d}", style=device_style(d))
        table.add_row(dev, *coord, block, str(tuple(shard.shape)), role, vals)
    return table


def holdings(snapshot_or_darray, *, devices=None, describe: bool = True) -> Table:
    """Who holds what, as a rich Table.

    For a collective's Snapshot (`tpsim.stepwise`): a row per device, a column per chunk, each cell
    the devices whose data the chunk holds ('0+1+2', in their colours) and its values when few;
    `devices` restricts the rows; `describe` adds the step as title and its transfers as caption.
    For a DArray: a row per device with its block of the global array, shape, role and values.
    """
    obj = snapshot_or_darray
    if isinstance(obj, DArray):
        return darray_table(obj)
    if hasattr(obj, "holds") and hasattr(obj, "transfers"):
        return snapshot_table(obj, devices, describe)
    raise TypeError(f"holdings needs a Snapshot (tpsim.stepwise) or a DArray, got {type(obj).__name__}")


def print_holdings(
    snapshot_or_darray, *, console: Console | None = None, devices=None, describe: bool = True
) -> None:
    """Print `holdings(...)` with rich, on `console` (as it is configured), or on a new console on
    stdout that, off a terminal (a pipe, a test), keeps the table's full width instead of wrapping
    at 80 columns."""
    table = holdings(snapshot_or_darray, devices=devices, describe=describe)
    if console is None:
        console = Console()
        if not console.is_terminal:
            wide = console.options.update(max_width=10_000)  # measured unconstrained
            console = Console(width=max(console.width, Measurement.get(console, wide, table).maximum))
    console.print(table)
