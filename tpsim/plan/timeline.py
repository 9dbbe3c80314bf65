"""One training iteration laid out on streams (streams.py): every microbatch's layers on every pipeline
stage, TP collectives beside the GEMMs (layer_ops.py), pipeline sends, DP gradient buckets, the optimizer.

One device per pipeline stage stands for its TP and DP peers (they run the same ops at the same times).
Its streams: "compute", "tp" (layer_ops.py), "pp next", "pp prev" and "dp".

    pipeline   each stage runs pipeline.stage_ops (interleaved.device_ops with `chunks`); after a
               forward (backward) crosses a stage boundary its activation (gradient) is sent on the
               sender's "pp next" ("pp prev") stream, so the send overlaps the sender's next op; the
               receiver's op waits for the send's end.  Sends to the two neighbours run side by side
               (NCCL runs p2p to two peers on two streams); sends to one neighbour queue, so where a
               send outlasts a forward (of a chunk) the timeline is slower than pipeline.simulate,
               which lets one link carry several sends at once at full speed
    stages     every stage is priced as iteration.py prices the heaviest: L / pp layers and the logit
               layer's forward and backward (split evenly over the chunks), so that with every overlap
               off this timeline's iteration is iteration.py's closed form
    dp         dp_overlap off: one all-reduce of all gradients (ZeRO-1: a reduce-scatter, and an
               all-gather of the parameters after the optimizer) once the device's backward is done.
               dp_overlap on: Megatron's buckets (megatron/core/distributed, overlap_grad_reduce;
               bucket_size defaults to max(40M, 1M x dp) parameters): a bucket of consecutive layers, in
               backward order, is reduced on "dp" as soon as the last microbatch's backward of its layers
               ends, behind the remaining backward.  A device's gradients (memory_train's parameter
               count, embeddings included) are spread evenly over its layers.
    breakdown  on the device that ends last: compute, recompute and optimizer are its compute stream's
               ops; tp_comm (dp_comm) the TP (DP) stream's time not hidden behind its compute (or TP);
               the rest is idle: pp_comm is what the sends add to the pipeline (the layout rerun with free
               sends, as iteration.py does), pp_bubble the remainder

Link sharing between streams is not modelled: a DP bucket and a TP collective at the same moment each
take the time the cluster gives them alone.
"""

from __future__ import annotations

from tpsim.errors import PipelineError
from tpsim.plan.interleaved import device_ops
from tpsim.plan.layer_ops import TP, LayerOps
from tpsim.plan.pipeline import stage_ops
from tpsim.plan.streams import COMPUTE, Op, Streams, exposed

PP_NEXT, PP_PREV, DP = "pp next", "pp prev", "dp"
STREAMS = (COMPUTE, TP, PP_NEXT, PP_PREV, DP)


def bucket_params(dp: int) -> int:
    """Megatron-core's default DDP bucket: max(40M, 1M x dp) parameters (DistributedDataParallelConfig)."""
    return max(40_000_000, 1_000_000 * dp)


def run_ops(schedule: str, p: int, v: int, m: int, d: int) -> list[tuple[str, int, int]]:
    """[("F" / "B", virtual stage, microbatch)] of device d in the order it runs them."""
    if schedule == "interleaved":
        return device_ops(p, v, m, d)
    return [(kind, d, j) for kind, j in stage_ops(schedule, p, m, d)]


