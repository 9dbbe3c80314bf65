"""`tpsim model`: one training step of a model laid out TP x DP x PP: traffic, memory and time per
device, shape-only.

    tpsim model gpt3-175b --tp 8                       one NVLink node, TP only
    tpsim model gpt3-175b --tp 8 --dp 4 --pp 8         256 GPUs, 8 per node: TP inside each node
    tpsim model my-model.toml --tp 4 --pp 2 --sp       any GPTConfig from a .json/.toml file

The model is a preset or a file of GPTConfig fields (vocab_size, hidden, num_layers, num_heads,
seq_len; optionally ffn_hidden, micro_batch, dtype, dropout, name, tied_embeddings), or of LlamaConfig
fields (with num_kv_heads and ffn_hidden; see tpsim/nn/models.py).  Llama, Mistral and Qwen presets
and Llama files are simulated as the exact model (GQA with KV heads split or replicated, SwiGLU,
RMSNorm, RoPE); --realistic prices their GPT stand-in (tpsim/nn/config.py), as iteration.py models
GPT layers.  The mesh is (pp, dp, tp) with TP's ranks neighbours (Megatron's order); the topology
defaults to --device's standard node (h100: DGX H100, 8 GPUs per node, InfiniBand between nodes; see
`tpsim.nodes`).  Optimizer state: mixed-precision Adam, 12 bytes per parameter (16 with bf16 weights
and grads), divided by dp with --zero1.  See tpsim/plan/layout.py for the whole time model.
"""

from __future__ import annotations

from tpsim.cli import realistic
from tpsim.cli.args import add_command, add_device_flags, add_output_flags, choice, model_name, positive_int
from tpsim.cli.node import choose
from tpsim.cli.progress import bar
from tpsim.efficiency import mode_note
from tpsim.efficiency_fit import load
from tpsim.nn.models import as_gpt, resolve_model
from tpsim.plan import Layout, analyse_layout
from tpsim.plan.activations import RECOMPUTE
from tpsim.plan.kernels import KERNELS
from tpsim.plan.pipeline import SCHEDULES
from tpsim.report import fmt_bytes, fmt_time, table


def register(sub) -> None:
    p = add_command(sub, "model", "a training step of a model: traffic, memory and time per device", __doc__)
    p.add_argument("model", type=model_name, help="a preset or a .json/.toml config file")
    add_layout_flags(p)
    p.add_argument("--tp", type=positive_int, default=8, help="tensor-parallel degree (default 8)")
    p.add_argument("--dp", type=positive_int, default=1, help="data-parallel degree (default 1)")
    p.add_argument("--pp", type=positive_int, default=1, help="pipeline-parallel degree (default 1)")
    p.add_argument("--sp", action="store_true", help="sequence parallelism (needs --tp > 1)")
    p.add_argument("--devices", type=positive_int, help="must equal tp * dp * pp (a check)")
    p.add_argument(
        "--realistic",
        action="store_true",
        help="also the closed-form iteration model with GEMM efficiency (tpsim/plan/iteration.py)",
    )
    p.add_argument(
        "--kernels",
        default="fused",
        choices=KERNELS,
        help="for --realistic: unfused, fused or flash (FlashAttention) (default fused)",
    )
    p.add_argument("--dp-overlap", action="store_true", help="for --realistic: hide DP behind backward")
    p.add_argument(
        "--tp-overlap",
        action="store_true",
        help="for --realistic: Megatron's TP comm overlap (dX collective beside dW; SP: ring-exchange "
        "pipelined with the GEMMs); times the iteration on the stream timeline (tpsim/plan/timeline.py)",
    )
    p.add_argument(
        "--streams",
        action="store_true",
        help="for --realistic: time it on the stream timeline instead of in closed form (then "
        "--dp-overlap means Megatron's gradient buckets)",
    )
    p.add_argument(
        "--trace",
        metavar="JSON",
        help="for --realistic: write the stream timeline as a Chrome/Perfetto trace (one process per "
        "pipeline stage, one thread per stream)",
    )
    p.add_argument(
        "--efficiency", help="for --realistic: a `tpsim fit-gemm --out` file instead of the preset's"
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="simulate 2 layers per stage and extend linearly (see tpsim.plan.layout)",
    )
    p.set_defaults(func=run)


def add_layout_flags(p) -> None:
    p.add_argument("--global-batch", type=positive_int, default=512, help="sequences per step (default 512)")
    p.add_argument("--micro-batch", type=positive_int, help="sequences per microbatch (default: the model's)")
    p.add_argument(
        "--schedule",
        default="1f1b",
        type=choice(SCHEDULES, "pipeline schedule"),
        help=f"pipeline schedule: {', '.join(SCHEDULES)} (default 1f1b)",
    )
    p.add_argument(
        "--zero1",
        action="store_true",
        help="shard the optimizer state by dp (Megatron's distributed optimizer, ZeRO-1)",
    )
    p.add_argument("--tp-across-nodes", action="store_true", help="allow a TP group to span nodes")
    p.add_argument(
        "--recompute",
        default="none",
        type=choice(RECOMPUTE, "recompute mode"),
        help="activation recomputation: none, selective (attention core) or full (default none)",
    )
    add_device_flags(p)
    add_output_flags(p)


