"""The equivalence check: every layer, forward and backward, in tpsim and in the reference, compared.

    python -m reference.check --world-size 2                      # gloo on CPU, native collectives
    python -m reference.check --world-size 3 --comm schedule      # tpsim's schedules over isend/irecv
    torchrun --nproc-per-node 4 -m reference.check                # the same under torchrun

tpsim runs each case on a `tpsim.Mesh(N)` in this process; the reference runs the mirror layers on
N ranks (one spawn for all cases), fed the very shards tpsim's devices held.  Shard d of every
output, input gradient and parameter gradient is compared with rank d's tensor.  What is claimed:

  exact data (small integers in inputs and weights, `--data exact`):
      layers whose local math is exact on integers (linear, embedding, logits, dropout): bitwise
      equal across the engines, every TP degree, uneven splits included;
      layers that evaluate tanh, exp, log or sqrt (MLP, attention, LayerNorm, loss, block): NumPy's
      and torch's float32 libms round those differently in the last bit on a large share of inputs
      (`--libm` measures it), so bitwise is not claimed; integers make large activations and
      ill-conditioned gradients, so elementwise tolerances do not fit either.  The claim: per tensor
      T, max |ref - tpsim| <= 2 (n_acc u_acc + n_store u_store) max|T|, the forward error bound of a
      sum in any order (Higham eq. 4.4) summed over every op tpsim ran before T: n_acc counts the
      multiply-adds per output element of each op (a GEMM's k, the tokens a weight gradient sums, one
      for an elementwise op), n_store the roundings to a narrower storage dtype and the partial sums
      the all-reduces add; max|T| is T's exact value's scale (the case in float64).  The order the
      BLAS sums in (OpenBLAS, MKL, oneDNN, whatever kernel the CPU gets) is not assumed: the bound
      holds for any.  See reference/cases_bounds.py for what it models and what it measures.
  float data (normal floats, `--data float`): within torch.testing.assert_close's defaults for the
      dtype (bfloat16: rtol 1.6e-2, atol 1e-5), whatever --comm.

bfloat16 and float16 follow one rule in both engines (tpsim/nn/ops.py): each kernel computes in
float32 and rounds once to the input's dtype (matmuls and sums accumulate in float32; GeLU, softmax,
LayerNorm and the cross-entropy's kernels run in float32), which is what torch's CPU kernels do for
matmul, sum, GeLU and softmax; the reference's LayerNorm and cross-entropy apply it explicitly
(reference/norm.py, loss.py).  The claims stay the ones above: half precision's float data are
claimed close, not bitwise, since a float32 accumulation in another order (oneDNN's blocking, NCCL)
may round the other way; the table reports how many tensors came out bitwise equal anyway.
  --comm schedule: every collective a rank issued, replayed in tpsim's engine on the same operands,
      is bitwise equal on every rank, and the bytes the ranks sent equal tpsim's wire bytes.
  always: the same collectives in the same order, with the same op, size and dtype, as tpsim's
      trace (reference.record.compare_with_trace), and every rank that holds a replicated result
      (R on TP) holds the same bits.

The table is printed with rich and written as JSON (`--json`); the exit code is 1 on any mismatch.
`--inject-mismatch` flips the last bit of one reference element, to show that the check can fail.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np
import torch.distributed as dist

from reference import launch_checks
from reference.cases import LAYERS, Case, default_cases, run_reference, run_tpsim
from reference.check_report import measure_libm, print_table, summary
from reference.check_rows import case_row, tensor_rows
from reference.comm import algorithms_by_collective
from reference.compare import Tap
from reference.launch import RankContext, RankFailed, run, under_torchrun
from reference.trace import twin, write_traces
from tpsim import validate
from tpsim.errors import TpsimError

DTYPES = ("float32", "bfloat16", "float16", "float64")


def rank_main(
    ctx: RankContext,
    cases: list[Case],
    inputs: list[list[dict]],
    mode: str,
    algorithm: str | None,
    inject: bool,
) -> list[dict]:
    """One rank: every case through the mirror layers, on this rank's inputs."""
    from reference.comm import Comm

    out = []
    for i, case in enumerate(cases):
        comm = Comm(mode=mode, algorithm=algorithm, backend=ctx.backend)
        tap = Tap(comm)
        tensors = run_reference(case, tap, inputs[i][ctx.rank], ctx.device)
        if inject and i == 0 and ctx.rank == 0 and tensors["out"].size:
            flat = tensors["out"].reshape(-1).view(np.uint8)
            flat[0] ^= 1  # the lowest bit of the first element (little-endian): one ULP
        out.append(dict(tensors=tensors, calls=tap.calls, record=list(comm.record)))
    if under_torchrun():  # no parent: every rank gets every rank's results
        gathered = [None] * ctx.world_size
        dist.all_gather_object(gathered, out)
        return gathered
    return out


