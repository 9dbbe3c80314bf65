"""tpsim.viz: pictures drawn from the simulator's own objects, never by hand.

    array.py       show_darray       a sharded array: which device holds which block, S/R/P
    collective.py  show_step         one step of a collective: chunks, who contributed, transfers
                   animate_collective, to_html, save_gif   the whole collective, frame by frame
    traffic.py     traffic_heatmap, link_load              src x dst bytes; bytes per link
    timelines.py   timeline          per-device compute and communication, forward and backward
    memory_use.py  memory            per-device memory by category against capacity
    costs.py       cost_curves, efficiency_curve            time vs size per algorithm; TP efficiency
    terminal.py    holdings, print_holdings                 who holds what, in the terminal (rich)
    placements.py  change, label       a collective's placement change per buffer: P -> R, S(0) -> R, ...
    style.py       device colours and axes in bytes and seconds

Every plotting function takes `ax=None` (None: a new figure) and returns the matplotlib Figure
(the FuncAnimation for animations).  matplotlib is imported only when one of them is first used,
so `import tpsim` and the terminal rendering stay light.  In a notebook, end a line that makes a
figure with `;` (or assign it) so that it shows once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tpsim.viz.terminal import holdings, print_holdings

if TYPE_CHECKING:  # for type checkers and the API reference; at run time they load on first use
    from tpsim.viz.array import show_darray
    from tpsim.viz.collective import animate_collective, show_step
    from tpsim.viz.costs import cost_curves, efficiency_curve
    from tpsim.viz.memory_use import memory
    from tpsim.viz.player import save_gif, to_html
    from tpsim.viz.timelines import timeline
    from tpsim.viz.traffic import link_load, traffic_heatmap

_LAZY = {
    "show_darray": "array",
    "show_step": "collective",
    "animate_collective": "collective",
    "to_html": "player",
    "save_gif": "player",
    "traffic_heatmap": "traffic",
    "link_load": "traffic",
    "timeline": "timelines",
    "memory": "memory_use",
    "cost_curves": "costs",
    "efficiency_curve": "costs",
}

__all__ = [
    "animate_collective",
    "cost_curves",
    "efficiency_curve",
    "holdings",
    "link_load",
    "memory",
    "print_holdings",
    "save_gif",
    "show_darray",
    "show_step",
    "timeline",
    "to_html",
    "traffic_heatmap",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"tpsim.viz.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tpsim.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
