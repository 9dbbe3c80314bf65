"""Model configurations (GPT-style), and the presets used for shape-only analysis."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tpsim.errors import TpsimError


@dataclass(frozen=True)
class GPTConfig:
    """A GPT: embedding -> num_layers blocks (pre-LN, attention + GeLU MLP) -> final LN -> logits."""

    vocab_size: int
    hidden: int
    num_layers: int
    num_heads: int
    seq_len: int
    ffn_hidden: int | None = None  # default 4 * hidden
    micro_batch: int = 1
    dtype: str = "bfloat16"
    dropout: float = 0.1
    name: str = "gpt"

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or 4 * self.hidden

    def parameters(self) -> int:
        """Parameter count (with biases and LayerNorms; tied embeddings not assumed)."""
        h, f = self.hidden, self.ffn
        per_layer = (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
        embeddings = self.vocab_size * h + self.seq_len * h  # word + position
        return self.num_layers * per_layer + embeddings + 2 * h + self.vocab_size * h  # + final LN + output

    def with_(self, **changes) -> GPTConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1
    "gpt3-175b": GPTConfig(51200, 12288, 96, 96, 2048, name="gpt3-175b"),
    "gpt3-13b": GPTConfig(51200, 5140, 40, 40, 2048, name="gpt3-13b"),
    "gpt3-1.3b": GPTConfig(51200, 2048, 24, 16, 2048, name="gpt3-1.3b"),
    # a toy that runs with real numbers in a second
    "tiny": GPTConfig(97, 32, 2, 4, 16, micro_batch=2, dtype="float32", dropout=0.0, name="tiny"),
}


def preset(name: str) -> GPTConfig:
    if name not in PRESETS:
        raise TpsimError(f"unknown model preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def korthikanti_activation_bytes(cfg: GPTConfig, tp: int = 1, sp: bool = False) -> float:
    """Activation bytes per layer, Korthikanti et al. 2022 ("Reducing Activation Recomputation"), 16-bit:

    sbh(34 + 5as/h) unsharded, sbh(10 + 24/t + 5as/(ht)) with TP, sbh(34 + 5as/h)/t with TP and SP.
    """
    s, b, h, a = cfg.seq_len, cfg.micro_batch, cfg.hidden, cfg.num_heads
    if tp == 1 and not sp:
        return s * b * h * (34 + 5 * a * s / h)
    if sp:
        return s * b * h * (34 + 5 * a * s / h) / tp
    return s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))