def lay_out(
    *,
    lt: dict,
    logits: tuple[float, float],
    tp: int,
    sp: bool,
    pp: int,
    dp: int,
    m: int,
    layers: int,
    schedule: str = "1f1b",
    chunks: int = 1,
    send: float = 0.0,
    send_bytes: float = 0.0,
    params: float = 0.0,
    optimizer: float = 0.0,
    cluster=None,
    zero1: bool = False,
    recompute: str = "none",
    tp_overlap: bool = False,
    dp_overlap: bool = False,
) -> tuple[Streams, float]:
    """The iteration's ops on streams, and when the pipeline's last backward (with its TP collective)
    ended.  lt: layer_times.layer_times; logits: layer_times.logit_times; send: one boundary send's
    seconds."""
    v = chunks if schedule == "interleaved" else 1
    if layers % v:
        raise PipelineError(f"{layers} layers per stage do not split into {v} chunks; valid: a divisor")
    per, last, lf, lb = layers // v, pp * v - 1, logits[0] / v, logits[1] / v
    s = Streams()
    lo = LayerOps(s, lt, tp, sp, tp_overlap, recompute)
    ops = [run_ops(schedule, pp, v, m, d) for d in range(pp)]
    done: dict[tuple[str, int, int], list] = {}
    grads: dict[tuple[int, int, int], float] = {}  # (device, chunk, layer): its last backward's end
    nxt, remaining = [0] * pp, sum(len(o) for o in ops)
    while remaining:
        progressed = False
        for d in range(pp):
            while nxt[d] < len(ops[d]):
                kind, vs, j = ops[d][nxt[d]]
                if kind == "F":
                    dep = ("F", vs - 1, j) if vs > 0 else None
                else:
                    dep = ("B", vs + 1, j) if vs < last else ("F", vs, j)
                if dep is not None and dep not in done:
                    break  # wait for the neighbour stage
                x, c = done[dep] if dep else [], vs // pp
                where = f"mb {j}, chunk {c}" if v > 1 else f"mb {j}"
                if kind == "F":
                    for layer in range(per):
                        x = lo.forward(d, x, f"F {where}, layer {layer}")
                    x = [
                        s.issue(
                            d, COMPUTE, "logits + loss (heaviest-stage pricing)", lf, x, label=f"F {where}"
                        )
                    ]
                else:
                    x = [
                        s.issue(
                            d,
                            COMPUTE,
                            "logits + loss backward (heaviest-stage pricing)",
                            lb,
                            x,
                            label=f"B {where}",
                        )
                    ]
                    for layer in reversed(range(per)):
                        x = lo.backward(d, x, f"B {where}, layer {layer}")
                        grads[(d, c, layer)] = _end(x)
                crosses = vs < last if kind == "F" else vs > 0
                if crosses:
                    what, lane = ("activation", PP_NEXT) if kind == "F" else ("gradient", PP_PREV)
                    x = [
                        s.issue(
                            d,
                            lane,
                            f"send {what} ({where})",
                            send,
                            x,
                            cat="pp",
                            nbytes=send_bytes,
                            kind="send",
                        )
                    ]
                done[(kind, vs, j)] = x
                nxt[d] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise PipelineError(f"{schedule} deadlocked with {remaining} ops left")
    pipeline_end = max(max(s.free(d, COMPUTE), s.free(d, TP)) for d in range(pp))
    for d in range(pp):
        ready = max(s.free(d, COMPUTE), s.free(d, TP))
        synced = _dp(s, d, dp, tp, v, per, layers, params, grads, ready, cluster, zero1, dp_overlap)
        opt = s.issue(d, COMPUTE, "optimizer (Adam)", optimizer, synced, at=ready, cat="optimizer")
        if dp > 1 and zero1:  # the distributed optimizer gathers the updated parameters
            s.issue(
                d,
                DP,
                "all_gather (parameters)",
                cluster.reduce_scatter(dp, tp, 2 * params),
                [opt],
                nbytes=2 * params,
                kind="all_gather",
            )
    return s, pipeline_end


def _end(ops: list) -> float:
    return max(o.end for o in ops if o is not None)


def _dp(s, d, dp, tp, v, per, layers, params, grads, ready, cluster, zero1, overlap) -> list[Op]:
    """Issue device d's gradient reduction on "dp"; return the op the optimizer waits for."""
    if dp == 1:
        return []
    kind = "reduce_scatter" if zero1 else "all_reduce"
    price = cluster.reduce_scatter if zero1 else cluster.all_reduce
    if not overlap:
        return [
            s.issue(
                d,
                DP,
                f"{kind} (gradients)",
                price(dp, tp, 2 * params),
                at=ready,
                nbytes=2 * params,
                kind=kind,
            )
        ]
    size, each = bucket_params(dp), params / layers
    buckets: list[tuple[float, float, str]] = []  # (ready, parameters, which layers)
    for c in range(v):
        count, at, first = 0.0, 0.0, per - 1
        for layer in reversed(range(per)):
            count, at = count + each, max(at, grads[(d, c, layer)])
            if count >= size or layer == 0:
                where = f"chunk {c}, " if v > 1 else ""
                buckets.append((at, count, f"{where}layers {layer}-{first}"))
                count, at, first = 0.0, 0.0, layer - 1
    out = []
    for at, n, which in sorted(buckets):
        out.append(
            s.issue(d, DP, f"{kind} bucket ({which})", price(dp, tp, 2 * n), at=at, nbytes=2 * n, kind=kind)
        )
    return out[-1:]


def breakdown(s: Streams, pipeline_end: float, free_end: float, devices: int) -> dict:
    """The iteration's time broken down on the device that ends last (iteration.py's parts)."""
    d = max(range(devices), key=lambda k: (s.end(k), -k))
    mine = s.on(d)
    comp = [(o.start, o.end) for o in mine if o.stream == COMPUTE]
    tp = [(o.start, o.end) for o in mine if o.stream == TP]
    dp = [(o.start, o.end) for o in mine if o.stream == DP]
    parts = {
        c: sum(o.end - o.start for o in mine if o.stream == COMPUTE and o.cat == c)
        for c in ("compute", "recompute", "optimizer")
    }
    tp_exposed, dp_exposed = exposed(tp, comp), exposed(dp, comp + tp)
    idle = max(0.0, s.end() - sum(parts.values()) - tp_exposed - dp_exposed)
    pp_comm = min(idle, max(0.0, pipeline_end - free_end))
    return {
        "compute": parts["compute"],
        "recompute": parts["recompute"],
        "tp_comm": tp_exposed,
        "pp_comm": pp_comm,
        "pp_bubble": idle - pp_comm,
        "dp_comm": dp_exposed,
        "optimizer": parts["optimizer"],
    }


def timeline_breakdown(trace: str | None = None, **kw) -> dict:
    """lay_out's iteration broken down; pp_comm from a second layout with free sends (as iteration.py).
    trace: a path to write the layout to as a Chrome / Perfetto trace (timeline_trace.py)."""
    s, end = lay_out(**kw)
    free = lay_out(**{**kw, "send": 0.0})[1] if kw["pp"] > 1 else end
    if trace is not None:
        from tpsim.plan.timeline_trace import write

        write(s, kw["pp"], trace)
    return breakdown(s, end, free, kw["pp"])
