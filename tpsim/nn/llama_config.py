"""Llama-style configurations (GQA, SwiGLU, RMSNorm, RoPE) and presets from the published config.json.

    LLAMA_PRESETS["llama3-70b"]          a LlamaConfig, with the config file it was copied from
    LlamaConfig.parameters()             the parameter count, from the config's numbers alone

Each preset copies hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
intermediate_size, vocab_size, tie_word_embeddings, rope_theta and rms_norm_eps from the model's
config.json on its Hugging Face page (the `source` field), and max_position_embeddings as seq_len
where it is modest (405B and Qwen2.5 are given 8192 here: the analyses are per training sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LlamaConfig:
    """A decoder of num_layers blocks (RMSNorm, GQA with RoPE, RMSNorm, SwiGLU), final RMSNorm, logits."""

    vocab_size: int
    hidden: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    ffn_hidden: int
    seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False  # Qwen2: biases on q, k and v
    tied_embeddings: bool = False
    micro_batch: int = 1
    dtype: str = "bfloat16"
    name: str = "llama"
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    @property
    def ffn(self) -> int:  # GPTConfig's name, so the layout checks read either config
        return self.ffn_hidden

    @property
    def num_query_groups(self) -> int:  # Megatron's name for the KV heads
        return self.num_kv_heads

    def layer_weights(self) -> int:
        """One layer's linear weights (q, k, v [+ biases], o, gate, up, down): its GEMMs' multiply-adds
        per token."""
        h, kv = self.hidden, self.num_kv_heads * self.head_dim
        return h * (h + 2 * kv) + self.qkv_bias * (h + 2 * kv) + h * h + 3 * h * self.ffn_hidden

    def parameters(self) -> int:
        """Embedding, per layer (q, k, v [+ biases], o, gate, up, down, two RMSNorms), final RMSNorm,
        and the output layer unless tied."""
        h = self.hidden
        per_layer = self.layer_weights() + 2 * h
        output = 0 if self.tied_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_layers * per_layer + h + output

    def with_(self, **changes) -> LlamaConfig:
        return replace(self, **changes)


_HF = "https://huggingface.co/{}/blob/main/config.json"

LLAMA_PRESETS = {
    "llama3-8b": LlamaConfig(
        128256,
        4096,
        32,
        32,
        8,
        14336,
        8192,
        rope_theta=500000.0,
        name="llama3-8b",
        source=_HF.format("meta-llama/Meta-Llama-3-8B"),
    ),
    "llama3-70b": LlamaConfig(
        128256,
        8192,
        80,
        64,
        8,
        28672,
        8192,
        rope_theta=500000.0,
        name="llama3-70b",
        source=_HF.format("meta-llama/Meta-Llama-3-70B"),
    ),
    "llama3-405b": LlamaConfig(
        128256,
        16384,
        126,
        128,
        8,
        53248,
        8192,
        rope_theta=500000.0,
        name="llama3-405b",
        source=_HF.format("meta-llama/Llama-3.1-405B"),
    ),
    "mistral-7b": LlamaConfig(
        32000, 4096, 32, 32, 8, 14336, 8192, name="mistral-7b", source=_HF.format("mistralai/Mistral-7B-v0.1")
    ),
    "qwen2.5-72b": LlamaConfig(
        152064,
        8192,
        80,
        64,
        8,
        29568,
        8192,
        rope_theta=1000000.0,
        norm_eps=1e-5,
        qkv_bias=True,
        name="qwen2.5-72b",
        source=_HF.format("Qwen/Qwen2.5-72B"),
    ),
}

# Llama 2 (Touvron et al. 2023, Table 1: 7B and 13B multi-head, 70B with GQA), from the released configs;
# the model cards print rounded sizes only (7B, 13B, 70B), so PUBLISHED has no row for them
LLAMA2_PRESETS = {
    name: LlamaConfig(32000, h, layers, heads, kv, ffn, 4096, name=name, source=_HF.format(repo))
    for name, (h, layers, heads, kv, ffn, repo) in {
        "llama2-7b": (4096, 32, 32, 32, 11008, "meta-llama/Llama-2-7b-hf"),
        "llama2-13b": (5120, 40, 40, 40, 13824, "meta-llama/Llama-2-13b-hf"),
        "llama2-70b": (8192, 80, 64, 8, 28672, "meta-llama/Llama-2-70b-hf"),
    }.items()
}

# the counts the model cards publish, rounded as published, and where
PUBLISHED = {
    "llama3-8b": (8.03e9, "https://huggingface.co/meta-llama/Meta-Llama-3-8B (model card: 8B; 8.03B params)"),
    "llama3-70b": (70.6e9, "https://huggingface.co/meta-llama/Meta-Llama-3-70B (70.6B params)"),
    "llama3-405b": (405.9e9, "https://huggingface.co/meta-llama/Llama-3.1-405B (405.9B params)"),
    "mistral-7b": (7.24e9, "https://huggingface.co/mistralai/Mistral-7B-v0.1 (7.24B params)"),
    "qwen2.5-72b": (72.7e9, "https://huggingface.co/Qwen/Qwen2.5-72B (model card: 72.7B parameters)"),
}
