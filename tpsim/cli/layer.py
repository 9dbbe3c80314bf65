"""`tpsim layer`: one tensor-parallel layer, forward and backward, shape-only: its communication table,
memory and time per device.

    tpsim layer mlp --hidden 12288 --tp 8                 Megatron's MLP (column -> GeLU -> row)
    tpsim layer attention --hidden 12288 --heads 96 --tp 8 --sp
    tpsim layer block --model gpt3-175b --tp 8            a whole transformer layer, GPT-3's shapes
    tpsim layer block --model gpt3-175b --realistic       ... with GEMM efficiency (tpsim/efficiency.py)

The TP group runs on --device's standard node (default h100: dgx-h100) unless --topology.
x is (seq, batch, hidden): replicated on the TP ranks, or split by sequence with --sp.
"""

from __future__ import annotations

from tpsim import Mesh, Replicate, Shard, distribute, meta
from tpsim.cli.args import add_command, add_device_flags, add_output_flags, choice, model_name, positive_int
from tpsim.cli.node import choose
from tpsim.efficiency import mode_note
from tpsim.errors import ShapeError
from tpsim.nn import ParallelAttention, ParallelMLP, TransformerBlock, comm_table, utilisation
from tpsim.nn.comm_table import totals
from tpsim.nn.config import resolve
from tpsim.nn.gpt import UNBOUNDED
from tpsim.report import fmt_bytes, fmt_time, table

KINDS = ("mlp", "attention", "block")


def register(sub) -> None:
    p = add_command(sub, "layer", "one TP layer: communication table, memory and time per device", __doc__)
    p.add_argument("kind", type=choice(KINDS, "layer"), help=", ".join(KINDS))
    p.add_argument("--model", type=model_name, help="take hidden, heads, ffn, seq, batch from a model preset")
    p.add_argument("--hidden", type=positive_int, help="hidden size h (default 12288, or the model's)")
    p.add_argument("--heads", type=positive_int, help="attention heads (default h / 128, or the model's)")
    p.add_argument("--ffn", type=positive_int, help="MLP width (default 4 h, or the model's)")
    p.add_argument("--seq", type=positive_int, help="sequence length s (default 2048, or the model's)")
    p.add_argument("--batch", type=positive_int, help="micro-batch b (default 1, or the model's)")
    p.add_argument("--tp", type=positive_int, default=8, help="tensor-parallel degree t (default 8)")
    p.add_argument("--sp", action="store_true", help="sequence parallelism")
    p.add_argument(
        "--dtype",
        default=None,
        type=choice(("bfloat16", "float16", "float32"), "dtype"),
        help="default bfloat16, or the model's",
    )
    p.add_argument(
        "--realistic",
        action="store_true",
        help="price compute with the device's GEMM efficiency and memory-bound kernels (tpsim/efficiency.py) "
        "instead of the datasheet roofline (mode peak, the default)",
    )
    add_device_flags(p)
    add_output_flags(p)
    p.set_defaults(func=run)


