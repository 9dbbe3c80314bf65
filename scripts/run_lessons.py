"""Execute the lesson notebooks with nbclient, each in a fresh kernel, and keep the executed copies.

    python scripts/run_lessons.py OUT_DIR [--timeout 60] [--jobs 2] [NAME ...]

Every notebook in lessons/ (or the NAMEs given) runs with lessons/ as its working directory and this
checkout first on PYTHONPATH (so it imports this tpsim and reference, whatever is installed), under a
time limit for the whole notebook (not per cell: each cell gets what is left of it).  The executed
copies go to OUT_DIR under the same names, with timings.json (seconds per notebook, and the error if
one failed).  The exit status is 1 when any notebook failed.

The test suite (tests/lesson_runs.py) and the docs hook (docs/hooks/lessons.py) call `execute_all`,
so the notebooks run once per test session and the site shows the outputs of that run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
TIMEOUT_S = 60.0  # the promise: each lesson runs on a CPU in under a minute


@dataclass
class LessonRun:
    name: str
    seconds: float
    error: str | None  # None: every cell ran


def lesson_paths(src: pathlib.Path = LESSONS) -> list[pathlib.Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in src.glob("[0-9][0-9]_*.ipynb"))


def execute(path: pathlib.Path, out_dir: pathlib.Path, timeout: float = TIMEOUT_S) -> LessonRun:
    """Run one notebook top to bottom; write the executed copy (also when a cell failed)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    deadline = start + timeout

    def left(_cell) -> int:  # what remains of the notebook's budget, for the next cell
        return max(1, math.ceil(deadline - time.monotonic()))

    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout_func=left,
        startup_timeout=60,
        resources={"metadata": {"path": str(path.parent)}},
    )
    # the kernel imports tpsim and reference from this checkout, whatever is installed, and draws
    # figures with the notebook backend even where MPLBACKEND is set (e.g. to Agg for the test suite)
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    error = None
    try:
        client.execute(env=env)
    except Exception as e:  # CellExecutionError, a timeout, a dead kernel: reported, not raised
        error = f"{type(e).__name__}: {e}"
    seconds = time.monotonic() - start
    if error is None and seconds > timeout:
        error = f"took {seconds:.1f} s, over the {timeout:g} s limit"
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    return LessonRun(path.name, seconds, error)


def execute_all(
    out_dir: pathlib.Path,
    paths: list[pathlib.Path] | None = None,
    timeout: float = TIMEOUT_S,
    jobs: int = 2,
) -> list[LessonRun]:
    """Execute every lesson (`jobs` at a time, each in its own process); write timings.json."""
    paths = lesson_paths() if paths is None else paths
    out_dir = pathlib.Path(out_dir)
    workers = max(1, min(jobs, len(paths) or 1))
    # spawn, not fork: the caller (pytest, mkdocs) may hold threads and sockets a fork would copy
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(execute, paths, [out_dir] * len(paths), [timeout] * len(paths)))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timings.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("names", nargs="*", help="notebook file names in lessons/ (default: all)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per notebook")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once")
    a = parser.parse_args(argv)
    paths = [LESSONS / n for n in a.names] if a.names else lesson_paths()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}; valid: {[p.name for p in lesson_paths()]}")
    runs = execute_all(a.out_dir, paths, a.timeout, a.jobs)
    for r in runs:
        print(f"{r.name:40s} {r.seconds:6.1f} s  {'ok' if r.error is None else 'FAILED: ' + r.error[:2000]}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
