"""Every lesson notebook runs top to bottom, in time, and is committed clean.

The notebooks are executed once per session (lesson_runs.executed: nbclient, a fresh kernel each, a
per-notebook time limit); each gets its own test so that a failure names the notebook and shows the
cell's error.  The executed copies are what the docs build renders (test_docs.py).
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import nbformat
import pytest
from lesson_runs import ROOT, TIMEOUT_S, executed_one, lesson_names

from tpsim.exercises import EXERCISES

NAMES = lesson_names()


def test_there_are_twelve_numbered_lessons():
    assert [int(n[:2]) for n in NAMES] == list(range(1, 13)), NAMES


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_lesson_runs_within_its_time_limit(name):
    _, run = executed_one(name)
    print(f"{name}: {run.seconds:.1f} s")
    assert run.error is None, f"{name} failed after {run.seconds:.1f} s (limit {TIMEOUT_S:g} s):\n{run.error}"
    assert run.seconds <= TIMEOUT_S


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_executed_lesson_shows_its_exercises(name):
    """The run left outputs, and the exercises the lesson ends with rendered (asked, not yet answered)."""
    path, _ = executed_one(name)
    nb = nbformat.read(path, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    number = int(name[:2])
    shown = set(re.findall(rf"Exercise {number}\.(\d+)", text))
    assert len(shown) >= 2, f"{name}: its outputs show exercises {sorted(shown)}; a lesson ends with 2-4"


@pytest.mark.parametrize("name", NAMES)
def test_lesson_is_committed_without_outputs(name):
    nb = nbformat.read(ROOT / "lessons" / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{name}: cells {dirty} carry outputs or execution counts; commit notebooks cleared"


@pytest.mark.parametrize("number", range(1, 13))
def test_each_lesson_has_two_to_four_exercises(number):
    importlib.import_module(f"tpsim.exercises.lesson{number:02d}")
    keys = [k for k in EXERCISES if k.split(".")[0] == str(number)]
    assert 2 <= len(keys) <= 4, f"lesson {number} has exercises {keys}"


def test_lessons_6_to_10_match_their_sources():
    """The committed notebooks are what scripts/build_lessons.py makes of scripts/lesson_sources/."""
    build = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_lessons.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert build.returncode == 0, build.stdout + build.stderr
