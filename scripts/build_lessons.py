"""Build the lessons (lessons/NN_*.ipynb) from their sources in scripts/lesson_sources/, outputs empty.

    python scripts/build_lessons.py           # write the notebooks
    python scripts/build_lessons.py --check   # exit 1 if a committed notebook differs from its source

A source is a plain Python file in the "percent" format: `# %%` starts a code cell, `# %% [markdown]`
a markdown cell whose lines are comments (`# ` stripped).  So a lesson also runs as a script
(`python scripts/lesson_sources/07_sequence_parallelism.py`), and ruff lints it.  Cell ids are
derived from the lesson and the cell's position, so a rebuild of an unchanged source is byte-identical.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ROOT / "scripts" / "lesson_sources"
LESSONS = ROOT / "lessons"
NUMBERS = range(1, 13)
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def cells_of(text: str) -> list[tuple[str, str]]:
    """[(kind, source)] of a percent-format file; kind is "code" or "markdown"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif not cells:
            if line.strip():
                raise ValueError(f"text before the first '# %%' cell marker: {line!r}")
        elif cells[-1][0] == "markdown":
            if line and not line.startswith("#"):
                raise ValueError(f"a markdown cell line must be a comment: {line!r}")
            cells[-1][1].append(line[2:] if line.startswith("# ") else line[1:])
        else:
            cells[-1][1].append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def notebook(source: pathlib.Path) -> nbformat.NotebookNode:
    stem = source.stem[:2]
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for i, (kind, text) in enumerate(cells_of(source.read_text())):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(text)
        cell.id = f"lesson{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def sources() -> list[pathlib.Path]:
    found = sorted(p for p in SOURCES.glob("[0-9][0-9]_*.py") if int(p.name[:2]) in NUMBERS)
    if [int(p.name[:2]) for p in found] != list(NUMBERS):
        raise SystemExit(f"expected one source per lesson {list(NUMBERS)} in {SOURCES}, found {found}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    a = parser.parse_args(argv)
    stale = []
    for src in sources():
        target = LESSONS / f"{src.stem}.ipynb"
        text = nbformat.writes(notebook(src)) + "\n"
        if a.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(target.name)
        else:
            LESSONS.mkdir(exist_ok=True)
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"out of date with scripts/lesson_sources: {', '.join(stale)}; "
              "run python scripts/build_lessons.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
