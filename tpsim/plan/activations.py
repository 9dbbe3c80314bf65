"""Activation memory of one transformer layer, tensor by tensor, as Korthikanti et al. 2022 count it.

"Reducing Activation Recomputation in Large Transformer Models" (Korthikanti et al., 2022, Sec. 4)
lists what one GPT layer saves for its backward, in bytes, with 16-bit activations and 1-byte
dropout masks, for s tokens, micro-batch b, hidden h and a heads.  Each saved tensor has a region:

    "tp"        inside TP's column/row pair: split by t
    "sp"        in the replicated regions (LayerNorm, dropout, the inputs of the TP pairs): split by t
                only with sequence parallelism
    "core"      the attention core (softmax, its dropout, the dropout's output): split by t, and
                dropped by selective recomputation

Summed, the tensors give the paper's closed forms, which the tests check:

    no parallelism      s b h (34 + 5 a s / h)
    TP t                s b h (10 + 24 / t + 5 a s / (h t))
    TP t + SP           s b h (34 / t + 5 a s / (h t))
    selective           the 5 a s / h term gone;  full: only the layer's input, 2 s b h (/ t with SP)
"""

from __future__ import annotations

from tpsim.errors import RecomputeError

RECOMPUTE = ("none", "selective", "full")


def saved_tensors(s: int, b: int, h: int, a: int, ffn: int | None = None) -> list[tuple[str, str, float]]:
    """[(what, region, bytes)] one layer saves for backward, unsplit (t = 1)."""
    f = ffn or 4 * h
    sbh, core = s * b * h, a * s * s * b
    return [
        ("LayerNorm 1 input", "sp", 2 * sbh),
        ("QKV GEMM input (LayerNorm 1 output)", "sp", 2 * sbh),
        ("Q and K, for QK^T", "tp", 4 * sbh),
        ("softmax output", "core", 2 * core),
        ("attention dropout mask", "core", 1 * core),
        ("attention dropout output, for x V", "core", 2 * core),
        ("V, for x V", "tp", 2 * sbh),
        ("output projection input", "tp", 2 * sbh),
        ("attention dropout-add mask", "sp", 1 * sbh),
        ("LayerNorm 2 input", "sp", 2 * sbh),
        ("fc1 input (LayerNorm 2 output)", "sp", 2 * sbh),
        ("GeLU input", "tp", 2 * s * b * f),
        ("fc2 input (GeLU output)", "tp", 2 * s * b * f),
        ("MLP dropout-add mask", "sp", 1 * sbh),
    ]


def layer_activation_bytes(
    s: int, b: int, h: int, a: int, t: int = 1, sp: bool = False, recompute: str = "none", ffn=None
) -> float:
    """Bytes one layer holds between its forward and its backward, per TP rank."""
    if recompute not in RECOMPUTE:
        raise RecomputeError(f"unknown recompute mode {recompute!r}; valid: {', '.join(RECOMPUTE)}")
    if recompute == "full":
        return 2 * s * b * h / (t if sp else 1)  # the layer's input; the rest is recomputed
    total = 0.0
    for _, region, nbytes in saved_tensors(s, b, h, a, ffn):
        if region == "core" and recompute == "selective":
            continue
        total += nbytes / t if region in ("tp", "core") or sp else nbytes
    return total


def korthikanti(
    s: int, b: int, h: int, a: int, t: int = 1, sp: bool = False, recompute: str = "none"
) -> float:
    """The paper's closed forms (Table 2), for checking `layer_activation_bytes` (ffn = 4h)."""
    core = 0.0 if recompute == "selective" else 5 * a * s / (h * t)
    if recompute == "full":
        return 2 * s * b * h / (t if sp else 1)
    if sp:
        return s * b * h * (34 / t + core)
    return s * b * h * (10 + 24 / t + core)
