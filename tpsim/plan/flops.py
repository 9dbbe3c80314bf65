"""FLOPs of a GPT training iteration as Megatron counts them, and MFU / HFU.

Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM", Sec. 5.1) count only GEMMs, 2 FLOPs per multiply-add.  One layer's forward, for B
sequences of s tokens and hidden h (ffn 4h):

    qkv 6Bsh^2 + scores 2Bs^2h + context 2Bs^2h + proj 2Bsh^2 + MLP 16Bsh^2 = 24Bsh^2 (1 + s / (6h))

and the logit layer 2BshV.  Backward costs twice the forward.  So

    model FLOPs    (forward + backward)                  72 B s l h^2 (1 + s/(6h) + V/(12 l h))
    hardware FLOPs with full recompute (one more forward of every layer, not of the logits)
                                                         96 B s l h^2 (1 + s/(6h) + V/(16 l h))

the second being the paper's Eq. (3).  Selective recompute adds the attention core's forward,
4Bs^2h per layer.  MFU = model FLOPs / (time x devices x peak); HFU counts the hardware FLOPs
(Chowdhery et al. 2022, PaLM, App. B; Korthikanti et al. 2022, Sec. 6).
"""

from __future__ import annotations

from tpsim.plan.activations import RECOMPUTE, RecomputeError


def model_flops(batch: int, s: int, layers: int, h: int, vocab: int) -> float:
    """72 B s l h^2 (1 + s/(6h) + V/(12 l h)): forward and backward, no recomputation."""
    return 72 * batch * s * layers * h * h * (1 + s / (6 * h) + vocab / (12 * layers * h))


def recompute_flops(batch: int, s: int, layers: int, h: int, recompute: str) -> float:
    """The extra forward FLOPs recomputation runs: all of each layer's (full) or its attention core's."""
    if recompute not in RECOMPUTE:
        raise RecomputeError(f"unknown recompute mode {recompute!r}; valid: {', '.join(RECOMPUTE)}")
    per_layer = {
        "none": 0.0,
        "selective": 4 * batch * s * s * h,
        "full": 24 * batch * s * h * h * (1 + s / (6 * h)),
    }
    return layers * per_layer[recompute]


def hardware_flops(batch: int, s: int, layers: int, h: int, vocab: int, recompute: str) -> float:
    """Model FLOPs plus recomputation's; with "full" this is Eq. (3), 96 B s l h^2 (1 + s/6h + V/16lh)."""
    return model_flops(batch, s, layers, h, vocab) + recompute_flops(batch, s, layers, h, recompute)


def model_flops_of(batch: int, s: int, layers: int, h: int, vocab: int, weights: int) -> float:
    """The same count for any layer, given its linear weights W (a Llama's GQA and SwiGLU included):

    6 B s (l W + h V) + 12 B s^2 h l, which for W = 12 h^2 is 72 B s l h^2 (1 + s/(6h) + V/(12 l h)).
    """
    return 6 * batch * s * (layers * weights + h * vocab) + 12 * batch * s * s * h * layers


def recompute_flops_of(batch: int, s: int, layers: int, h: int, weights: int, recompute: str) -> float:
    """recompute_flops for a layer of W linear weights: its forward is 2 B s W + 4 B s^2 h."""
    if recompute not in RECOMPUTE:
        raise RecomputeError(f"unknown recompute mode {recompute!r}; valid: {', '.join(RECOMPUTE)}")
    per_layer = {
        "none": 0.0,
        "selective": 4 * batch * s * s * h,
        "full": 2 * batch * s * (weights + 2 * s * h),
    }
    return layers * per_layer[recompute]
