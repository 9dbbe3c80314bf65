"""mkdocs hook: the lessons, executed, become pages of the site under "Lessons".

Where the executed notebooks come from:

    TPSIM_EXECUTED_LESSONS=DIR   a folder of executed copies, one per notebook in lessons/ (the test
                                 suite passes the folder it executed them into, so that each notebook
                                 runs once per suite)
    unset                        the hook executes lessons/*.ipynb itself with nbclient
                                 (scripts/run_lessons.py) into a temporary folder

Each executed notebook is added to the site as lessons/<name>.ipynb; mkdocs-jupyter renders it with its
outputs (figures, animations) and does not execute it again.  The nav gets a "Lessons" section after
"Concepts", one entry per notebook, titled by the notebook's first heading.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import sys
import tempfile

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ENV = "TPSIM_EXECUTED_LESSONS"
_staged: list[pathlib.Path] = []  # the folder holding lessons/<name> copies for this build
_names: list[str] = []


def _root(config) -> pathlib.Path:
    return pathlib.Path(config.config_file_path).resolve().parent


def _runner(root: pathlib.Path):
    """scripts/run_lessons.py, imported by name: its worker processes must import it by name too."""
    if str(root / "scripts") not in sys.path:
        sys.path.insert(0, str(root / "scripts"))
    return importlib.import_module("run_lessons")


def _title(path: pathlib.Path) -> str:
    """The first markdown heading of a notebook, without its '#'s."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def _execute(root: pathlib.Path, names: list[str]) -> pathlib.Path:
    runner = _runner(root)
    out = pathlib.Path(tempfile.mkdtemp(prefix="tpsim-lessons-"))
    runs = runner.execute_all(out, [root / "lessons" / n for n in names])
    failed = [f"{r.name}: {r.error}" for r in runs if r.error]
    if failed:
        raise PluginError("lessons failed to execute:\n" + "\n".join(failed))
    return out


def on_config(config):
    root = _root(config)
    names = [p.name for p in sorted((root / "lessons").glob("[0-9][0-9]_*.ipynb"))]
    given = os.environ.get(ENV)
    if given:
        folder = pathlib.Path(given)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise PluginError(f"{ENV}={given} lacks executed copies of {', '.join(missing)}")
    else:
        folder = _execute(root, names)
    # mkdocs-jupyter wraps each page's File and reads the notebook from abs_src_path, which only a
    # File with a src_dir provides (File.generated has none): so stage the copies as <dir>/lessons/<name>
    stage = pathlib.Path(tempfile.mkdtemp(prefix="tpsim-docs-lessons-"))
    (stage / "lessons").mkdir()
    for n in names:
        shutil.copyfile(folder / n, stage / "lessons" / n)
    _staged[:] = [stage]
    _names[:] = names
    lessons = [{_title(root / "lessons" / n): f"lessons/{n}"} for n in names]
    nav = list(config.nav or [])
    concepts = [i + 1 for i, item in enumerate(nav) if isinstance(item, dict) and "Concepts" in item]
    after = concepts[0] if concepts else len(nav)
    config.nav = [*nav[:after], {"Lessons": lessons}, *nav[after:]]
    return config


@event_priority(50)  # before mkdocs-jupyter's on_files (priority 0), which turns .ipynb files into pages
def on_files(files, config):
    for name in _names:
        files.append(File(f"lessons/{name}", src_dir=str(_staged[0]), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_post_build(config):
    for stage in _staged:
        shutil.rmtree(stage, ignore_errors=True)
