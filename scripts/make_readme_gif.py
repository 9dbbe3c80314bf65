"""Render the README's animation from the simulator: a ring all-reduce on 4 virtual devices.

    python scripts/make_readme_gif.py [--out docs/img/ring_allreduce.gif]

Device d starts with [10 d, 10 d + 1, 10 d + 2, 10 d + 3], one element per chunk, so every frame
shows the values the engine holds after that step; the last frame has 60, 64, 68, 72 everywhere.
Nothing is drawn by hand: the frames are `tpsim.viz.show_step` of the snapshots the engine yields.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np

import tpsim
from tpsim import viz

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "ring_allreduce.gif"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"where to write the GIF (default {OUT})")
    ap.add_argument("--dpi", type=int, default=96, help="resolution (default 96: the GIF stays small)")
    args = ap.parse_args(argv)
    mesh = tpsim.Mesh(4)
    buffers = [np.arange(4, dtype=np.float32) + 10 * d for d in range(4)]
    anim = viz.animate_collective("all_reduce", buffers, mesh, algorithm="ring", interval=1200,
                                  figsize=(6.4, 6.0))
    final = anim.snapshots[-1].buffers
    assert all(np.array_equal(np.concatenate(final[d]), sum(buffers)) for d in range(4))
    path = viz.save_gif(anim, args.out, dpi=args.dpi)
    print(f"{path}: {len(anim.snapshots)} frames, {path.stat().st_size / 1024:.0f} KiB")
    return path


if __name__ == "__main__":
    main()
