"""The unsharded definitions of the Llama layers, in torch (float64, autograd for the gradients).

Written from the papers' formulas and Hugging Face's modeling_llama, independently of tpsim's layouts:
the weights are the canonical unsharded matrices each module draws from its seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    """x (b, n, s, d) at positions pos (s,): HF's rotate_half layout."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos.to(torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    return x * ang.cos() + rot * ang.sin()


def gqa(x, wq, wk, wv, wo, n, g, theta, bq=None, bk=None, bv=None, causal=True, offset=0):
    """x (s, b, h) -> (s, b, h)."""
    s, b, h = x.shape
    d = h // n

    def heads(w, bias, k):
        y = x @ w.T + (0 if bias is None else bias)
        return y.reshape(s, b, k, d).permute(1, 2, 0, 3)  # (b, k, s, d)

    pos = torch.arange(offset, offset + s)
    q, k, v = heads(wq, bq, n), heads(wk, bk, g), heads(wv, bv, g)
    q, k = rope(q, pos, theta), rope(k, pos, theta)
    k, v = k.repeat_interleave(n // g, dim=1), v.repeat_interleave(n // g, dim=1)
    scores = q @ k.transpose(-1, -2) / d**0.5
    if causal:
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    c = torch.softmax(scores, dim=-1) @ v  # (b, n, s, d)
    return c.permute(2, 0, 1, 3).reshape(s, b, h) @ wo.T


def swiglu(x, wg, wu, wd):
    return (F.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def draw_llama_case(draw, layer: str, t: int, dims: dict, opts: dict) -> None:
    """Dims and options of a Llama-layer checker case for TP degree t (test_reference_layers.layer_case).

    KV heads are t (split), 1 (one, on every rank) or, for even t > 2, t/2 (each on a sub-group of 2)."""
    from hypothesis import strategies as st

    if layer == "rmsnorm":
        dims.update(hidden=draw(st.integers(1, 8)))
        return
    if layer == "swiglu":
        dims.update(hidden=draw(st.integers(1, 6)), ffn=t * draw(st.integers(1, 3)))
        return
    heads = t * draw(st.integers(1, 2))
    dims.update(
        heads=heads,
        kv=draw(st.sampled_from(sorted({1, t} | ({t // 2} if t > 2 and t % 2 == 0 else set())))),
        hidden=heads * 2 * draw(st.integers(1, 2)),
    )
    if layer == "gqa":
        opts.update(qkv_bias=draw(st.booleans()))
    if layer in ("llama_block", "llama"):
        dims.update(ffn=t * draw(st.integers(1, 3)))
    if layer == "llama":
        dims.update(vocab=draw(st.integers(1, 13)), layers=draw(st.integers(1, 2)))
        opts.update(pad_to_multiple_of=draw(st.sampled_from([None, 4])))
