"""tpsim checked against PyTorch itself: the same layers parallelized by torch.distributed.tensor.parallel.

For each layer (MLP, attention, transformer block), with and without sequence parallelism (SP):

    tpsim      tpsim.nn's layer on a virtual mesh, in this process: y, dx, grads, and the forward and
               backward collectives of its communication table (comm_table).
    DTensor    reference/dtensor_plan.py's plain torch module, loaded with the same global weights and
               made tensor-parallel by ColwiseParallel / RowwiseParallel / SequenceParallel on a 1-D
               DeviceMesh, one process per rank (gloo on CPU); each phase under its own CommDebugMode.

Outputs and grads (full tensors) must agree within torch.testing.assert_close's default tolerance;
the table also says whether they are bitwise equal.  Each rank's local weight shards must be tpsim's
shards of that rank, and every rank must end up with the same full tensors.  Collective counts must
be equal kind by kind, but for the differences that dtensor_compare.py derives and names.

Two data kinds: "normal" (N(0, 0.02) weights, zero biases, N(0, 1) data) in float32, and "exact"
(integers in -2..2 everywhere, so biases and LayerNorm weights are not trivial) in float64.

    python -m reference.dtensor --world-size 2 [--layer mlp|attention|block] [--sp] [--json out.json]
    torchrun --nproc-per-node 2 -m reference.dtensor
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import tpsim
from reference import dtensor_plan
from reference.compat import comm_debug_mode, dtensor_names
from reference.dtensor_compare import PHASES, compare, format_reports, known_differences, passed
from reference.launch import run, under_torchrun
from tpsim.errors import ArgumentError, DTypeError, ShapeError, TpsimError, WorldSizeError
from tpsim.nn import ParallelAttention, ParallelMLP, TransformerBlock
from tpsim.nn import comm_table as tpsim_comm_table

DTensor, Shard, Replicate, Partial = dtensor_names()
CommDebugMode = comm_debug_mode()

LAYERS = ("mlp", "attention", "block")
INITS = ("normal", "exact")  # arbitrary floats (N(0, 0.02) weights, N(0, 1) data); small integers
# float32 for arbitrary floats; float64 for integer data, whose activations reach ~1e4 (LayerNorm's
# backward cancels them), far past float32's absolute tolerance however the sums are ordered
DTYPES = {"normal": "float32", "exact": "float64"}
# CommDebugMode's op names (functional collectives, or c10d ops) -> tpsim's collective kinds
DTENSOR_KIND = {
    "all_reduce": "all_reduce", "allreduce_": "all_reduce",
    "all_gather_into_tensor": "all_gather", "_allgather_base_": "all_gather", "allgather_": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter",
    "reduce_scatter_": "reduce_scatter",
    "all_to_all_single": "all_to_all", "alltoall_base_": "all_to_all", "broadcast": "broadcast",
}
SHAPE_FLAGS = {"--seq-len": "s", "--batch": "b", "--hidden": "hidden", "--heads": "heads", "--ffn": "ffn"}


@dataclass(frozen=True)
class Case:
    """One comparison: a layer, SP or not, the data kind, and the shapes (x is (s, b, h))."""

    layer: str
    sp: bool
    init: str = "normal"
    dtype: str = ""  # "" -> DTYPES[init]
    s: int = 6
    b: int = 2
    hidden: int = 24
    heads: int = 6
    ffn: int = 96
    seed: int = 0

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise ArgumentError(f"layer {self.layer!r} is unknown; valid: {', '.join(LAYERS)}")
        if self.init not in INITS:
            raise ArgumentError(f"init {self.init!r} is unknown; valid: {', '.join(INITS)}")
        object.__setattr__(self, "dtype", self.dtype or DTYPES[self.init])
        if self.dtype not in ("float32", "float64"):
            raise DTypeError(f"dtype {self.dtype!r} is not compared here; valid: float32, float64")

    @property
    def name(self) -> str:
        return f"{self.layer}{' SP' if self.sp else ''} {self.init} {self.dtype}"


def tpsim_module(case: Case, mesh):
    kw = dict(init=case.init, dtype=case.dtype, sequence_parallel=case.sp, seed=case.seed, name=case.layer)
    if case.layer == "mlp":
        return ParallelMLP(mesh, case.hidden, case.ffn, **kw)
    if case.layer == "attention":
        return ParallelAttention(mesh, case.hidden, case.heads, **kw)
    if case.layer == "block":
        return TransformerBlock(mesh, case.hidden, case.heads, case.ffn, **kw)
    raise ArgumentError(f"layer {case.layer!r} is unknown; valid: {', '.join(LAYERS)}")


def data(case: Case, which: int) -> np.ndarray:
    rng = np.random.default_rng([case.seed, which])
    shape = (case.s, case.b, case.hidden)
    if case.init == "exact":
        return rng.integers(-2, 3, size=shape).astype(case.dtype)
    return rng.standard_normal(shape).astype(case.dtype)


def run_tpsim(case: Case, world_size: int) -> dict:
    """tpsim's forward and backward on a virtual mesh: weights, shards, results and collective counts."""
    mesh = tpsim.Mesh(world_size)
    m = tpsim_module(case, mesh)
    x, dy = data(case, 1), data(case, 2)
    y = m(tpsim.distribute(x, mesh, [tpsim.Shard(0) if case.sp else tpsim.Replicate()]))
    dx = m.backprop(tpsim.distribute(dy, mesh, y.placements))
    rel = len(m.name) + 1  # "block.mlp.fc1.weight" -> "mlp.fc1.weight", torch's parameter name
    comm = {p: Counter() for p in PHASES}
    for row in tpsim_comm_table(m):
        comm.setdefault(row.direction or "outside any module", Counter())[row.collective] += row.count
    return {
        "x": x,
        "dy": dy,
        "weights": {n[rel:]: a.full() for n, a in m.named_parameters()},
        "shards": {n[rel:]: list(a.shards) for n, a in m.named_parameters()},
        "outputs": {"y": y.full(), "dx": dx.full()},
        "grads": {n[rel:]: g.full() for n, g in m.named_grads()},
        "comm": comm,
        "known": known_differences(m, case.sp, comm),
    }


