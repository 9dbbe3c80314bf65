"""The command both validation pages share: write the report as JSON and Markdown, and the docs copy.

python -m benchmarks.validate_megatron     training iterations against Megatron-LM's published runs
python -m benchmarks.validate_decode       Llama-3 70B decode against published NIM and vLLM figures
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def main(
    argv, description: str, report: Callable[[], dict], markdown: Callable[[dict], str], out: Path, docs: Path
) -> int:
    """Regenerate `out`.json and `out`.md from `report()`; the docs page too when `out` is the default."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=out, help="path without suffix (default %(default)s)")
    args = p.parse_args(argv)
    doc = report()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    if args.out == out:
        docs.write_text(markdown(doc))
    print(markdown(doc))
    return 0
