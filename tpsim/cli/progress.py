"""A progress bar on stderr (rich.progress) for anything that takes more than a moment.

Off with --json or --quiet, and when stderr is not a terminal, so that pipes and tests see only the
results.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def enabled(args) -> bool:
    return not (getattr(args, "json", False) or getattr(args, "quiet", False)) and sys.stderr.isatty()


@contextmanager
def bar(args, description: str, total: int):
    """Yields update(done, total, what): call it as work advances; a no-op when the bar is off."""
    if not enabled(args):
        yield lambda done, total, what="": None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total: int, what: str = "") -> None:
            progress.update(task, completed=done, total=total, description=f"{description} {what}".rstrip())

        yield update
