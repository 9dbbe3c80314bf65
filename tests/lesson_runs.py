"""The lessons, executed once per test session, shared by test_lessons.py and test_docs.py.

`executed()` runs every notebook in lessons/ through scripts/run_lessons.py (nbclient, a fresh kernel
per notebook, a time limit per notebook, two at a time) into one temporary folder, the first time any
test asks, and returns that folder and the runs.  The docs build then renders those very copies
(TPSIM_EXECUTED_LESSONS), so no notebook runs twice in a suite.

TPSIM_REUSE_EXECUTED=DIR reuses a folder that scripts/run_lessons.py wrote (with its timings.json) instead
of running the notebooks again: for working on the docs tests, never set in CI.

`executed_one(name)` gives one notebook's run: taken from `executed()` when that has run, else that
notebook alone is executed (so `pytest tests/test_lessons.py -k 04` runs lesson 4 only).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pathlib
import shutil
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


_one: dict[str, tuple[pathlib.Path, object]] = {}  # name -> (folder holding its executed copy, LessonRun)


@functools.cache
def executed() -> tuple[pathlib.Path, dict]:
    """(folder of executed copies, {notebook name: LessonRun}), computed once per process."""
    r = runner()
    reuse = os.environ.get("TPSIM_REUSE_EXECUTED")
    if reuse:
        folder = pathlib.Path(reuse)
        runs = [r.LessonRun(**t) for t in json.loads((folder / "timings.json").read_text())]
        for run in runs:
            _one.setdefault(run.name, (folder, run))
        return folder, {run.name: run for run in runs}
    out = pathlib.Path(tempfile.mkdtemp(prefix="tpsim-executed-lessons-"))
    todo = [p for p in r.lesson_paths() if p.name not in _one]
    runs = r.execute_all(out, todo, timeout=TIMEOUT_S, jobs=min(2, os.cpu_count() or 1)) if todo else []
    for name, (folder, run) in _one.items():  # notebooks already run alone are not run again
        shutil.copyfile(folder / name, out / name)
        runs.append(run)
    for run in runs:
        _one.setdefault(run.name, (out, run))
    return out, {r.name: r for r in runs}


def executed_one(name: str) -> tuple[pathlib.Path, object]:
    """(executed copy of notebook `name`, its LessonRun): from the full run if there is one, else alone."""
    if name not in _one:
        out = pathlib.Path(tempfile.mkdtemp(prefix="tpsim-executed-lesson-"))
        (run,) = runner().execute_all(out, [runner().LESSONS / name], timeout=TIMEOUT_S, jobs=1)
        _one[name] = (out, run)
    folder, run = _one[name]
    return folder / name, run


def outputs_text(name: str) -> str:
    """Everything one executed lesson printed or displayed (text, markdown, HTML), as one string."""
    import nbformat

    path, run = executed_one(name)
    assert run.error is None, f"{name} failed:\n{run.error}"
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html"):
                parts.append("".join(out.get("data", {}).get(kind, "")))
    return "\n".join(parts)
