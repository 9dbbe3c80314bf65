"""A Llama-style decoder (Llama 2/3, Mistral, Qwen2) on virtual devices: block and model.

    ids (s, b) ─ embedding ─ layers.0 ... layers.{L-1} ─ norm ─ output_layer ─ loss

    r = x + self_attention(input_layernorm(x))        RMSNorm, GroupedQueryAttention with RoPE
    y = r + mlp(post_attention_layernorm(r))          RMSNorm, SwiGLUMLP

embedding       VocabParallelEmbedding: one all-reduce (SP: a reduce-scatter to the sequence shard)
layers.i        2 all-reduces forward and 2 backward (SP: all-gather / reduce-scatter pairs), plus,
                when t exceeds the KV heads, one all-reduce of each layer's KV weight grads in
                groups of t/g (gqa_qkv.py); SP adds one all-reduce per RMSNorm of its dw
output_layer    untied: ColumnParallelLinear(h, V', bias=False); tied: VocabParallelLogits
loss            VocabParallelCrossEntropy, the mean over tokens

No position embedding table (RoPE rotates q and k inside attention), no biases but Qwen2's on QKV,
no dropout.  x and y of a block are (s, b, h): R on TP, or S(0) with sequence parallelism.
"""

from __future__ import annotations

import math

from tpsim.darray import DArray
from tpsim.nn import ops
from tpsim.nn.decoder import DecoderLM, layer_seed
from tpsim.nn.embedding import VocabParallelEmbedding, VocabParallelLogits
from tpsim.nn.gqa import GroupedQueryAttention
from tpsim.nn.gqa_qkv import GroupedQKVLinear
from tpsim.nn.linear import ColumnParallelLinear
from tpsim.nn.llama_config import LlamaConfig
from tpsim.nn.loss import VocabParallelCrossEntropy
from tpsim.nn.module import Module
from tpsim.nn.rmsnorm import RMSNorm
from tpsim.nn.swiglu import SwiGLUMLP


class LlamaBlock(Module):
    """x (s, b, h) -> y (s, b, h): pre-RMSNorm GQA and SwiGLU, each with a residual."""

    def __init__(
        self,
        mesh,
        hidden: int,
        num_heads: int,
        num_kv_heads: int,
        ffn_hidden: int,
        *,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-5,
        qkv_bias: bool = False,
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        kw = dict(init=init, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=seq_dim, tp_dim=tp_dim)
        # each child draws from its own seeds: seed, seed + 10 (up to + 6), seed + 20, seed + 30 (up to + 2)
        self.input_layernorm = self.child(
            "input_layernorm", RMSNorm(mesh, hidden, eps=norm_eps, seed=seed, **kw)
        )
        attn = GroupedQueryAttention(
            mesh,
            hidden,
            num_heads,
            num_kv_heads,
            qkv_bias=qkv_bias,
            rope_theta=rope_theta,
            seed=seed + 10,
            **kw,
        )
        self.child("self_attention", attn)
        self.self_attention = attn
        self.post_attention_layernorm = self.child(
            "post_attention_layernorm", RMSNorm(mesh, hidden, eps=norm_eps, seed=seed + 20, **kw)
        )
        self.mlp = self.child("mlp", SwiGLUMLP(mesh, hidden, ffn_hidden, seed=seed + 30, **kw))

    def forward(self, x: DArray) -> DArray:
        r = self._add("residual_add", x, self.self_attention(self.input_layernorm(x)))
        return self._add("residual_add", r, self.mlp(self.post_attention_layernorm(r)))

    def backward(self, dy: DArray) -> DArray:
        dr = self.post_attention_layernorm.backprop(self.mlp.backprop(dy))
        dr = self._add("residual_add_backward", dr, dy)
        dx = self.input_layernorm.backprop(self.self_attention.backprop(dr))
        return self._add("residual_add_backward", dx, dr)

    def _add(self, name: str, a: DArray, b: DArray) -> DArray:
        return self.local(
            name, lambda u, v: ops.elementwise(lambda p, q: p + q, u, v), a, b, placements=list(a.placements)
        )


class Llama(DecoderLM):
    """`loss = model(ids, targets)` (mean over tokens); `model.backprop()` fills every grad."""

    def __init__(
        self,
        mesh,
        config: LlamaConfig,
        *,
        sequence_parallel: bool = False,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        init: str | None = "normal",
        tp_dim=None,
        name: str = "llama",
    ):
        super().__init__(mesh, name, tp_dim)
        cfg, sp = config, sequence_parallel
        self.config, self.sequence_parallel = cfg, sp
        kw = dict(init=init, dtype=cfg.dtype, tp_dim=tp_dim)
        table = VocabParallelEmbedding(
            mesh,
            cfg.vocab_size,
            cfg.hidden,
            seed=seed,
            sequence_parallel=sp,
            pad_to_multiple_of=pad_to_multiple_of,
            **kw,
        )
        self.embedding = self.child("embedding", table)
        self.layers: list[LlamaBlock] = []
        for i in range(cfg.num_layers):
            block = LlamaBlock(
                mesh,
                cfg.hidden,
                cfg.num_heads,
                cfg.num_kv_heads,
                cfg.ffn_hidden,
                rope_theta=cfg.rope_theta,
                norm_eps=cfg.norm_eps,
                qkv_bias=cfg.qkv_bias,
                sequence_parallel=sp,
                seed=layer_seed(seed, i),
                **kw,
            )
            self.child(f"layers.{i}", block)
            self.layers.append(block)
        top = layer_seed(seed, cfg.num_layers)
        self.norm = self.child(
            "norm", RMSNorm(mesh, cfg.hidden, eps=cfg.norm_eps, seed=top, sequence_parallel=sp, **kw)
        )
        self.padded_vocab_size = table.padded_vocab_size
        out: Module
        if cfg.tied_embeddings:
            out = VocabParallelLogits(table)
            out.sequence_parallel = sp
        else:
            out = ColumnParallelLinear(
                mesh,
                cfg.hidden,
                self.padded_vocab_size,
                bias=False,
                seed=top + 10,
                sequence_parallel=sp,
                **kw,
            )
        self.output_layer = self.child("output_layer", out)
        self.loss = self.child(
            "loss", VocabParallelCrossEntropy(mesh, vocab_size=cfg.vocab_size, tp_dim=tp_dim)
        )

    @property
    def final_norm(self) -> Module:
        return self.norm

    def num_parameters(self) -> int:
        """Distinct parameters: a KV head replicated over r ranks counts once (gqa_qkv.py)."""
        total = sum(math.prod(p.shape) for _, p in self.named_parameters())
        for layer in self.layers:
            qkv = layer.self_attention.query_key_value
            assert isinstance(qkv, GroupedQKVLinear)
            r, d = qkv.layout.replicas, qkv.layout.head_dim
            copies = (r - 1) * 2 * d * qkv.layout.num_kv_heads
            total -= copies * (qkv.in_features + qkv.has_bias)
        return total