def check(
    world_size: int | None,
    cases: list[Case],
    *,
    comm: str = "native",
    algorithm: str | None = None,
    device: str = "cpu",
    inject: bool = False,
    timeout: float = 300.0,
    trace: str | None = None,
    oversubscribe: bool = False,
) -> dict:
    """Run `cases` in both engines and compare; returns {"rows", "cases", "ok", ...} (see `summary`).

    Everything is checked before a process starts: the world size (`None`: torchrun's), the timeout,
    the algorithm, and no more ranks than the cores hold (launch_checks) unless `oversubscribe`.
    `trace`: write the reference's Chrome trace there and tpsim's next to it (reference/trace.py).
    """
    if world_size is None:
        size = int(os.environ["WORLD_SIZE"])
    else:
        size = validate.world_size("reference.check", world_size)
        launch_checks.check_ranks(size, oversubscribe)
    launch_checks.check_timeout("timeout", timeout)
    algorithms_by_collective(algorithm)
    sims = [run_tpsim(c, size) for c in cases]
    inputs = [s.inputs for s in sims]
    launch = dict(device=device, timeout=timeout, oversubscribe=oversubscribe)
    got = run(rank_main, world_size, cases, inputs, comm, algorithm, inject, **launch)
    per_rank = got  # spawn: [rank 0's, ...]; torchrun: rank_main gathered every rank's
    rows, case_rows = [], []
    for i, sim in enumerate(sims):
        ranks = [per_rank[r][i] for r in range(size)]
        case_rows.append(case_row(sim, ranks, comm, algorithm, size))
        rows += tensor_rows(sim, ranks, case_rows[-1])
    ok = all(r["ok"] for r in rows) and all(c["ok"] for c in case_rows)
    if trace is not None and (not under_torchrun() or int(os.environ["RANK"]) == 0):
        records = [[call for case in per_rank[r] for call in case["record"]] for r in range(size)]
        write_traces(trace, records, [s.trace for s in sims])
    return dict(
        world_size=size,
        comm=comm,
        algorithm=algorithm,
        device=device,
        ok=ok,
        rows=rows,
        cases=case_rows,
        claims=summary(rows, case_rows, comm),
    )


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reference.check", description=__doc__.splitlines()[0])
    p.add_argument(
        "--world-size",
        type=launch_checks.positive(int),
        default=None,
        help="ranks to spawn (under torchrun: its own)",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help=f"spawn more than {launch_checks.max_ranks()} ranks ({launch_checks.RANKS_PER_CORE} per core)",
    )
    p.add_argument("--layers", default="all", help=f"comma-separated, from: {', '.join(LAYERS)}")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--comm", default="native", choices=("native", "schedule"))
    p.add_argument("--algorithm", default=None, help="schedule mode: tpsim's algorithm (default: per op)")
    p.add_argument("--data", default="exact,float", help="exact, float or both (comma-separated)")
    p.add_argument("--json", default="reference_check.json", help="where to write the table as JSON")
    p.add_argument(
        "--timeout", type=launch_checks.positive(float), default=300.0, help="seconds for the whole run"
    )
    p.add_argument(
        "--trace",
        default=None,
        help="write the reference's Chrome/Perfetto trace here; tpsim's as NAME.tpsim.json",
    )
    p.add_argument("--inject-mismatch", action="store_true", help="flip one bit in the reference: must fail")
    p.add_argument("--libm", action="store_true", help="also measure NumPy vs torch float32 libm differences")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    layers = LAYERS if a.layers == "all" else tuple(x.strip() for x in a.layers.split(","))
    unknown = [x for x in layers if x not in LAYERS]
    datas = [x.strip() for x in a.data.split(",")]
    if unknown or any(d not in ("exact", "float") for d in datas):
        print(
            f"error: unknown layer(s) {unknown} or data {datas}; layers: {', '.join(LAYERS)}; "
            "data: exact, float",
            file=sys.stderr,
        )
        return 2
    if a.world_size is None and not under_torchrun():
        print("error: pass --world-size N (or run under torchrun)", file=sys.stderr)
        return 2
    size = a.world_size if a.world_size is not None else int(os.environ["WORLD_SIZE"])
    cases = [c for d in datas for c in default_cases(size, d, a.dtype) if c.layer in layers]
    try:
        result = check(
            a.world_size,
            cases,
            comm=a.comm,
            algorithm=a.algorithm,
            device=a.device,
            inject=a.inject_mismatch,
            timeout=a.timeout,
            trace=a.trace,
            oversubscribe=a.oversubscribe,
        )
    except RankFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TpsimError as err:  # refused before any process started
        print(f"error: {err}", file=sys.stderr)
        return 2
    if under_torchrun() and int(os.environ["RANK"]) != 0:  # rank 0 prints and writes for all
        return 0 if result["ok"] else 1
    if a.libm:
        result["libm_mismatch_share"] = measure_libm()
    print_table(result)
    if a.libm:
        print(
            "NumPy vs torch float32, share of results that differ:",
            ", ".join(f"{k} {v:.1%}" for k, v in result["libm_mismatch_share"].items()),
        )
    pathlib.Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {a.json}")
    if a.trace:
        print(f"wrote {a.trace} (reference) and {twin(a.trace)} (tpsim): open both in ui.perfetto.dev")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
