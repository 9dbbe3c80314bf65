"""Every TP x DP x PP layout of a model on n devices, analysed and ranked by predicted step time.

    enumerate_layouts(cfg, 64, topology)   the layouts whose degrees fit the model and the cluster,
                                            and the ones left out, each with its reason
    compare(cfg, 64, topology)              analyse_layout for each; layouts that fit in memory
                                            first, by step time; the rest after, by step time

Glossaries rate the strategies' communication "high" (TP), "moderate" (PP), "low" (DP); this
table gives the bytes and seconds for one model on one cluster.
"""

from __future__ import annotations

from collections.abc import Callable

from tpsim.nn.models import ModelConfig, resolve_model
from tpsim.plan.fits import layout_notes
from tpsim.plan.layout import Layout, LayoutError, analyse_layout, check_layout, microbatches


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_layouts(
    cfg: ModelConfig,
    devices: int,
    topology,
    *,
    global_batch: int,
    sp: str = "both",
    tp_across_nodes: bool = False,
) -> tuple[list[Layout], list[tuple[str, str]]]:
    """(layouts that fit, [(layout, why it was left out)]).  sp: "both", "on" or "off"."""
    keep, skipped = [], []
    for tp in _divisors(devices):
        for pp in _divisors(devices // tp):
            dp = devices // (tp * pp)
            for use_sp in {"both": (False, True), "on": (True,), "off": (False,)}[sp]:
                if use_sp and tp == 1:
                    continue  # SP splits TP's regions: nothing to split at tp = 1
                layout = Layout(tp, dp, pp, use_sp)
                try:
                    check_layout(cfg, layout, devices, topology, tp_across_nodes)
                    microbatches(cfg, layout, global_batch)
                except LayoutError as e:
                    skipped.append((str(layout), str(e)))
                    continue
                keep.append(layout)
    return keep, skipped


def compare(
    config: ModelConfig | str,
    devices: int,
    topology,
    *,
    device="h100",
    global_batch: int = 512,
    micro_batch: int | None = None,
    schedule: str = "1f1b",
    zero1: bool = False,
    sp: str = "both",
    tp_across_nodes: bool = False,
    exact: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    recompute: str = "none",
    drop_unfit: bool = False,
    efficiency: str = "peak",
) -> dict:
    """Analyse every layout; rows ranked (rank 1 = fastest that fits), plus the layouts left out.

    exact=False simulates 1 and 2 layers per stage and extends linearly (see layout.analyse_stage).
    drop_unfit moves the layouts that do not fit device memory from rows to "dropped", with why.
    efficiency: the mode the stages' compute is priced in ("peak" or "realistic"), named as "mode".
    """
    cfg = resolve_model(config)
    if micro_batch is not None:
        cfg = cfg.with_(micro_batch=micro_batch)
    layouts, skipped = enumerate_layouts(
        cfg, devices, topology, global_batch=global_batch, sp=sp, tp_across_nodes=tp_across_nodes
    )
    if not layouts:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped[:4])
        raise LayoutError(f"no layout of {cfg.name} fits {devices} devices ({reasons})")
    rows: list = []
    cache: dict = {}
    for i, layout in enumerate(layouts):
        if progress:
            progress(i, len(layouts), str(layout))
        rows.append(
            analyse_layout(
                cfg,
                layout,
                topology=topology,
                device=device,
                global_batch=global_batch,
                schedule=schedule,
                zero1=zero1,
                tp_across_nodes=tp_across_nodes,
                exact=exact,
                cache=cache,
                recompute=recompute,
                efficiency=efficiency,
            )
        )
    if progress:
        progress(len(layouts), len(layouts), "")
    rows.sort(key=lambda r: (not r["memory_per_device"]["fits"], r["time"]["step"]))
    dropped = [_unfit(r) for r in rows if drop_unfit and not r["memory_per_device"]["fits"]]
    if dropped and len(dropped) == len(rows):
        raise LayoutError(
            f"no layout of {cfg.name} fits device memory on {devices} devices: {dropped[0]['reason']}"
        )
    rows = rows[: len(rows) - len(dropped)]
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return {
        "model": cfg.name,
        "devices": devices,
        "topology": topology.name,
        "global_batch": global_batch,
        "schedule": schedule,
        "zero1": zero1,
        "notes": layout_notes(cfg, 1),  # the model's own notes (t = 1 replicates no KV head)
        "rows": rows,
        "skipped": [{"layout": name, "reason": why} for name, why in skipped],
        "dropped": dropped,
        "why": explain(rows),
        "recompute": recompute,
        "mode": efficiency,
    }


def explain(rows: list[dict]) -> dict | None:
    """Why rank 1 beats rank 2: the step's parts (recompute.breakdown), second minus first, largest first."""
    if len(rows) < 2:
        return None
    first, second = rows[0], rows[1]
    a, b = first["time"]["breakdown"], second["time"]["breakdown"]
    gaps = sorted(((k, b[k] - a[k]) for k in a), key=lambda kv: -abs(kv[1]))
    return {
        "winner": first["layout"],
        "runner_up": second["layout"],
        "margin": second["time"]["step"] - first["time"]["step"],
        "saved_by_part": dict(gaps),
    }


def _unfit(row: dict) -> dict:
    m = row["memory_per_device"]
    need, have = m["total"] / 2**30, m["capacity"] / 2**30
    return {"layout": row["layout"], "reason": f"needs {need:.1f} GiB per device, {have:.1f} GiB available"}
