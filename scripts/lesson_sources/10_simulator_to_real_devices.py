# %% [markdown]
# # Lesson 10: From the simulator to real devices
#
# Everything so far ran in one Python process, on virtual devices.  `reference/` holds the same layers on
# real `torch.distributed`: one process per rank, gloo on CPUs, NCCL on GPUs.  File for file and class for
# class it mirrors `tpsim.nn` (`tpsim/nn/linear.py` ↔ `reference/linear.py`, `ColumnParallelLinear` in both),
# so a layer can be run in both engines on the same inputs and the results compared.
#
# This lesson starts two real ranks on this machine's CPU (gloo), runs layers in both engines, and checks
# the three promises of "identical" from the design:
#
# 1. **exact data**: small integers in inputs and weights make every sum exact: **bitwise** equal;
# 2. **same schedule**: the reference can run tpsim's own schedule over `isend`/`irecv`: bitwise equal
#    collectives and **equal bytes**, on any floats;
# 3. **native backends**: gloo's and NCCL's own collectives: equal within `torch.testing.assert_close`.

# %%
import pathlib
import sys
import time

import numpy as np
from IPython.display import Markdown, display

# reference/ is not installed with tpsim: it runs from the checkout, so put the checkout on the path
root = next(p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / "reference").is_dir())
sys.path.insert(0, str(root))

import tpsim
from reference.backend import choose_backend
from reference.cases import Case
from reference.check import check
from reference.launch import spawn
from reference.smoke import all_reduce_ranks
from tpsim.cli import gpu_report

# %% [markdown]
# ## 1. Two real ranks
#
# `reference.launch.spawn(fn, world_size)` starts one process per rank (torch.multiprocessing, start method
# spawn), puts each in a process group, runs `fn(ctx)` and hands back every rank's return value.  The
# function must live in a module (it is pickled by name), so lessons call functions from `reference`.
# The smallest one: every rank contributes its rank number to an all-reduce.

# %%
backend = choose_backend(2)
print("backend chosen here:", backend)
start = time.perf_counter()
sums = spawn(all_reduce_ranks, 2, timeout=120)
seconds = time.perf_counter() - start
print(f"rank results: {sums}  ({seconds:.1f} s, most of it starting two Python processes)")

mesh = tpsim.Mesh(2)
print("tpsim:", [float(r[0]) for r in tpsim.all_reduce([np.array([0.0]), np.array([1.0])], mesh)])

# %% [markdown]
# ## 2. Layers in both engines
#
# `reference.check.check(world_size, cases, comm=...)` runs each case in tpsim on a `Mesh(world_size)`,
# then on real ranks, feeding rank d exactly the shard tpsim's device d held, and compares shard d of every
# output, input gradient and weight gradient with rank d's tensor.  It also compares the collectives each
# engine issued and the bytes they sent.  Five small layers, uneven over 2 ranks where they can be (7 input
# features, 5 outputs, a vocabulary of 11):

# %%
cases = [
    Case("column", dict(s=5, b=2, inp=7, out=5), {}, data="exact", seed=1),
    Case("row", dict(s=5, b=2, inp=7, out=5), {}, data="exact", seed=2),
    Case("embedding", dict(s=5, b=2, vocab=11, hidden=6), {}, data="exact", seed=3),
    Case("mlp", dict(s=5, b=2, hidden=6, ffn=10), {}, data="float", seed=4),
    Case("loss", dict(s=5, b=2, vocab=11), {}, data="float", seed=5),
]
start = time.perf_counter()
native = check(2, cases, comm="native", device="cpu", timeout=180)
native_s = time.perf_counter() - start


def tier_table(result):
    """One line per tensor: the tier it is held to, the largest difference, and whether it passed."""
    print(f"{'case':36s} {'tensor':28s} {'tier':16s} {'max abs':>9} {'ULPs':>6} {'bitwise':>8} {'ok':>3}")
    for r in result["rows"]:
        print(
            f"{r['case'][:36]:36s} {r['tensor'][:28]:28s} {r['data'] + ': ' + r['claim']:16s} "
            f"{r['max_abs']:>9.2e} {r['ulps']:>6} {r['bitwise']!s:>8} {'ok' if r['ok'] else 'NO':>3}"
        )


tier_table(native)
print(f"\n({native_s:.1f} s for {len(cases)} layers, forward and backward, in both engines)")

# %% [markdown]
# On exact data (`column`, `row`, `embedding`) every tensor is **bitwise** equal: with small integers every
# product and partial sum is exact, so the order of the additions cannot matter.  On normal floats (`mlp`,
# `loss`) the two engines add in different orders (gloo's all-reduce is not tpsim's ring) and evaluate
# `tanh`, `exp` and `log` with different math libraries, so the last bits differ: those tensors are held to
# `assert_close`'s tolerance, and the ULPs column says by how many units in the last place they differ.

# %%
exact_rows = [r for r in native["rows"] if r["claim"] == "bitwise"]
close_rows = [r for r in native["rows"] if r["claim"] == "close"]
assert exact_rows and all(r["bitwise"] for r in exact_rows)
assert close_rows and all(r["close"] for r in close_rows)
display(
    Markdown(
        f"Tier 1: **{sum(r['bitwise'] for r in exact_rows)}/{len(exact_rows)}** exact-data tensors "
        "bitwise equal.  "
        f"Tier 3: **{sum(r['close'] for r in close_rows)}/{len(close_rows)}** float tensors within assert_close, "
        f"the worst {max(r['ulps'] for r in close_rows)} ULPs apart.  Replicated results: "
        f"{sum(bool(r['ranks_agree']) for r in native['rows'] if r['ranks_agree'] is not None)}/"
        f"{sum(r['ranks_agree'] is not None for r in native['rows'])} hold the same bits on both ranks."
    )
)

