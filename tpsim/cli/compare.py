"""`tpsim compare`: every TP x DP x PP layout of a model on n devices, ranked by predicted step time.

    tpsim compare --model gpt3-175b --devices 64
    tpsim compare --model llama2-70b --devices 32 --global-batch 1024 --zero1 --sp on

Columns: the layout; the bytes one device sends per step for TP, DP and PP; memory per device
(weights, grads, optimizer, activations: see `tpsim model --help`); the predicted step time; the
pipeline's idle share (the bubble).  Layouts that fit in memory rank first.  TP stays inside a
node unless --tp-across-nodes; layouts whose degrees do not divide the model are listed as skipped.
Each stage simulates 2 layers and extends linearly unless --exact (the same numbers; slower).
The devices are --device's standard node(s) (h100: dgx-h100) unless --topology.
"""

from __future__ import annotations

from tpsim.cli.args import add_command, model_name, positive_int
from tpsim.cli.model import add_layout_flags
from tpsim.cli.node import choose
from tpsim.cli.progress import bar
from tpsim.efficiency import mode_note
from tpsim.nn.models import resolve_model
from tpsim.plan import compare
from tpsim.report import fmt_bytes, fmt_time, table


def register(sub) -> None:
    p = add_command(sub, "compare", "every TP x DP x PP layout on n devices, ranked", __doc__)
    p.add_argument("--model", required=True, type=model_name, help="a preset or a .json/.toml config file")
    p.add_argument("--devices", required=True, type=positive_int, help="number of devices")
    add_layout_flags(p)
    p.add_argument(
        "--sp", default="both", choices=("both", "on", "off"), help="sequence parallelism (default both)"
    )
    p.add_argument("--exact", action="store_true", help="simulate every layer of every stage")
    p.add_argument("--top", type=positive_int, help="show only the first N rows")
    p.add_argument("--keep-unfit", action="store_true", help="rank layouts that do not fit memory too")
    p.add_argument(
        "--realistic",
        action="store_true",
        help="price compute with the device's GEMM efficiency (tpsim/efficiency.py), not the datasheet peak",
    )
    p.set_defaults(func=run)


def run(args) -> tuple[dict, str]:
    cfg = resolve_model(args.model)
    machine = choose(args, args.devices)
    with bar(args, "layouts", 1) as update:
        result = compare(
            cfg,
            args.devices,
            machine.topology,
            device=args.device,
            global_batch=args.global_batch,
            micro_batch=args.micro_batch,
            schedule=args.schedule,
            zero1=args.zero1,
            sp=args.sp,
            tp_across_nodes=args.tp_across_nodes,
            exact=args.exact,
            progress=update,
            recompute=args.recompute,
            drop_unfit=not args.keep_unfit,
            efficiency="realistic" if args.realistic else "peak",
        )
    result["topology_note"] = machine.note
    result["machine"] = machine.record()
    if args.top:
        result["rows"] = result["rows"][: args.top]
    return result, text(result)


def text(r: dict) -> str:
    body = []
    for x in r["rows"]:
        tr, m, t = x["traffic_per_device"], x["memory_per_device"], x["time"]
        body.append(
            (
                x["rank"],
                x["layout"],
                x["microbatches"],
                fmt_bytes(tr["tp"]),
                fmt_bytes(tr["dp"]),
                fmt_bytes(tr["pp"]),
                fmt_bytes(m["total"]),
                "yes" if m["fits"] else "NO",
                fmt_time(t["step"]),
                f"{t['bubble']:.1%}",
                f"{t['tokens_per_s']:,.0f}",
                f"{x['utilisation']['mfu']:.1%}",
            )
        )
    title = (
        f"{r['model']} on {r['devices']} devices ({r['topology']}), global batch {r['global_batch']}, "
        f"{r['schedule']}{', ZeRO-1' if r['zero1'] else ''}: per device, per step "
        f"(mode {r['mode']}: {mode_note(r['mode'])})"
    )
    head = (
        "#",
        "layout",
        "m",
        "TP sent",
        "DP sent",
        "PP sent",
        "memory",
        "fits",
        "step",
        "bubble",
        "tokens/s",
        "MFU",
    )
    parts = [r["machine"]["line"], table(body, head, title)]
    if r["skipped"]:
        parts.append(
            f"{len(r['skipped'])} layouts skipped, e.g. {r['skipped'][0]['layout']}: "
            f"{r['skipped'][0]['reason']} (all of them in --json)"
        )
    if r.get("why"):
        w = r["why"]
        parts_text = ", ".join(
            f"{k.replace('_', ' ')} {fmt_time(abs(v))} {'less' if v > 0 else 'more'}"
            for k, v in w["saved_by_part"].items()
            if v
        )
        parts.append(
            f"why {w['winner']} wins: {fmt_time(w['margin'])} ahead of {w['runner_up']}; "
            f"it spends {parts_text}"
        )
    if r.get("dropped"):
        parts.append(
            f"{len(r['dropped'])} layouts dropped: they do not fit device memory, e.g. "
            f"{r['dropped'][0]['layout']} {r['dropped'][0]['reason']} (--keep-unfit ranks them)"
        )
    for key in ("topology_note", "notes"):
        if r.get(key):
            parts.append("note: " + r[key])
    return "\n\n".join(parts)
