"""The lessons, executed once per test session, shared by test_lessons.py and test_docs.py.

`executed()` runs every notebook in lessons/ through scripts/run_lessons.py (nbclient, a fresh kernel
per notebook, a time limit per notebook, two at a time) into one temporary folder, the first time any
test asks, and returns that folder and the runs.  The docs build then renders those very copies
(TPSIM_EXECUTED_LESSONS), so no notebook runs twice in a suite.
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = float(os.environ.get("TPSIM_LESSON_TIMEOUT", 60))  # per notebook: the "under a minute"


def runner():
    """scripts/run_lessons.py, imported by name: its worker processes must import it by name too."""
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("run_lessons")


def lesson_names() -> list[str]:
    return [p.name for p in runner().lesson_paths()]


@functools.cache
def executed() -> tuple[pathlib.Path, dict]:
    """(folder of executed copies, {notebook name: LessonRun}), computed once per process."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="tpsim-executed-lessons-"))
    runs = runner().execute_all(out, timeout=TIMEOUT_S, jobs=min(2, os.cpu_count() or 1))
    return out, {r.name: r for r in runs}