def run(args) -> tuple[dict, str]:
    cfg = resolve_model(args.model)
    layout = Layout(args.tp, args.dp, args.pp, args.sp)
    from tpsim.plan.layout import check_layout

    check_layout(cfg, layout, args.devices)
    machine = choose(args, layout.devices)
    with bar(args, f"analysing {cfg.name} {layout}", 1) as update:
        result = analyse_layout(
            cfg,
            layout,
            topology=machine.topology,
            device=args.device,
            global_batch=args.global_batch,
            micro_batch=args.micro_batch,
            schedule=args.schedule,
            zero1=args.zero1,
            tp_across_nodes=args.tp_across_nodes,
            exact=not args.fast,
            recompute=args.recompute,
            efficiency=_efficiency(args),
        )
        update(1, 1)
    result["topology_note"] = machine.note
    result["machine"] = machine.record()
    if not args.realistic:
        return result, text(result)
    result["realistic"] = realistic.analyse(as_gpt(cfg), layout, args)  # iteration.py prices GPT layers
    return result, text(result) + "\n\n" + realistic.text(result["realistic"])


def _efficiency(args):
    """The simulated step's efficiency: --realistic's (the --efficiency file's, if given), else peak."""
    if not args.realistic:
        return "peak"
    return load(args.efficiency) if args.efficiency else "realistic"


def text(r: dict) -> str:
    lay = f"{r['layout']} on {r['devices']} x {r['device']}, {r['topology']}"
    head = (
        f"{r['model']}: {lay}; global batch {r['global_batch']} = {r['dp']} replicas x {r['microbatches']} "
        f"microbatches of {r['micro_batch']}; {r['schedule']}{', ZeRO-1' if r['zero1'] else ''}"
    )
    tr, d = r["traffic_per_device"], r["traffic_detail"]
    traffic = table(
        [
            ("TP", "all-reduce / all-gather / reduce-scatter, per microbatch x m", fmt_bytes(tr["tp"])),
            (
                "DP",
                ("; ".join(d["dp"]["collectives"]) + f" of {fmt_bytes(d['dp']['grad_bytes'])} grads")
                if r["dp"] > 1
                else "none (dp = 1)",
                fmt_bytes(tr["dp"]),
            ),
            (
                "PP",
                f"send/recv of {fmt_bytes(d['pp']['send_bytes'])} per microbatch per boundary"
                if r["pp"] > 1
                else "none (pp = 1)",
                fmt_bytes(tr["pp"]),
            ),
            ("total", "", fmt_bytes(tr["total"])),
        ],
        ("", "what", "sent per device per step"),
        "Traffic per device, one step",
    )
    m = r["memory_per_device"]
    memory = table(
        [
            ("weights", fmt_bytes(m["weights"])),
            ("grads", fmt_bytes(m["grads"])),
            ("optimizer (fp32 master + Adam m, v)", fmt_bytes(m["optimizer"])),
            (
                f"activations ({m['microbatches_held']} microbatch(es) held, recompute {r['recompute']})",
                fmt_bytes(m["activations"]),
            ),
            ("total", fmt_bytes(m["total"])),
            ("capacity", f"{fmt_bytes(m['capacity'])} ({'fits' if m['fits'] else 'does NOT fit'})"),
        ],
        ("", "bytes"),
        f"Memory per device ({m['bytes_per_parameter']:.1f} bytes per parameter before activations)",
    )
    t = r["time"]
    time = table(
        [
            (
                "microbatch forward / backward",
                f"{fmt_time(t['microbatch_forward'])} / {fmt_time(t['microbatch_backward'])}",
            ),
            ("  of which TP collectives", fmt_time(t["microbatch_tp_comm"])),
            ("PP send per boundary", fmt_time(t["pp_send"])),
            ("pipeline (schedule run)", fmt_time(t["pipeline"])),
            (
                "bubble: idle share simulated / (p-1)/(m+p-1)",
                f"{t['bubble']:.2%} / {t['bubble_formula']:.2%}",
            ),
            ("DP gradient sync", fmt_time(t["dp"])),
            ("step", fmt_time(t["step"])),
            ("tokens per second", f"{t['tokens_per_s']:,.0f}"),
            ("step, broken down:", ""),
            *[(f"  {k.replace('_', ' ')}", fmt_time(v)) for k, v in t["breakdown"].items()],
            (
                "MFU / HFU (Megatron's FLOPs, flops.py)",
                f"{r['utilisation']['mfu']:.1%} / {r['utilisation']['hfu']:.1%}",
            ),
        ],
        ("", "time"),
        f"Time per step, simulated (mode {r['mode']}: {mode_note(r['mode'])}; "
        "no overlap of compute and communication)",
    )
    parts = [r["machine"]["line"], head, traffic, memory, time]
    st = r["stage"]
    parts.append(
        f"stage: {st['layers']} layers + embedding + output layer"
        + (
            f", {st['layers_simulated']} simulated and extended linearly"
            if st["extrapolated"]
            else ", every layer simulated"
        )
    )
    if not r["tp_inside_node"]:
        parts.append("note: the TP group spans nodes")
    for key in ("topology_note", "notes"):
        if r.get(key):
            parts.append("note: " + r[key])
    return "\n\n".join(parts)
