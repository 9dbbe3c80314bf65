"""Saving the figures of --plot: matplotlib on the Agg backend, a clear error when it is missing."""

from __future__ import annotations

from contextlib import contextmanager

from tpsim.errors import PlotError


@contextmanager
def figure(path: str, ncols: int = 1, width: float = 7.0, height: float = 4.8):
    """Yields `ncols` axes; the figure is saved to `path` on exit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotError("--plot needs matplotlib: pip install 'tpsim[viz]'") from e
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    try:
        yield list(axes[0])
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
