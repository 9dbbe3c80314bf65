"""Model configurations (GPT-style), the presets used for shape-only analysis, and config files.

    preset("gpt3-175b")            a GPTConfig by name (PRESETS)
    load_config("my-model.toml")   a GPTConfig from a JSON or TOML file of GPTConfig fields
    resolve("llama2-70b" or path)  either, as the `tpsim model` command takes it

GPTConfig is Megatron's GPT layer (pre-LayerNorm, multi-head attention with biases, a two-matrix GeLU
MLP, learned position embeddings).  The Llama entries of PRESETS are GPT stand-ins, not Llama (see
`llama_as_gpt` for what they keep and approximate), kept for the closed-form model (plan/iteration.py).
`tpsim model` and `tpsim compare` take the Llama presets as the exact model instead: tpsim.nn.Llama
(GQA, SwiGLU, RMSNorm, RoPE), configured by llama_config.LlamaConfig, chosen by models.resolve_model.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from tpsim import validate
from tpsim.errors import ConfigError
from tpsim.nn.llama_config import LLAMA_PRESETS

_INTS = ("vocab_size", "hidden", "num_layers", "num_heads", "seq_len", "micro_batch")


def check_fields(d: dict, where: str) -> None:
    """Sizes are ints >= 1, 0 <= dropout < 1, and heads hold whole features (GPTConfig and from_dict)."""
    for k in (*_INTS, "ffn_hidden", "num_query_groups"):
        v = d.get(k, 1 if k == "micro_batch" else None)
        if v is None and k in ("ffn_hidden", "num_query_groups"):
            continue
        if not validate.is_int(v) or v < 1:
            raise ConfigError(f"{where}: {k} = {v!r}; valid: an integer >= 1")
    dropout = d.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"{where}: dropout = {dropout!r}; valid: 0 <= dropout < 1")
    if d["hidden"] % d["num_heads"]:
        raise ConfigError(
            f"{where}: hidden = {d['hidden']} does not split into num_heads = {d['num_heads']} "
            "heads of whole features"
        )


@dataclass(frozen=True)
class GPTConfig:
    """A GPT: embedding -> num_layers blocks (pre-LN, attention + GeLU MLP) -> final LN -> logits.

    `tied_embeddings`: the output layer reuses the word embedding table (GPT) or has its own (Llama).
    `num_query_groups`: Megatron's name for GQA's key/value heads.  The GPT stand-in's attention is
    multi-head; this field carries GQA's constraint on TP into the checks: t divides the KV heads, or is
    a multiple of them (each replicated on t / g ranks, as tpsim.nn.GroupedQueryAttention does).
    `notes`: what a stand-in configuration approximates, printed with every analysis of it.
    """

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
    tied_embeddings: bool = True
    num_query_groups: int | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        check_fields(
            {f: getattr(self, f) for f in (*_INTS, "ffn_hidden", "num_query_groups", "dropout")},
            f"GPTConfig {self.name!r}",
        )

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or 4 * self.hidden

    def parameters(self) -> int:
        """Parameter count (with biases and LayerNorms); the output layer counted as untied."""
        h, f = self.hidden, self.ffn
        per_layer = (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
        embeddings = self.vocab_size * h + self.seq_len * h  # word + position
        return self.num_layers * per_layer + embeddings + 2 * h + self.vocab_size * h  # + final LN + output

    def with_(self, **changes) -> GPTConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def llama_parameters(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int) -> int:
    """A Llama's parameter count: GQA attention, SwiGLU MLP, RMSNorm, untied output, no biases, RoPE."""
    h, kv_dim = hidden, kv_heads * (hidden // heads)
    per_layer = h * (h + 2 * kv_dim) + h * h + 3 * h * ffn + 2 * h  # qkv, o, gate/up/down, 2 RMSNorms
    return layers * per_layer + 2 * vocab * h + h  # + embedding, output layer, final RMSNorm


def llama_as_gpt(
    name: str,
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    ffn: int,
    seq_len: int,
    source: str,
) -> GPTConfig:
    """A GPT stand-in for a Llama whose linear layers hold as many weights as the Llama's.

    Kept exactly: hidden size, layers, heads, vocabulary, sequence length, untied output layer; the
    weights of each layer's linear layers, so the GEMM FLOPs, weight/grad/optimizer memory and the
    DP gradient all-reduce; and TP's collectives (Megatron issues one all-reduce of s b h after the
    attention projection and one after the MLP's down projection, forward and backward, for SwiGLU
    and GQA alike).  To keep the weights, the GeLU MLP's width is

        ffn' = 1.5 ffn - hidden (1 - kv_heads / heads)

    SwiGLU's three h x ffn matrices are 2 h ffn' minus what GQA saves on the K and V projections.
    Approximated: activation memory (the stand-in saves K and V of every head, GeLU's input and not
    SwiGLU's gate and up outputs, LayerNorm's statistics instead of RMSNorm's) and the elementwise
    ops' time; the stand-in adds biases, LayerNorm betas and learned position embeddings (RoPE has
    none), a fraction of a percent of the parameters, given in the notes.
    """
    ffn_gpt = (3 * ffn - 2 * hidden + 2 * kv_heads * (hidden // heads)) // 2
    cfg = GPTConfig(
        vocab,
        hidden,
        layers,
        heads,
        seq_len,
        ffn_gpt,
        dropout=0.0,
        name=name,
        tied_embeddings=False,
        num_query_groups=kv_heads,
    )
    true, stand_in = llama_parameters(vocab, hidden, layers, heads, kv_heads, ffn), cfg.parameters()
    notes = (
        f"{name} is a GPT stand-in ({source}): SwiGLU ffn {ffn} and GQA with {kv_heads} KV heads are "
        f"modelled as a GeLU MLP of width {ffn_gpt} and multi-head attention with the same linear-layer "
        f"weights; TP collectives and GEMM FLOPs are exact, activation memory approximate; "
        f"{stand_in:,} parameters against the Llama's {true:,} (+{100 * (stand_in - true) / true:.2f}%: "
        f"biases, LayerNorm betas, learned positions)"
    )
    return replace(cfg, notes=notes)


_LLAMA2 = "Touvron et al. 2023, Llama 2, Table 1 and the released config.json"
_LLAMA3 = "Llama 3 model card and the released config.json"
_NEW_STAND_INS = ("llama3-405b", "mistral-7b", "qwen2.5-72b")

PRESETS = {
    # Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1.  For 13B the table prints
    # d_model 5140 beside 40 heads of d_head 128; 40 x 128 = 5120, which heads of whole features need.
    "gpt3-175b": GPTConfig(51200, 12288, 96, 96, 2048, name="gpt3-175b"),
    "gpt3-13b": GPTConfig(51200, 5120, 40, 40, 2048, name="gpt3-13b"),
    "gpt3-1.3b": GPTConfig(51200, 2048, 24, 16, 2048, name="gpt3-1.3b"),
    "llama2-7b": llama_as_gpt("llama2-7b", 32000, 4096, 32, 32, 32, 11008, 4096, _LLAMA2),
    "llama2-13b": llama_as_gpt("llama2-13b", 32000, 5120, 40, 40, 40, 13824, 4096, _LLAMA2),
    "llama2-70b": llama_as_gpt("llama2-70b", 32000, 8192, 80, 64, 8, 28672, 4096, _LLAMA2),
    "llama3-8b": llama_as_gpt("llama3-8b", 128256, 4096, 32, 32, 8, 14336, 8192, _LLAMA3),
    "llama3-70b": llama_as_gpt("llama3-70b", 128256, 8192, 80, 64, 8, 28672, 8192, _LLAMA3),
    # the Llama-style presets of llama_config.py (their config.json, exact in tpsim.nn.Llama), as stand-ins
    **{
        k: llama_as_gpt(
            k,
            c.vocab_size,
            c.hidden,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.ffn_hidden,
            c.seq_len,
            c.source,
        )
        for k, c in LLAMA_PRESETS.items()
        if k in _NEW_STAND_INS
    },
    # a toy that runs with real numbers in a second
    "tiny": GPTConfig(97, 32, 2, 4, 16, micro_batch=2, dtype="float32", dropout=0.0, name="tiny"),
}


def preset(name: str) -> GPTConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


_FIELDS = {f.name: f for f in fields(GPTConfig)}


def from_dict(d: dict, where: str = "config") -> GPTConfig:
    """A GPTConfig from a dict of its fields, every field checked; unknown keys are errors."""
    if not isinstance(d, dict):
        raise ConfigError(
            f"{where}: a model config must be a table of GPTConfig fields; got {type(d).__name__}"
        )
    unknown = [k for k in d if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; valid: {', '.join(_FIELDS)}")
    missing = [k for k in ("vocab_size", "hidden", "num_layers", "num_heads", "seq_len") if k not in d]
    if missing:
        raise ConfigError(
            f"{where}: missing field {missing[0]!r} (required: vocab_size, hidden, num_layers, "
            "num_heads, seq_len)"
        )
    check_fields(d, where)
    name = d.get("name", Path(where).stem if where != "config" else "gpt")
    return GPTConfig(**{**d, "name": name})


def load_config(path: str | Path) -> GPTConfig:
    """A GPTConfig from a .json or .toml file holding GPTConfig's fields (name defaults to the file's)."""
    return from_dict(read_table(path), str(path))


def read_table(path: str | Path):
    """The parsed contents of a .json or .toml model config file; ConfigError if unreadable."""
    p = Path(path)
    if p.suffix not in (".json", ".toml"):
        raise ConfigError(f"{p}: model config files are .json or .toml; got {p.suffix or 'no suffix'!r}")
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from e
    try:
        return json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: not valid {p.suffix[1:].upper()} ({e})") from e


def resolve(name_or_path: str | GPTConfig) -> GPTConfig:
    """A preset name, a config file path, or a GPTConfig as is."""
    if isinstance(name_or_path, GPTConfig):
        return name_or_path
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if Path(name_or_path).suffix in (".json", ".toml"):
        return load_config(name_or_path)
    raise ConfigError(
        f"unknown model {name_or_path!r}; valid: a preset ({', '.join(PRESETS)}) or a .json/.toml file"
    )


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
