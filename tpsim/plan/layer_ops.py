"""One transformer layer's ops on one device's streams (streams.py), forward and backward, with or
without Megatron's TP communication overlap.  Times come from layer_times.layer_times.

Forward, per layer: the memory-bound ops, then the attention block's GEMMs (qkv, the core, proj) and
the MLP's (fc1, fc2), each block closed by its TP collective on the "tp" stream:

    no SP    proj -> all-reduce, fc2 -> all-reduce; the next GEMM waits for it (it blocks compute)
    SP       all-gather -> qkv ... proj -> reduce-scatter, all-gather -> fc1, fc2 -> reduce-scatter

Backward, in reverse: (recompute,) the memory passes, fc2's dX and dW, fc1's dX, then the collective of
fc1's input gradient (no SP: all-reduce, the backward of copy_to; SP: reduce-scatter), and fc1's dW;
likewise proj, the core, qkv's dX, its collective and qkv's dW, and for a Llama whose KV heads are
replicated (t > g) the all-reduce of their weight grads.  Under SP the grad of each reduce-scatter is an
all-gather before proj's and fc2's dX.

tp_overlap (Megatron's async TP communication, --tp-comm-overlap):

    backward   the input gradient's collective runs on "tp" while the dW GEMM runs on compute
               (megatron/core/tensor_parallel/layers.py: the all-reduce / reduce-scatter of grad_input
               is launched async before the weight-gradient GEMM)
    SP         each all-gather / reduce-scatter is pipelined with its GEMM as a ring exchange
               (TransformerEngine's userbuffers): the GEMM is split into t chunks, the ring's t - 1
               steps each take 1 / (t - 1) of the collective, and chunk k's GEMM overlaps step k + 1
    no SP      the forward all-reduces still block: their result is the next GEMM's input

A layer's ops return the ops its successor must wait for.
"""

from __future__ import annotations

from tpsim.plan.streams import COMPUTE, Op, Streams

TP = "tp"


