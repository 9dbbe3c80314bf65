"""Whether a TP x DP x PP layout fits a model and a machine: the degrees divide what they split, and a TP
group stays inside a node unless told otherwise.  Each refusal names the degree and what would fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tpsim.errors import LayoutError
from tpsim.nn.llama_config import LlamaConfig

if TYPE_CHECKING:
    from tpsim.nn.models import ModelConfig
    from tpsim.plan.layout import Layout


def check_layout(
    cfg: ModelConfig, layout: Layout, devices: int | None = None, topology=None, tp_across_nodes: bool = False
) -> None:
    """Raise LayoutError naming the degree that does not fit, and what would."""
    for name in ("tp", "dp", "pp"):
        v = getattr(layout, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LayoutError(f"--{name} = {v!r}; valid: an integer >= 1")
    if devices is not None and layout.devices != devices:
        raise LayoutError(
            f"tp * dp * pp = {layout.tp} * {layout.dp} * {layout.pp} = {layout.devices}, but --devices is "
            f"{devices}; the three degrees must multiply to the number of devices"
        )
    t = layout.tp
    checks = [("num_heads", cfg.num_heads), ("ffn_hidden", cfg.ffn)]
    if cfg.num_query_groups and not (t % cfg.num_query_groups == 0 and cfg.num_heads % t == 0):
        checks.append(
            ("num_query_groups (GQA's KV heads; a multiple of them replicates each)", cfg.num_query_groups)
        )
    if layout.sp:
        checks.append(("seq_len (sequence parallelism splits it)", cfg.seq_len))
    for what, n in checks:
        if n % t:
            ok = [d for d in range(1, n + 1) if n % d == 0 and d <= 64]
            raise LayoutError(f"--tp {t} does not divide {cfg.name}'s {what} = {n}; valid tp: {ok}")
    if cfg.num_layers % layout.pp:
        ok = [d for d in range(1, cfg.num_layers + 1) if cfg.num_layers % d == 0]
        raise LayoutError(
            f"--pp {layout.pp} does not divide {cfg.name}'s {cfg.num_layers} layers; valid pp: {ok}"
        )
    if layout.sp and t == 1:
        raise LayoutError("sequence parallelism splits TP's replicated regions, so --sp needs --tp > 1")
    if topology is not None:
        if topology.num_devices < layout.devices:
            raise LayoutError(
                f"topology {topology.name!r} has {topology.num_devices} devices; "
                f"the layout {layout} needs {layout.devices}"
            )
        g = node_size(topology)
        if g and not tp_across_nodes and (t > g or g % t):
            raise LayoutError(
                f"TP group of {t} would span nodes of {g} devices on {topology.name!r}; use tp dividing {g}, "
                "or let TP cross nodes (--tp-across-nodes)"
            )


def layout_notes(cfg: ModelConfig, t: int) -> str:
    """The notes printed with an analysis: the stand-in's approximations or the exact model's source,
    and what TP beyond the KV heads does (tpsim/nn/gqa_qkv.py)."""
    exact = isinstance(cfg, LlamaConfig)
    if isinstance(cfg, LlamaConfig):
        notes = (
            f"{cfg.name} is the exact Llama-style model (tpsim.nn.Llama: GQA, SwiGLU, RMSNorm, RoPE, "
            f"{'tied' if cfg.tied_embeddings else 'untied'} logits; {cfg.source})"
        )
    else:
        notes = cfg.notes
    g = cfg.num_query_groups
    if not g or t <= g:
        return notes
    return notes + (
        f"; --tp {t} exceeds the {g} KV heads: each is replicated on {t // g} ranks (vLLM's layout; "
        f"tpsim.nn.GroupedQueryAttention), whose K/V weight grads are all-reduced in groups of {t // g}; "
        + (
            "those copies are in the weights, memory and traffic"
            if exact
            else "the stand-in's weights and traffic leave those copies out"
        )
    )


def node_size(topology) -> int | None:
    """Devices per node of a hierarchical topology, else None."""
    return topology.routing.params().get("group_size") if topology.kind == "hierarchical" else None