def dtensor_rank(ctx, jobs: list[dict]) -> dict:
    """One rank: every job's layer on a 1-D DeviceMesh, forward and backward under CommDebugMode."""
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    results = [_dtensor_case(mesh, ctx, **job) for job in jobs]
    digest = hashlib.sha256()
    for r in results:
        for t in [*r["outputs"].values(), *r["grads"].values()]:
            digest.update(t.numpy().tobytes())  # results are on the CPU already
    every = [None] * ctx.world_size
    dist.all_gather_object(every, digest.hexdigest())  # do all ranks hold the same full tensors?
    return {"rank": ctx.rank, "cases": results, "ranks_agree": len(set(every)) == 1}


def _dtensor_case(mesh, ctx, case: Case, weights: dict, x: np.ndarray, dy: np.ndarray) -> dict:
    dtype = getattr(torch, case.dtype)
    module = dtensor_plan.build(case.layer, case.hidden, case.heads, case.ffn).to(ctx.device, dtype)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)  # no cast
    module = dtensor_plan.parallelize(module, case.layer, mesh, case.sp)
    x_local = _local(torch.from_numpy(x), case.sp, ctx).requires_grad_(True)  # (s/t | s, b, h)
    dy_local = _local(torch.from_numpy(dy), case.sp, ctx)
    with CommDebugMode() as fwd:
        y = module(x_local)
    with CommDebugMode() as bwd:
        y.backward(dy_local)
    grads = {n: p.grad for n, p in module.named_parameters()}
    placements = {n: _placements(g) for n, g in grads.items()}
    with CommDebugMode() as reduce:  # Partial grads made Replicate, as an optimizer step would
        grads = {n: _replicate_partial(g) for n, g in grads.items()}
    return {
        "case": case,
        "comm": {p: _kinds(m) for p, m in zip(PHASES, (fwd, bwd, reduce), strict=True)},
        "ops": sorted({str(op) for m in (fwd, bwd, reduce) for op in m.get_comm_counts()}),
        "outputs": {"y": _full(y, case.sp, mesh, x.shape), "dx": _full(x_local.grad, case.sp, mesh, x.shape)},
        "grads": {n: _cpu(g.full_tensor() if isinstance(g, DTensor) else g) for n, g in grads.items()},
        "grad_placements": placements,
        "shards": {n: _cpu(_to_local(p)) for n, p in module.named_parameters()},  # this rank's pieces
    }


def _local(t: torch.Tensor, sp: bool, ctx) -> torch.Tensor:
    """This rank's input: its torch.chunk piece of the sequence under SP, all of it otherwise."""
    return (t.chunk(ctx.world_size, dim=0)[ctx.rank] if sp else t).to(ctx.device, copy=True)


