"""`tpsim serve-plan`: rank TP degrees for serving a Llama-style model on N GPUs.

    tpsim serve-plan llama3-70b --gpus 8                 TP 1, 2, 4, 8 (8, 4, 2, 1 replicas)
    tpsim serve-plan qwen2.5-72b --gpus 16 --context 8192 --device h200
    tpsim serve-plan llama3-70b --gpus 8 --realistic    kernel by kernel with the device's efficiency

Per TP degree: weights and KV cache per device (KV heads split, or replicated once t passes them),
the sequences of `--context` tokens that fit, the decode latency of one sequence (and which of
one-shot, two-shot and ring all-reduce is fastest for its small messages) and the throughput of
all replicas at their largest batch.  Mode peak (the default) prices each layer at the datasheet
roofline; --realistic prices each kernel (tpsim/serve/kernels.py) with the device's efficiency
parameters (tpsim/efficiency.py), as `tpsim model --realistic` does for training; the output names
its mode.  See tpsim/serve/plan.py for the model and what it leaves out.
"""

from __future__ import annotations

from tpsim.cli.args import add_command, add_output_flags, choice, positive_int
from tpsim.nn.llama_config import LLAMA_PRESETS
from tpsim.report import fmt_bytes, fmt_time, table
from tpsim.serve import serve_plan


def register(sub) -> None:
    p = add_command(
        sub, "serve-plan", "inference: TP degrees ranked by decode latency and throughput", __doc__
    )
    p.add_argument("model", type=choice(tuple(LLAMA_PRESETS), "model"), help=", ".join(LLAMA_PRESETS))
    p.add_argument("--gpus", type=positive_int, default=8, help="devices to serve on (default 8)")
    p.add_argument("--context", type=positive_int, default=4096, help="tokens per sequence (default 4096)")
    p.add_argument("--device", default="h100", help="h100, h200, a100 (default h100)")
    p.add_argument(
        "--topology", default="nvlink", help="a topology preset for each TP group (default nvlink)"
    )
    p.add_argument(
        "--realistic",
        action="store_true",
        help="price each kernel with the device's efficiency (tpsim/efficiency.py) instead of the "
        "datasheet roofline",
    )
    add_output_flags(p)
    p.set_defaults(func=run)


def run(args) -> tuple[dict, str]:
    mode = "realistic" if args.realistic else "peak"
    r = serve_plan(
        args.model, args.gpus, context=args.context, device=args.device, topology=args.topology, mode=mode
    )
    return r, text(r)


def text(r: dict) -> str:
    rows = []
    for x in r["rows"]:
        fit = x["fits"]
        rows.append(
            [
                x["tp"],
                x["replicas"],
                fmt_bytes(x["weights_per_device"]),
                fmt_bytes(x["kv_bytes_per_token"]),
                f"x{x['kv_replicas']}",
                x["max_batch"],
                fmt_time(x["prefill"]) if fit else "-",
                fmt_time(x["latency"]) if fit else "does not fit",
                x["allreduce"] if fit else "-",
                f"{x['throughput']:,.0f}" if fit else "-",
            ]
        )
    head = [
        "tp",
        "replicas",
        "weights/dev",
        "KV/token/dev",
        "KV heads",
        "max batch",
        "prefill",
        "latency/token",
        "all-reduce",
        "tokens/s",
    ]
    title = (
        f"{r['model']} on {r['gpus']} x {r['device']}, {r['context']} tokens per sequence, mode {r['mode']} "
        f"({r['source']})"
    )
    ar = r["allreduce_by_size"]
    sizes = table(
        [
            [fmt_bytes(x["bytes"]), *(fmt_time(x[a]) for a in ("one-shot", "two-shot", "ring")), x["fastest"]]
            for x in ar["rows"]
        ],
        ["message", "one-shot", "two-shot", "ring", "fastest"],
        f"all-reduce over tp {ar['tp']}: decode batches of 1, 8, 64, 512 sequences, then one prefill"
        + (
            f" (mode {r['mode']} adds a {fmt_time(r['allreduce_launch'])} launch to each)"
            if r["allreduce_launch"]
            else ""
        ),
    )
    return "\n".join(
        [
            table(rows, head, title),
            f"by latency: tp {r['by_latency']}   by throughput: tp {r['by_throughput']}",
            f"mode {r['mode']}: {r['efficiency_source']}",
            "",
            sizes,
        ]
    )
