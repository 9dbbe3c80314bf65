"""A Llama decoder layer in plain torch.nn, for `python -m reference.audit` (reference/audit_examples.py).

    x -> RMSNorm -> q, k, v (GQA: n query heads, g KV heads of d) -> RoPE -> causal attention -> o, + x
      -> RMSNorm -> down(silu(gate) * up), + residual

Separate q_proj, k_proj, v_proj (Hugging Face's layout), none with a bias.  Under a ColwiseParallel
plan each rank holds a contiguous block of whole heads; forward reads how many from the local widths,
so the unsharded module and every rank's piece run the same code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """x (b, heads, s, d) rotated at positions 0 .. s - 1 (rotate_half layout)."""
    d, s = x.shape[-1], x.shape[-2]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.outer(torch.arange(s, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], dim=-1).to(x.dtype)  # (s, d)
    half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    return x * ang.cos() + half * ang.sin()


class GQAttention(nn.Module):
    def __init__(self, hidden: int, num_heads: int, num_kv_heads: int):
        super().__init__()
        self.head_dim = d = hidden // num_heads
        self.q_proj = nn.Linear(hidden, num_heads * d, bias=False)
        self.k_proj = nn.Linear(hidden, num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(hidden, num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(num_heads * d, hidden, bias=False)

    def forward(self, x):
        s, b, d = x.shape[0], x.shape[1], self.head_dim

        def heads(t):
            return t.reshape(s, b, -1, d).permute(1, 2, 0, 3)  # (b, local heads, s, d)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        q, k = rope(q), rope(k)
        m = q.shape[1] // k.shape[1]  # query heads per KV head on this rank
        k, v = k.repeat_interleave(m, dim=1), v.repeat_interleave(m, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (b, n_local, s, s)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        ctx = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1) @ v
        return self.o_proj(ctx.permute(2, 0, 1, 3).reshape(s, b, -1))  # (s, b, n_local d) in


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, hidden: int, num_heads: int, num_kv_heads: int, ffn: int, eps: float = 1e-6):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(hidden, eps=eps)  # registered first: the audit reads h from it
        self.self_attn = GQAttention(hidden, num_heads, num_kv_heads)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=eps)
        self.mlp = SwiGLU(hidden, ffn)

    def forward(self, x):
        r = x + self.self_attn(self.input_layernorm(x))
        return r + self.mlp(self.post_attention_layernorm(r))
