"""Render the docs' still pictures from the simulator into docs/img/ (PNG).

    python scripts/make_doc_images.py [--out docs/img]

Each picture is a `tpsim.viz` function applied to something that really ran on virtual devices:
a sharded matrix, one step of a ring all-reduce, the traffic and the timeline and memory of a
shape-only Megatron MLP forward and backward, and the cost curves of the all-reduce algorithms.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import tpsim
from tpsim import Mesh, Replicate, Shard, distribute, meta, presets, viz
from tpsim.nn import ParallelMLP

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder to write into (default {OUT})")
    ap.add_argument("--dpi", type=int, default=80)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {}

    mesh = Mesh((2, 2), names=("dp", "tp"))
    grid = distribute(np.arange(24.0).reshape(4, 6), mesh, [Shard(0), Shard(1)])
    figures["darray_2d"] = viz.show_darray(grid)
    half = distribute(np.arange(12.0).reshape(2, 6), mesh, [Shard(1), Replicate()])
    figures["darray_replicated"] = viz.show_darray(half)

    ring = Mesh(4)
    buffers = [np.arange(4.0) + 10 * d for d in range(4)]
    snaps = list(tpsim.stepwise("all_reduce", buffers, ring, algorithm="ring"))
    figures["ring_step3"] = viz.show_step(snaps[3], ring, num_steps=len(snaps) - 1)

    node = Mesh(4, device="h100", topology=presets.nvlink_node(4))
    mlp = ParallelMLP(node, 4096, 16384, init=None, dtype="bfloat16")
    mlp(distribute(meta((4096, 4096), "bfloat16"), node, [Replicate()]))
    figures["mlp_memory_after_forward"] = viz.memory(node)
    mlp.backprop(distribute(meta((4096, 4096), "bfloat16"), node, [Replicate()]))
    figures["mlp_timeline"] = viz.timeline(node)
    figures["mlp_traffic"] = viz.traffic_heatmap(node.trace)

    figures["all_reduce_costs"] = viz.cost_curves("all_reduce", 8, "nvlink", measured=True)
    figures["tp_efficiency"] = viz.efficiency_curve("gpt3-175b", [2, 4, 8], topology=["nvlink", "pcie4"])

    paths = []
    for name, fig in figures.items():
        path = args.out / f"{name}.png"
        fig.savefig(path, dpi=args.dpi)
        plt.close(fig)
        paths.append(path)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
    del mlp
    return paths


if __name__ == "__main__":
    main()
