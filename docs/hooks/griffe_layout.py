"""Griffe extension for the API pages: keep the column layouts of tpsim's docstrings.

tpsim's docstrings often lay things out in aligned columns (`module.py   what it holds`,
`forward: ...`).  Markdown would run those lines together into one paragraph, so each run of two or
more lines where some line has a gap of two or more spaces inside it is put in a fenced text block.
Prose, and blocks already indented (which Markdown shows as code anyway), are left alone.
"""

from __future__ import annotations

import re

import griffe

ALIGNED = re.compile(r"^\S.*?\S {2,}\S")  # text, a gap of 2+ spaces, more text: a column layout


def fence_layouts(text: str) -> str:
    lines, out, block = text.split("\n"), [], []

    def flush():
        if len(block) >= 2 and any(ALIGNED.match(b) for b in block):
            out.extend(["```text", *block, "```"])
        else:
            out.extend(block)
        block.clear()

    for line in lines:
        bullet = line.lstrip().startswith(("- ", "* "))
        if line.strip() and not line.startswith((" ", "\t", "```")) and not bullet:
            block.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


class LayoutTables(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and isinstance(obj, griffe.Module):
            obj.docstring.value = fence_layouts(obj.docstring.value)
