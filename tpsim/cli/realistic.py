"""`tpsim model --realistic`: the closed-form iteration model (tpsim/plan/iteration.py) beside the
simulated step: kernels priced by the device's efficiency parameters, on the device's standard node
(tpsim/plan/cluster.py), with the time broken down, tokens/s, MFU and HFU, and whether it fits."""

from __future__ import annotations

from tpsim.efficiency_fit import load
from tpsim.errors import TopologyError
from tpsim.plan.cluster import CLUSTERS
from tpsim.plan.iteration import iteration
from tpsim.report import fmt_bytes, fmt_time, table


def analyse(cfg, layout, args) -> dict:
    key = str(args.device).lower()
    if key not in CLUSTERS:
        raise TopologyError(
            f"--realistic knows the nodes of {', '.join(CLUSTERS)}; got --device {args.device}"
        )
    b = args.micro_batch or cfg.micro_batch
    return iteration(
        cfg,
        layout,
        cluster=CLUSTERS[key],
        device=key,
        global_batch=args.global_batch,
        micro_batch=b,
        recompute=args.recompute,
        kernels=args.kernels,
        schedule=args.schedule,
        zero1=args.zero1,
        dp_overlap=args.dp_overlap,
        tp_overlap=getattr(args, "tp_overlap", False),
        streams=getattr(args, "streams", False),
        trace=getattr(args, "trace", None),
        efficiency=load(args.efficiency) if args.efficiency else None,
    )


def text(r: dict) -> str:
    t, mem = r["time"], r["memory"]
    rows = [("iteration", fmt_time(t["iteration"]))]
    rows += [(f"  {k.replace('_', ' ')}", fmt_time(t[k])) for k in _PARTS]
    rows += [
        ("tokens per second", f"{r['tokens_per_s']:,.0f}"),
        ("MFU / HFU", f"{r['mfu']:.1%} / {r['hfu']:.1%}"),
        ("memory per device", f"{fmt_bytes(mem['total'])} of {fmt_bytes(mem['capacity'])}"),
        ("fits", "yes" if mem["fits"] else "NO"),
    ]
    how = "Closed-form iteration"
    if r["timing"] != "closed form":
        overlap = ", ".join(k for k in ("tp_overlap", "dp_overlap") if r[k]) or "no overlap"
        how = f"Stream-timeline iteration ({overlap})"
    title = f"{how}, mode {r['mode']}: {r['kernels']} kernels, recompute {r['recompute']}, on {r['cluster']}"
    title += f"; collectives: {r['collectives']}"
    return table(rows, ("", "value"), title)


_PARTS = ("compute", "recompute", "tp_comm", "pp_comm", "pp_bubble", "dp_comm", "optimizer")
