"""The lessons, executed once per test session, shared by test_lessons.py and test_docs.py.

`executed()` runs every notebook in lessons/ through scripts/run_lessons.py (nbclient, a fresh kernel
per notebook, a time limit per notebook, two at a time) into one temporary folder, the first time any
test asks, and returns that folder and the runs.  The docs build then renders those very copies
(TPSIM_EXECUTED_LESSONS), so no notebook runs twice in a suite.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = float(os.environ.get("TPSIM_LESSON_TIMEOUT", 60))  # per notebook: the "under a minute"


@functools.cache
def runner():
    """scripts/run_lessons.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("run_lessons", ROOT / "scripts" / "run_lessons.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lesson_names() -> list[str]:
    return [p.name for p in runner().lesson_paths()]


@functools.cache
def executed() -> tuple[pathlib.Path, dict]:
    """(folder of executed copies, {notebook name: LessonRun}), computed once per process."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="tpsim-executed-lessons-"))
    runs = runner().execute_all(out, timeout=TIMEOUT_S, jobs=min(2, os.cpu_count() or 1))
    return out, {r.name: r for r in runs}
