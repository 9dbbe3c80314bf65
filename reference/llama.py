"""A Llama-style block and model on one rank: the mirror of tpsim/nn/llama.py.

    r = x + self_attention(input_layernorm(x))        RMSNorm, GroupedQueryAttention with RoPE
    y = r + mlp(post_attention_layernorm(r))          RMSNorm, SwiGLUMLP

    ids ─ embedding (VocabParallelEmbedding) ─ layers ─ norm (RMSNorm) ─ output_layer ─ loss

The same seeds as tpsim's (tpsim.nn.decoder.layer_seed: layer i from seed + 100 (i + 1); the final
norm and the untied output layer above them), cut to this rank.
"""

from __future__ import annotations

import torch

from reference.embedding import VocabParallelEmbedding, VocabParallelLogits
from reference.gqa import GroupedQueryAttention
from reference.linear import ColumnParallelLinear
from reference.loss import VocabParallelCrossEntropy
from reference.module import Module
from reference.rmsnorm import RMSNorm
from reference.swiglu import SwiGLUMLP
from tpsim.nn.decoder import layer_seed
from tpsim.nn.llama_config import LlamaConfig


class LlamaBlock(Module):
    def __init__(
        self,
        comm,
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
        init: str = "normal",
        dtype="float32",
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        kw = dict(init=init, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=seq_dim, device=device)
        n = self.name
        self.input_layernorm = RMSNorm(
            comm, hidden, eps=norm_eps, seed=seed, name=f"{n}.input_layernorm", **kw
        )
        self.self_attention = GroupedQueryAttention(
            comm,
            hidden,
            num_heads,
            num_kv_heads,
            qkv_bias=qkv_bias,
            rope_theta=rope_theta,
            seed=seed + 10,
            name=f"{n}.self_attention",
            **kw,
        )
        self.post_attention_layernorm = RMSNorm(
            comm, hidden, eps=norm_eps, seed=seed + 20, name=f"{n}.post_attention_layernorm", **kw
        )
        self.mlp = SwiGLUMLP(comm, hidden, ffn_hidden, seed=seed + 30, name=f"{n}.mlp", **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x + self.self_attention(self.input_layernorm(x))
        return r + self.mlp(self.post_attention_layernorm(r))


class Llama(Module):
    """`mean = model(ids, targets)`: the mean loss over tokens; `mean.backward()` fills every grad."""

    def __init__(
        self,
        comm,
        config: LlamaConfig,
        *,
        sequence_parallel: bool = False,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        init: str = "normal",
        name: str = "llama",
        device=None,
    ):
        super().__init__(comm, name, device)
        cfg, sp = config, sequence_parallel
        kw = dict(init=init, dtype=cfg.dtype, device=device)
        self.embedding = VocabParallelEmbedding(
            comm,
            cfg.vocab_size,
            cfg.hidden,
            seed=seed,
            sequence_parallel=sp,
            pad_to_multiple_of=pad_to_multiple_of,
            name=f"{name}.embedding",
            **kw,
        )
        self.layers = torch.nn.ModuleList(
            LlamaBlock(
                comm,
                cfg.hidden,
                cfg.num_heads,
                cfg.num_kv_heads,
                cfg.ffn_hidden,
                rope_theta=cfg.rope_theta,
                norm_eps=cfg.norm_eps,
                qkv_bias=cfg.qkv_bias,
                sequence_parallel=sp,
                seed=layer_seed(seed, i),
                name=f"{name}.layers.{i}",
                **kw,
            )
            for i in range(cfg.num_layers)
        )
        top = layer_seed(seed, cfg.num_layers)
        self.norm = RMSNorm(
            comm, cfg.hidden, eps=cfg.norm_eps, seed=top, sequence_parallel=sp, name=f"{name}.norm", **kw
        )
        padded = self.embedding.padded_vocab_size
        if cfg.tied_embeddings:
            self.output_layer = VocabParallelLogits(self.embedding)
            self.output_layer.sequence_parallel = sp
        else:
            self.output_layer = ColumnParallelLinear(
                comm,
                cfg.hidden,
                padded,
                bias=False,
                seed=top + 10,
                sequence_parallel=sp,
                name=f"{name}.output_layer",
                **kw,
            )
        self.loss = VocabParallelCrossEntropy(
            comm, vocab_size=cfg.vocab_size, padded_vocab_size=padded, device=device
        )

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)
        for layer in self.layers:
            x = layer(x)
        _, mean = self.loss(self.output_layer(self.norm(x)), targets)
        return mean