# %% [markdown]
# ## 3. Same schedule, same bits, same bytes
#
# Why did the float results differ in their last bits?  Floating-point addition is not associative, so the
# order in which partial sums are added shows up in the low bits.  In float32:

# %%
a, b, c = np.float32(1e8), np.float32(1.0), np.float32(-1e8)
print("(a + b) + c =", (a + b) + c, "   a + (b + c) =", a + (b + c), "   (a + c) + b =", (a + c) + b)

# %% [markdown]
# tpsim never sums over ranks with a bare `np.sum`: its collectives add in the order their **schedule**
# fixes.  With `comm="schedule"` the reference runs that very schedule object over point-to-point sends, adding
# in the same order.  `check` then replays every collective a rank issued through tpsim's engine on the same
# operands, and compares bits and bytes.  The same five layers, on normal floats this time:

# %%
float_cases = [Case(c.layer, c.dims, c.options, data="float", seed=c.seed) for c in cases]
sched = check(2, float_cases, comm="schedule", device="cpu", timeout=180)
print(f"{'case':36s} {'collectives tpsim/ref':>22} {'bytes tpsim':>12} {'bytes ref':>10} {'replay':>9}")
for c in sched["cases"]:
    replay = "bitwise" if c["replay_bitwise"] else f"{c['replay_ulps']} ulp"
    print(
        f"{c['case'][:36]:36s} {c['tpsim_collectives']:>10} / {c['ref_collectives']:<9} "
        f"{c['tpsim_bytes']:>12} {c['ref_bytes']:>10} {replay:>9}"
    )
assert all(c["replay_bitwise"] and c["replay_bytes_equal"] for c in sched["cases"])
display(
    Markdown(
        f"Tier 2: **{sum(c['replay_bitwise'] for c in sched['cases'])}/{len(sched['cases'])}** layers' "
        "collectives "
        f"bitwise equal to tpsim's on the same operands, and the ranks sent "
        f"**{sum(c['ref_bytes'] for c in sched['cases'])} B** in all, the bytes tpsim's trace counted "
        f"({sum(c['tpsim_bytes'] for c in sched['cases'])} B)."
    )
)

# %% [markdown]
# ## 4. On GPUs
#
# The same entry point runs on GPUs under `torchrun`, one process per GPU, NCCL chosen automatically:
#
# ```bash
# python -m reference.check --world-size 2                     # gloo on CPU, as above
# torchrun --nproc-per-node 4 -m reference.check               # NCCL on 4 GPUs
# torchrun --nproc-per-node 4 -m reference.check --comm schedule
# ```
#
# The whole GPU proof is one prepared command, `python -m reference.gpu_check`: the checker per world
# size, comm and dtype on CUDA, measured memory against tpsim's, the GEMMs of a TP MLP's shards, and
# tpsim's predicted block time against the measured one.  Its reports are kept in
# `benchmarks/results/gpu/`; this cell shows the newest one's tables, or says that none exists yet.

# %%
newest = gpu_report.newest_report(root / "benchmarks" / "results" / "gpu")
if newest is None:
    display(
        Markdown(
            f"**{gpu_report.NO_REPORT}.** No GPU run has been made in this checkout, so no GPU "
            "result is shown here: `python -m reference.gpu_check` on a GPU machine makes one."
        )
    )
else:
    display(Markdown(newest.with_suffix(".md").read_text()))

# %% [markdown]
# ## 5. Bytes and seconds
#
# The bytes are the same in both engines by construction (section 3).  The seconds are not comparable here:
# tpsim's times model NVLink or InfiniBand, and these two ranks talk through gloo over loopback TCP on one
# CPU.  What carries over is the accounting: a GPU report holds NCCL's measured times next to tpsim's
# predictions for the same collectives, which is how the presets' figures are checked.

# %%
mesh = tpsim.Mesh(2, topology=tpsim.presets.nvlink_node(2))
tpsim.all_reduce([tpsim.meta((1 << 20,), "float32")] * 2, mesh)
c = mesh.trace.collectives[0]
print(
    f"tpsim's prediction for a 4 MiB float32 all-reduce on 2 H100s over NVLink, at datasheet peak "
    f"bandwidth: {c.time * 1e6:.1f} us, "
    f"{mesh.trace.per_device()[0]['sent']} B sent per GPU"
)

# %% [markdown]
# ## Summary
#
# - `reference/` runs tpsim's layers on real ranks: `spawn` on one machine, `torchrun` on GPUs; gloo on CPU,
#   NCCL on GPUs.
# - **Tier 1**, exact data: bitwise equal.  **Tier 2**, tpsim's schedule over point-to-point: bitwise equal
#   on any floats, the same bytes.  **Tier 3**, native collectives: within `assert_close`, because addition
#   order and math libraries differ in the last bits.
# - `python -m reference.check --world-size N` prints this table for every layer; CI runs it on gloo.
#
# ## Exercises

# %%
from tpsim.exercises import lesson10 as ex

ex.sum_order

# %%
ex.sum_order()  # your prediction here, then run: ex.sum_order.run()

# %%
ex.schedule_bytes

# %%
ex.schedule_bytes()