def _full(t: torch.Tensor, sp: bool, mesh, shape) -> torch.Tensor:
    """The whole (s, b, h) tensor from this rank's piece (an all-gather under SP; not counted)."""
    if not sp:
        return _cpu(t)
    stride = torch.empty(shape).stride()
    d = DTensor.from_local(t.detach(), mesh, [Shard(0)], run_check=False, shape=shape, stride=stride)
    return _cpu(d.full_tensor())


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()


def _to_local(t):
    return t.to_local() if isinstance(t, DTensor) else t


def _placements(g) -> str:
    return "".join(map(str, g.placements)) if isinstance(g, DTensor) else "plain"


def _replicate_partial(g):
    if isinstance(g, DTensor) and any(isinstance(p, Partial) for p in g.placements):
        return g.redistribute(placements=[Replicate() if isinstance(p, Partial) else p for p in g.placements])
    return g


def _kinds(mode: CommDebugMode) -> Counter:
    out = Counter()
    for op, n in mode.get_comm_counts().items():
        name = str(op).rsplit(".", 1)[-1]
        out[DTENSOR_KIND.get(name, f"? {op}")] += n
    return out


def cases(layers=LAYERS, sps=(False, True), inits=INITS, **shape) -> list[Case]:
    return [Case(layer, sp, init, **shape) for layer in layers for sp in sps for init in inits]


def check(world_size: int, todo: list[Case], **launch) -> list[dict]:
    """Run every case in tpsim here and with DTensor on `world_size` ranks (one launch); the reports."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise WorldSizeError(f"world_size must be an int >= 1, got {world_size!r}")
    for c in todo:
        if c.sp and c.s % world_size:  # DTensor.from_local in the parallel styles assumes even shards
            ok = [t for t in range(1, c.s + 1) if c.s % t == 0]
            raise ShapeError(
                f"{c.name}: seq_len = {c.s} does not divide by the world size {world_size}; DTensor's "
                f"parallel styles take the sequence shards as even (from_local without a shape), so an "
                f"uneven split desynchronizes the all-gather. World sizes that work: {ok}"
            )
    tps = [run_tpsim(c, world_size) for c in todo]  # bad shapes fail here, before any process starts
    jobs = [dict(case=c, weights=t["weights"], x=t["x"], dy=t["dy"]) for c, t in zip(todo, tps, strict=True)]
    got = run(dtensor_rank, world_size, jobs, **launch)
    ranks = got if isinstance(got, list) else [got]  # under torchrun: this rank's result only
    return [compare(t, ranks, i) for i, t in enumerate(tps)]


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reference.dtensor", description=__doc__.split("\n")[0])
    ap.add_argument("--world-size", type=int, default=None, help="ranks (default: 2, or torchrun's)")
    ap.add_argument("--layer", choices=LAYERS, action="append", help="repeatable; default: all three")
    sp = ap.add_mutually_exclusive_group()
    sp.add_argument("--sp", action="store_true", help="only with sequence parallelism (default: both)")
    sp.add_argument("--no-sp", action="store_true", help="only without sequence parallelism")
    ap.add_argument("--init", choices=INITS, action="append", help="data kind; default: both")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="",
                    help="override the data kind's dtype (normal: float32, exact: float64)")
    for flag, field in SHAPE_FLAGS.items():
        ap.add_argument(flag, type=int, default=Case.__dataclass_fields__[field].default, dest=field)
    ap.add_argument("--json", metavar="PATH", help="write the reports as JSON")
    ap.add_argument("--verbose", action="store_true", help="one row per gradient")
    ap.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu",
                    help="cpu: gloo (default); auto/cuda: NCCL with a GPU per rank (not tested here)")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    torchrun = under_torchrun()
    world_size = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 2))
    sps = (True,) if args.sp else (False,) if args.no_sp else (False, True)
    shape = {field: getattr(args, field) for field in SHAPE_FLAGS.values()} | {"dtype": args.dtype}
    try:
        todo = cases(tuple(args.layer or LAYERS), sps, tuple(args.init or INITS), **shape)
        reports = check(world_size, todo, timeout=args.timeout, device=args.device)
    except (TpsimError, ValueError) as err:  # a shape that does not split: tpsim says what would
        print(f"error: {err}", file=sys.stderr)
        return 1
    if torchrun and int(os.environ["RANK"]) != 0:
        return 0 if all(map(passed, reports)) else 1
    print(f"world size {world_size}, torch {torch.__version__}\n")
    print(format_reports(reports, args.verbose))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"world_size": world_size, "torch": torch.__version__, "reports": reports}, f, indent=1)
    bad = [r["name"] for r in reports if not passed(r)]
    print(f"\n{len(reports) - len(bad)} of {len(reports)} cases pass" + (f"; failing: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(cli())