def shapes(args) -> dict:
    cfg = resolve(args.model) if args.model else None
    h = args.hidden or (cfg.hidden if cfg else 12288)
    heads = args.heads or (cfg.num_heads if cfg else h // 128 if h % 128 == 0 else None)
    if heads is None:
        raise ShapeError(f"--hidden {h} is not a multiple of 128, so give --heads (a divisor of {h})")
    return dict(
        hidden=h,
        heads=heads,
        ffn=args.ffn or (cfg.ffn if cfg else 4 * h),
        seq=args.seq or (cfg.seq_len if cfg else 2048),
        batch=args.batch or (cfg.micro_batch if cfg else 1),
        dtype=args.dtype or (cfg.dtype if cfg else "bfloat16"),
        notes=cfg.notes if cfg else "",
    )


def _check(kind: str, s: dict, t: int, sp: bool) -> None:
    h, heads = s["hidden"], s["heads"]
    if kind != "mlp" and h % heads:
        raise ShapeError(f"--hidden {h} does not split into --heads {heads} heads of whole features")
    if kind != "mlp" and heads % t:
        ok = [d for d in range(1, heads + 1) if heads % d == 0]
        raise ShapeError(
            f"--tp {t} does not divide --heads {heads}: each rank holds whole heads; valid tp: {ok}"
        )
    if kind != "attention" and s["ffn"] % t:
        raise ShapeError(f"--tp {t} does not divide --ffn {s['ffn']}: the MLP is split by its columns")
    if sp and s["seq"] % t:
        raise ShapeError(f"--sp splits the sequence: --tp {t} must divide --seq {s['seq']}")


def run(args) -> tuple[dict, str]:
    s, t = shapes(args), args.tp
    _check(args.kind, s, t, args.sp)
    machine = choose(args, t)
    topo, note, spec = machine.topology, machine.note, machine.spec
    mode = "realistic" if args.realistic else "peak"
    mesh = Mesh(t, names=("tp",), topology=topo, memory=UNBOUNDED, device=spec, efficiency=mode)
    kw = dict(init=None, dtype=s["dtype"], sequence_parallel=args.sp, name=args.kind)
    module: ParallelMLP | ParallelAttention | TransformerBlock
    if args.kind == "mlp":
        module = ParallelMLP(mesh, s["hidden"], s["ffn"], **kw)
    elif args.kind == "attention":
        module = ParallelAttention(mesh, s["hidden"], s["heads"], **kw)
    else:
        module = TransformerBlock(mesh, s["hidden"], s["heads"], s["ffn"], **kw)
    shape, place = (s["seq"], s["batch"], s["hidden"]), [Shard(0) if args.sp else Replicate()]
    y = module(distribute(meta(shape, s["dtype"]), mesh, place))
    after_forward = dict(mesh.devices[0].in_use)
    forward_end = max(mesh.clock)
    module.backprop(distribute(meta(y.shape, s["dtype"]), mesh, y.placements))
    rows = comm_table(module)
    use = utilisation(mesh)[0]
    mem = mesh.memory()[0]
    result = {
        "layer": args.kind,
        **{k: v for k, v in s.items() if k != "notes"},
        "tp": t,
        "sequence_parallel": args.sp,
        "topology": topo.name,
        "topology_note": note,
        "device": spec.name,
        "mode": mode,
        "machine": machine.record(),
        "communication": [vars(r) for r in rows],
        "totals": totals(rows),
        "memory_per_device": {
            "weights": mem.get("weights", 0),
            "grads": mem.get("grads", 0),
            "activations": after_forward.get("activations", 0),
            "peak": mem["peak"],
        },
        "time_per_device": {
            "forward": forward_end,
            "backward": use["end"] - forward_end,
            "step": use["end"],
            "compute": use["compute"],
            "comm": use["comm"],
            "idle": use["idle"],
        },
        "notes": s["notes"],
    }
    return result, _text(result, rows)


def _text(r: dict, rows) -> str:
    from tpsim.nn import format_comm_table

    head = (
        f"{r['layer']}: h {r['hidden']}, heads {r['heads']}, ffn {r['ffn']}, s {r['seq']}, b {r['batch']}, "
        f"{r['dtype']}; TP {r['tp']}{' + SP' if r['sequence_parallel'] else ''} on {r['topology']}, "
        f"{r['device']}"
    )
    m, t = r["memory_per_device"], r["time_per_device"]
    mem = table(
        [(fmt_bytes(m["weights"]), fmt_bytes(m["grads"]), fmt_bytes(m["activations"]), fmt_bytes(m["peak"]))],
        ("weights", "grads", "activations (after forward)", "peak"),
        "Memory per device",
    )
    time = table(
        [
            (
                fmt_time(t["forward"]),
                fmt_time(t["backward"]),
                fmt_time(t["compute"]),
                fmt_time(t["comm"]),
                f"{t['comm'] / t['step']:.1%}" if t["step"] else "-",
            )
        ],
        ("forward", "backward", "compute", "communication", "comm share"),
        f"Time per device (mode {r['mode']}: {mode_note(r['mode'])}; compute and collectives do not overlap)",
    )
    parts = [r["machine"]["line"], head, format_comm_table(rows, "Communication per device"), mem, time]
    if r["topology_note"]:
        parts.append("note: " + r["topology_note"])
    if r["notes"]:
        parts.append("note: " + r["notes"])
    return "\n\n".join(parts)
