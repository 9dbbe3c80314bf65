"""Every size the check runs, full (one GPU) and --quick (CPU), and the budget of each section.

The full run must end within 8 minutes on one H100, start-up excluded: its budgets add up to
`TOTAL_BUDGET_S` (a test holds it under 480 s), and --quick's to under 60 s.  A section may overrun
its budget by at most timebox.GRACE_S before the alarm stops it.  `compute_flops` counts section
d's GEMM FLOPs, so a test can check the estimate against the ~600-700 TFLOP/s bf16 an H100 reaches
in practice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SECTION_ORDER = ("facts", "equivalence", "memory", "compute", "predict")


@dataclass(frozen=True)
class Sizes:
    budgets: dict  # section -> seconds
    # b. (world size, comm, dtype) per checker run; one_case_per_layer False: every default case
    equivalence: tuple
    one_case_per_layer: bool
    # c. one block and one small GPT, per world size
    memory_world_sizes: tuple
    block: dict  # s, b, hidden, heads, ffn
    gpt: dict  # s, b, vocab, hidden, heads, ffn, layers
    # d. the MLP shards: hidden sizes, tokens, TP degrees; the square matmul; copy bytes
    hiddens: tuple
    tokens: int
    tp_degrees: tuple
    fp32_hiddens: tuple  # fp32 (TF32 on) runs these hidden sizes only
    square: int
    copy_bytes: int
    reps: int
    warmup: int
    # e. the block timed at world size 1 (dims as `block`), and its reps
    predict_block: dict = field(default_factory=dict)
    dtype: str = "bfloat16"


def _equivalence_full() -> tuple:
    runs = [(w, c, d) for w in (1, 2) for c in ("native", "schedule") for d in ("float32", "bfloat16")]
    return (*runs, (4, "native", "float32"), (4, "schedule", "bfloat16"))


FULL = Sizes(
    budgets=dict(facts=15, equivalence=240, memory=50, compute=100, predict=45),
    equivalence=_equivalence_full(),
    one_case_per_layer=False,
    memory_world_sizes=(1, 2),
    block=dict(s=1024, b=4, hidden=2048, heads=16, ffn=8192),
    gpt=dict(s=512, b=4, vocab=32768, hidden=1024, heads=16, ffn=4096, layers=4),
    hiddens=(4096, 8192, 12288),
    tokens=4096,
    tp_degrees=(1, 2, 4, 8),
    fp32_hiddens=(4096,),
    square=8192,
    copy_bytes=1 << 30,
    reps=10,
    warmup=3,
    predict_block=dict(s=2048, b=4, hidden=4096, heads=32, ffn=16384),
)

QUICK = Sizes(
    budgets=dict(facts=2, equivalence=22, memory=20, compute=4, predict=10),
    equivalence=((2, "schedule", "bfloat16"),),  # one spawn: the schedule executor, bf16, 2 ranks
    one_case_per_layer=True,
    memory_world_sizes=(2,),
    block=dict(s=8, b=2, hidden=16, heads=4, ffn=32),
    gpt=dict(s=8, b=2, vocab=64, hidden=16, heads=4, ffn=32, layers=2),
    hiddens=(64, 128),
    tokens=64,
    tp_degrees=(1, 2),
    fp32_hiddens=(64,),
    square=128,
    copy_bytes=1 << 20,
    reps=3,
    warmup=1,
    predict_block=dict(s=16, b=2, hidden=32, heads=4, ffn=64),
)

TOTAL_BUDGET_S = sum(FULL.budgets.values())


def mlp_gemms(hidden: int, tokens: int, t: int) -> list[dict]:
    """The six GEMMs of one TP MLP (h -> 4h -> h) on one rank of t, as (m, n, k) of C[m,n] = A[m,k] B[k,n].

    column (fc1, W1 shard (4h/t, h)): forward Y = X W1^T; dX = dY W1; dW = dY^T X
    row    (fc2, W2 shard (h, 4h/t)): forward Y = X W2^T; dX = dY W2; dW = dY^T X
    """
    f = 4 * hidden // t
    T = tokens
    return [
        dict(layer="column", gemm="forward", m=T, n=f, k=hidden),
        dict(layer="column", gemm="dX", m=T, n=hidden, k=f),
        dict(layer="column", gemm="dW", m=f, n=hidden, k=T),
        dict(layer="row", gemm="forward", m=T, n=hidden, k=f),
        dict(layer="row", gemm="dX", m=T, n=f, k=hidden),
        dict(layer="row", gemm="dW", m=hidden, n=f, k=T),
    ]


def compute_flops(sizes: Sizes) -> float:
    """FLOPs section d runs (warm-ups and reps included): what bounds its time from below."""
    calls = sizes.reps + sizes.warmup
    total = 0.0
    for dtype_hiddens in (sizes.hiddens, sizes.fp32_hiddens):
        for h in dtype_hiddens:
            for t in sizes.tp_degrees:
                total += sum(2 * g["m"] * g["n"] * g["k"] for g in mlp_gemms(h, sizes.tokens, t)) * calls
    return total + 2 * 2 * sizes.square**3 * calls  # the square matmul, bf16 and fp32
