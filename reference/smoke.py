"""The smallest entry point: every rank all-reduces its rank number and checks the sum.

    python -m reference.smoke --world-size 2
    torchrun --nproc-per-node 2 -m reference.smoke

Exits 0 when every rank saw 0 + 1 + ... + (N - 1); a failed rank (try `--fail-rank 1`) prints its
traceback and exits 1.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist

from reference import launch_checks
from reference.launch import RankContext, main


def all_reduce_ranks(ctx: RankContext, fail_rank: int | None = None) -> float:
    if ctx.rank == fail_rank:  # the others are left waiting in the all_reduce: the run must still end
        raise RuntimeError(f"rank {ctx.rank} fails on purpose (--fail-rank {fail_rank})")
    x = torch.tensor([float(ctx.rank)], device=ctx.device)
    dist.all_reduce(x)
    want = ctx.world_size * (ctx.world_size - 1) / 2
    if x.item() != want:
        raise AssertionError(f"rank {ctx.rank}: all_reduce of the ranks gave {x.item()}, want {want}")
    return x.item()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reference.smoke", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--world-size",
        type=launch_checks.positive(int),
        default=None,
        help="ranks to spawn (torchrun: its own)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backend", default=None, choices=("gloo", "nccl"))
    parser.add_argument("--fail-rank", type=int, default=None, help="this rank raises: see how a run ends")
    a = parser.parse_args(argv)
    out = main(all_reduce_ranks, a.world_size, a.fail_rank, device=a.device, backend=a.backend)
    print(f"all_reduce of the ranks: {out}")


if __name__ == "__main__":
    cli()
