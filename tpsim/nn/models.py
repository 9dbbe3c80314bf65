"""Which model a name or a config file means, for the layout analyses (`tpsim model`, `tpsim compare`).

    resolve_model("llama3-70b")     the LlamaConfig: the exact Llama (tpsim.nn.Llama: GQA, SwiGLU,
                                    RMSNorm, RoPE, untied logits), not config.py's GPT stand-in
    resolve_model("gpt3-175b")      a GPTConfig, as config.resolve gives it
    resolve_model("my-llama.toml")  a LlamaConfig when the file names num_kv_heads, else a GPTConfig
    as_gpt(cfg)                     the GPT stand-in of a LlamaConfig, for the closed-form model
                                    (plan/iteration.py), which prices GPT layers only

A Llama config file holds LlamaConfig's fields: vocab_size, hidden, num_layers, num_heads,
num_kv_heads, ffn_hidden, seq_len (required); rope_theta, norm_eps, qkv_bias, tied_embeddings,
micro_batch, dtype, name (optional).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from tpsim import validate
from tpsim.errors import ConfigError
from tpsim.nn.config import PRESETS, GPTConfig, llama_as_gpt, load_config, read_table, resolve
from tpsim.nn.llama_config import LLAMA2_PRESETS, LLAMA_PRESETS, LlamaConfig

ModelConfig = GPTConfig | LlamaConfig
EXACT = {**LLAMA2_PRESETS, **LLAMA_PRESETS}  # every Llama-style preset, by the name PRESETS gives it
_LLAMA_FIELDS = {f.name for f in fields(LlamaConfig)} - {"source"}
_REQUIRED = ("vocab_size", "hidden", "num_layers", "num_heads", "num_kv_heads", "ffn_hidden", "seq_len")


def resolve_model(name_or_path: str | GPTConfig | LlamaConfig) -> ModelConfig:
    """A Llama-style preset or file as its LlamaConfig; anything else as config.resolve takes it."""
    if isinstance(name_or_path, GPTConfig | LlamaConfig):
        return name_or_path
    if name_or_path in EXACT:
        return EXACT[name_or_path]
    if Path(name_or_path).suffix in (".json", ".toml") and name_or_path not in PRESETS:
        d = read_table(name_or_path)
        return (
            llama_from_dict(d, name_or_path)
            if isinstance(d, dict) and "num_kv_heads" in d
            else load_config(name_or_path)
        )
    return resolve(name_or_path)


def llama_from_dict(d: dict, where: str = "config") -> LlamaConfig:
    """A LlamaConfig from a dict of its fields, each checked; unknown keys are errors."""
    unknown = [k for k in d if k not in _LLAMA_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; valid: {', '.join(sorted(_LLAMA_FIELDS))}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ConfigError(f"{where}: missing field {missing[0]!r} (required: {', '.join(_REQUIRED)})")
    for k in (*_REQUIRED, "micro_batch"):
        v = d.get(k, 1)
        if not validate.is_int(v) or v < 1:
            raise ConfigError(f"{where}: {k} = {v!r}; valid: an integer >= 1")
    if d["hidden"] % d["num_heads"]:
        raise ConfigError(
            f"{where}: hidden = {d['hidden']} does not split into num_heads = {d['num_heads']} heads of "
            "whole features"
        )
    if d["num_heads"] % d["num_kv_heads"]:
        raise ConfigError(
            f"{where}: num_heads = {d['num_heads']} is not a multiple of num_kv_heads = "
            f"{d['num_kv_heads']}; valid: num_kv_heads dividing {d['num_heads']}"
        )
    return LlamaConfig(**{**d, "name": d.get("name", Path(where).stem), "source": str(where)})


def as_gpt(cfg: ModelConfig) -> GPTConfig:
    """cfg itself if a GPT, else the GPT stand-in with the Llama's linear weights (config.llama_as_gpt)."""
    if isinstance(cfg, GPTConfig):
        return cfg
    c = cfg
    gpt = llama_as_gpt(
        c.name,
        c.vocab_size,
        c.hidden,
        c.num_layers,
        c.num_heads,
        c.num_kv_heads,
        c.ffn_hidden,
        c.seq_len,
        c.source,
    )
    return gpt.with_(micro_batch=c.micro_batch, dtype=c.dtype)
