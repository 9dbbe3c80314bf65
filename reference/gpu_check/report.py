"""The report: one JSON document and its markdown summary, both rewritten after every section.

Each write goes to a temporary file first and is renamed over the old one (os.replace is atomic),
so a run killed at any moment leaves the last complete pair: every finished section, valid JSON
and markdown.  The markdown is rendered from the JSON only, by each section's `render`.
"""

from __future__ import annotations

import json
import os
import pathlib

SECTION_TITLES = {
    "facts": "a. Facts",
    "equivalence": "b. Equivalence on the device",
    "memory": "c. Memory: measured peak against tpsim's prediction",
    "compute": "d. Compute: GEMMs of a TP MLP's shards",
    "predict": "e. Prediction against measurement: one block, world size 1",
}


class Report:
    """The JSON document {"meta", "sections": [...]} at `<stem>.json`, its summary at `<stem>.md`."""

    def __init__(self, folder: pathlib.Path, stem: str, meta: dict):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.json_path = self.folder / f"{stem}.json"
        self.md_path = self.folder / f"{stem}.md"
        self.doc = {"meta": dict(meta), "sections": []}
        self.write()

    def add(self, name: str, budget_s: float, result: dict, records: list) -> None:
        """Append one section's records, then rewrite both files."""
        self.doc["sections"].append(dict(name=name, budget_s=budget_s, **result, records=list(records)))
        self.write()

    def write(self) -> None:
        _atomic(self.json_path, json.dumps(self.doc, indent=1, default=str) + "\n")
        _atomic(self.md_path, render(self.doc))


def _atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def render(doc: dict) -> str:
    """The markdown summary of a report document (sections in run order, then the ones not run)."""
    import importlib

    meta = doc["meta"]
    lines = [f"# GPU check: {meta.get('device_name', '?')}, {meta.get('date', '?')}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    done = {s["name"] for s in doc["sections"]}
    for s in doc["sections"]:
        lines += ["", f"## {SECTION_TITLES.get(s['name'], s['name'])}", ""]
        lines.append(
            f"status: **{s['status']}**, {s['wall_s']:.1f} s of a {s['budget_s']:g} s budget"
            + (f"; {s['error']}" if s.get("error") else "")
        )
        lines.append("")
        if s["name"] in SECTION_TITLES:
            lines += importlib.import_module(f"reference.gpu_check.{s['name']}").render(s["records"])
    for name in meta.get("sections", []):
        if name not in done:
            title = SECTION_TITLES.get(name, name)
            lines += ["", f"## {title}", "", "status: **not run** (the run ended first)"]
    return "\n".join(lines) + "\n"


def table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """A markdown table of `rows` by (header, key); floats to 4 significant digits."""
    if not rows:
        return ["(no rows)"]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    out = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(k)) for _, k in columns) + " |" for r in rows]
    return out