class LayerOps:
    """Issues one layer's forward or backward onto `streams` for device `d`."""

    def __init__(self, streams: Streams, lt: dict, t: int, sp: bool, tp_overlap: bool, recompute: str):
        self.s, self.lt, self.t, self.sp = streams, lt, t, sp
        self.overlap, self.recompute = tp_overlap and t > 1, recompute
        self.cat, self.tpcat = "compute", TP  # ("recompute", "recompute_tp") while rerunning a forward

    def _c(self, d: int, name: str, seconds: float, after, label: str) -> Op:
        """A compute op (a GEMM or memory-bound ops) on the compute stream."""
        return self.s.issue(d, COMPUTE, name, seconds, after, cat=self.cat, label=label)

    # one collective, or a ring exchange pipelined with a GEMM
    def _coll(self, d: int, name: str, after, label: str) -> Op | None:
        if self.t == 1:
            return None
        kind = name.split()[0]
        return self.s.issue(
            d,
            TP,
            name,
            self.lt["tp_each"],
            after,
            cat=self.tpcat,
            nbytes=self.lt["tp_bytes"],
            label=label,
            kind=kind,
        )

    def _gather_gemm(self, d, gemm: str, seconds: float, after, label: str) -> list:
        """all-gather (SP) then `gemm`; pipelined under tp_overlap."""
        if not (self.sp and self.overlap):
            ag = self._coll(d, "all_gather", after, label) if self.sp else None
            return [self._c(d, gemm, seconds, [*after, ag], label)]
        steps, c = self.t - 1, self.t
        ops = [self._c(d, f"{gemm} [chunk 0/{c}]", seconds / c, after, label)]
        for k in range(1, c):
            step = self._step(d, "all_gather", k, steps, after, label)
            ops.append(self._c(d, f"{gemm} [chunk {k}/{c}]", seconds / c, [step], label))
        return ops[-1:]

    def _gemm_scatter(self, d, gemm: str, seconds: float, after, label: str, coll: str) -> list:
        """`gemm` then its reduce-scatter (SP) or all-reduce; pipelined under tp_overlap and SP."""
        if not (self.sp and self.overlap):
            g = self._c(d, gemm, seconds, after, label)
            return [g, self._coll(d, coll, [g], label)]
        steps, c = self.t - 1, self.t
        g = self._c(d, f"{gemm} [chunk 0/{c}]", seconds / c, after, label)
        last: Op | None = None
        for k in range(1, c):
            last = self._step(d, coll, k, steps, [g], label)
            g = self._c(d, f"{gemm} [chunk {k}/{c}]", seconds / c, [], label)
        return [g, last]

    def _step(self, d, kind: str, k: int, steps: int, after, label: str) -> Op:
        lt = self.lt
        return self.s.issue(
            d,
            TP,
            f"{kind} [step {k}/{steps}]",
            lt["tp_each"] / steps,
            after,
            cat=self.tpcat,
            nbytes=lt["tp_bytes"] / steps,
            label=label,
            kind=kind,
        )

    def forward(self, d: int, after: list, label: str) -> list:
        lt, g = self.lt, self.lt["gemms"]
        ar = "reduce_scatter" if self.sp else "all_reduce"
        mem = self._c(d, "memory-bound ops", lt["forward_memory"], after, label)
        x = self._gather_gemm(d, "qkv", g["qkv"], [mem], label)
        core = self._c(d, "attention core", g["scores"] + g["context"], x, label)
        x = self._gemm_scatter(d, "proj", g["proj"], [core], label, ar)
        x = self._gather_gemm(d, "fc1", g["fc1"], x, label)
        return self._gemm_scatter(d, "fc2", g["fc2"], x, label, ar)

    def _rerun(self, d: int, after: list, label: str) -> list:
        """Full recomputation: the forward again, its collectives blocking (priced as iteration.py)."""
        saved = self.overlap, self.cat, self.tpcat
        self.overlap, self.cat, self.tpcat = False, "recompute", "recompute_tp"
        try:
            return self.forward(d, after, label + " (recompute)")
        finally:
            self.overlap, self.cat, self.tpcat = saved

    def backward(self, d: int, after: list, label: str) -> list:
        lt, g = self.lt, self.lt["gemms"]
        if self.recompute == "full":
            after = self._rerun(d, after, label)
        elif self.recompute == "selective":
            after = [
                self.s.issue(d, COMPUTE, "recompute core", lt["recompute_compute"], after, cat="recompute")
            ]
        mem = self._c(d, "memory-bound ops (backward)", lt["backward_memory"], after, label)
        named = ("fc2.dx", "fc2.dw", "fc1.dx", "fc1.dw", "proj.dx", "proj.dw", "qkv.dx", "qkv.dw")
        rest = lt["backward_gemm"] - sum(g[k] for k in named)  # the core's dX / dW, flash's rerun
        dx = self._gather_gemm(d, "fc2.dx", g["fc2.dx"], [mem], label)
        fc1 = self._c(d, "fc2.dw, fc1.dx", g["fc2.dw"] + g["fc1.dx"], dx, label)
        dx = self._gather_gemm(
            d, "proj.dx", g["proj.dx"], self._dx_collective(d, "fc1.dw", g["fc1.dw"], fc1, label), label
        )
        qkv = self._c(d, "proj.dw, core, qkv.dx", g["proj.dw"] + rest + g["qkv.dx"], dx, label)
        done = self._dx_collective(d, "qkv.dw", g["qkv.dw"], qkv, label)
        if not lt.get("kv_grad"):
            return done
        # a Llama's KV heads replicated over t / g ranks: their weight grads' all-reduce, after qkv's dW
        kv = self.s.issue(
            d,
            TP,
            "all_reduce (replicated KV-head grads)",
            lt["kv_grad"],
            done,
            cat=self.tpcat,
            nbytes=lt["kv_grad_bytes"],
            label=label,
            kind="all_reduce",
        )
        # it blocks the compute stream, as the closed form counts it (no overlap of this one is modelled)
        return [*done, self._c(d, "wait for the KV-head grads", 0.0, [kv], label)]

    def _dx_collective(self, d, dw: str, seconds: float, dx_op: Op, label: str) -> list:
        """The input gradient's collective, with the dW GEMM beside it (tp_overlap) or after it."""
        coll = self._coll(d, "reduce_scatter" if self.sp else "all_reduce", [dx_op], label)
        w = self._c(d, dw, seconds, [dx_op] if self.overlap else [coll], label)
        return [w, coll]
