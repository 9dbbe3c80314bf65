"""Megatron's self-attention: whole heads per TP rank, one column- and one row-parallel linear.

x is (s, b, h), sequence first as in Megatron (seq_dim=0; seq_dim=1 takes (b, s, h)).
n heads of d = h / n features each; t TP ranks, each holding n / t whole heads.

    qkv = x W_qkv^T + b_qkv   W_qkv (3h, h) split by rows:  W_qkv = [W_1; ...; W_t]
    per head: S = q k^T / sqrt(d), causal mask, P = softmax(S), c = P v   (local, no communication)
    y = c W_o^T + b_o         W_o (h, h) split by columns:  W_o = [W_1 ... W_t]

The rows of W_qkv are interleaved per head (Megatron's layout):

    W_qkv = [q_0; k_0; v_0; q_1; k_1; v_1; ...; q_{n-1}; k_{n-1}; v_{n-1}]   each block (d, h)

so Shard(0) of W_qkv hands rank i the q, k and v of heads i n/t .. (i+1) n/t - 1, and the context
it computes is exactly its S(-1) slice of c: the input W_o's row-parallel split expects.

    forward:  copy_to (identity), then one all-reduce of y     [SP: all-gather x, reduce-scatter y]
    backward: identity for dy, then one all-reduce of dx       [SP: all-gather dy; all-gather x again
                                                                (for dW_qkv), reduce-scatter dx]

Attention dropout (`attention_dropout` = p > 0): P' = dropout(P), c = P' v, on each rank's own heads.
Its mask comes from the "model-parallel" RNG stream (seed + 2718 + tp_rank), so different heads get
independent masks; Megatron forks the tracker there, and under SP the whole layer already runs forked,
which draws from the same stream (dropout.py).  So TP=1 and TP=t draw different masks.

Saved for backward, as Megatron keeps them: q, k, v, the softmax output P (for its backward), the
dropout mask (1 byte per score) and the dropped P' (for dv = P'^T dc), i.e. Korthikanti's
2as^2b + as^2b + 2as^2b = 5as^2b bytes in 16-bit; and the two linears' inputs (under SP, only x's
sequence shard).  Without dropout P' is P, saved once.  The hidden dropout after the dense layer
belongs to the transformer block.
"""

from __future__ import annotations

import math

import numpy as np

from tpsim import validate
from tpsim.darray import DArray
from tpsim.errors import PlacementError, ShapeError
from tpsim.meta import is_meta
from tpsim.nn import ops
from tpsim.nn.dropout import MODEL_PARALLEL, Dropout, RNGTracker
from tpsim.nn.linear import ColumnParallelLinear, RowParallelLinear
from tpsim.nn.module import Module
from tpsim.placement import Shard


class ParallelAttention(Module):
    """Self-attention, x (s, b, h) -> y (s, b, h), with n/t whole heads on each TP rank."""

    def __init__(
        self,
        mesh,
        hidden: int,
        num_heads: int,
        *,
        bias: bool = True,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        causal: bool = True,
        attention_dropout: float = 0.0,
        tracker: RNGTracker | None = None,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        validate.positive_int(self.name, "hidden", hidden)
        validate.heads(self.name, hidden, num_heads)
        self.check_divides("num_heads", num_heads)
        self.hidden, self.num_heads, self.head_dim = hidden, num_heads, hidden // num_heads
        self.seq_dim, self.causal = validate.seq_dim(self.name, seq_dim), causal
        self.scale = 1.0 / math.sqrt(self.head_dim)
        kw = dict(bias=bias, init=init, dtype=dtype, tp_dim=tp_dim)
        kw.update(sequence_parallel=sequence_parallel, seq_dim=self.seq_dim)
        self.query_key_value = self.child(
            "query_key_value", ColumnParallelLinear(mesh, hidden, 3 * hidden, seed=seed, **kw)
        )
        self.dense = self.child(
            "dense", RowParallelLinear(mesh, hidden, hidden, input_is_parallel=True, seed=seed + 2, **kw)
        )
        self.attention_dropout = None
        if attention_dropout:  # Megatron: core_attention.attention_dropout, on the forked stream
            tracker = tracker if tracker is not None else RNGTracker(seed)
            self.attention_dropout = self.child(
                "attention_dropout",
                Dropout(mesh, attention_dropout, tracker=tracker, stream=MODEL_PARALLEL, tp_dim=tp_dim),
            )

    def forward(self, x: DArray) -> DArray:
        self._check_input(x)
        qkv = self.query_key_value(x)  # (s, b, 3h) S(-1): n/t whole heads per rank
        heads = _heads_placements(qkv.placements, self.seq_dim)
        q, k, v = (
            self.local(f"split_{w}", _split_heads, qkv, self.head_dim, self.seq_dim, i, placements=heads)
            for i, w in enumerate("qkv")
        )  # each (b, n/t, s, d)
        del qkv
        scores = self.local("attention_scores", _scores, q, k, self.scale, placements=heads)  # (b, n/t, s, s)
        probs = self.local("softmax", _softmax, scores, self.causal, placements=heads)
        del scores
        dropped = probs if self.attention_dropout is None else self.attention_dropout(probs)  # P'
        self.save(q=q, k=k, v=v, probs=probs, dropped=dropped)  # P' is P (saved once) without dropout
        ctx = self.local("attention_context", _context, dropped, v, placements=heads)  # (b, n/t, s, d)
        merged = self.local(
            "merge_heads", _merge_heads, ctx, self.seq_dim, placements=_seq_placements(heads, self.seq_dim)
        )  # (s, b, h) S(-1)
        del ctx
        return self.dense(merged)

    def backward(self, dy: DArray) -> DArray:
        dmerged = self.dense.backprop(dy)  # (s, b, h) S(-1)
        q, k, v, probs, dropped = self.saved("q", "k", "v", "probs", "dropped")
        heads = probs.placements
        dctx = self.local(
            "split_heads_backward", _split_heads, dmerged, self.head_dim, self.seq_dim, None, placements=heads
        )
        del dmerged
        dv = self.local("attention_dv", _dv, dropped, dctx, placements=heads)  # P'^T dc
        dprobs = self.local("attention_dprobs", _dprobs, dctx, v, placements=heads)  # dc v^T = dP'
        del dctx, dropped
        if self.attention_dropout is not None:
            dprobs = self.attention_dropout.backprop(dprobs)  # dP = dP' * mask / (1 - p)
        dscores = self.local("softmax_backward", _softmax_grad, probs, dprobs, self.scale, placements=heads)
        del dprobs, probs
        dq = self.local("attention_dq", _dq, dscores, k, placements=heads)  # dS k
        dk = self.local("attention_dk", _dk, dscores, q, placements=heads)  # dS^T q
        del dscores
        seq = _seq_placements(heads, self.seq_dim)
        dqkv = self.local("merge_qkv_backward", _merge_qkv, dq, dk, dv, self.seq_dim, placements=seq)
        del dq, dk, dv
        return self.query_key_value.backprop(dqkv)

    def _check_input(self, x: DArray) -> None:
        if x.ndim != 3 or x.shape[-1] != self.hidden:
            layout = "(s, b, h)" if self.seq_dim == 0 else "(b, s, h)"
            raise ShapeError(f"{self.name}: x has shape {x.shape}; expected {layout} with h = {self.hidden}")
        for i, p in enumerate(x.placements):
            if i != self.tp and p == Shard(self.seq_dim):
                raise PlacementError(
                    f"{self.name}: x's sequence dim is sharded on mesh dim {self.mesh.names[i]} "
                    f"({x.placements}); every query needs every key: shard only the batch off the TP dim"
                )


def _heads_placements(placements, seq_dim: int) -> list:
    """(s, b, f) or (b, s, f) placements -> those of (b, heads, s, ...): the dims move, the split stays."""
    move = {seq_dim: 2, 1 - seq_dim: 0, 2: 1}
    return [Shard(move[p.dim]) if isinstance(p, Shard) else p for p in placements]


def _seq_placements(placements, seq_dim: int) -> list:
    """The inverse of _heads_placements."""
    move = {2: seq_dim, 0: 1 - seq_dim, 1: 2}
    return [Shard(move[p.dim]) if isinstance(p, Shard) else p for p in placements]


def _to_heads_axes(seq_dim: int) -> tuple[int, ...]:
    return (1, 2, 0, 3) if seq_dim == 0 else (0, 2, 1, 3)  # (s|b, b|s, n, d) -> (b, n, s, d)


def _split_heads(a, d: int, seq_dim: int, which: int | None):
    """(s, b, n*3*d) -> q, k or v (which = 0, 1, 2), or (s, b, n*d) -> (b, n, s, d) (which = None).

    A copy into the (b, n, s, d) layout the batched matmuls read: no FLOPs, bytes read and written.
    """
    width = d if which is None else 3 * d
    n = a.shape[-1] // width
    axes = _to_heads_axes(seq_dim)
    per_head = a.reshape(*a.shape[:2], n, width)  # (s, b, n, d) or (s, b, n, 3d): [q k v] per head
    blocks = per_head if which is None else per_head[..., which * d : (which + 1) * d]
    out = np.ascontiguousarray(blocks.transpose(axes), like=a)
    return out, 0, 2 * out.nbytes


def _merge_heads(c, seq_dim: int):
    """(b, n, s, d) -> (s, b, n*d): the context in the S(-1) layout the row-parallel dense expects."""
    b, n, s, d = c.shape
    shape = (s, b, n * d) if seq_dim == 0 else (b, s, n * d)
    out = np.ascontiguousarray(c.transpose(_from_heads_axes(seq_dim)), like=c).reshape(shape)
    return out, 0, 2 * c.nbytes


def _merge_qkv(dq, dk, dv, seq_dim: int):
    """Three (b, n, s, d) -> (s, b, n*3*d), interleaved per head as W_qkv's rows are."""
    b, n, s, d = dq.shape
    shape = (s, b, n * 3 * d) if seq_dim == 0 else (b, s, n * 3 * d)
    nbytes = 2 * (dq.nbytes + dk.nbytes + dv.nbytes)
    stacked = np.stack([dq, dk, dv], axis=3)  # (b, n, s, 3, d)
    axes = (2, 0, 1, 3, 4) if seq_dim == 0 else (0, 2, 1, 3, 4)
    return np.ascontiguousarray(stacked.transpose(axes), like=dq).reshape(shape), 0, nbytes


def _from_heads_axes(seq_dim: int) -> tuple[int, ...]:
    return (2, 0, 1, 3) if seq_dim == 0 else (0, 2, 1, 3)  # (b, n, s, d) -> (s|b, b|s, n, d)


def _t(a):
    """Swap the last two dims (a view)."""
    return ops.transpose(a, (0, 1, 3, 2))[0]


def _scores(q, k, scale: float):
    """S = q k^T * scale: 2 s s d FLOPs per head for the matmul, one per score for the scale
    (Megatron folds it into baddbmm's alpha)."""
    mm = ops.matmul(q, _t(k))
    s, mm_flops, nbytes = mm
    out, flops, _ = ops.elementwise(lambda u: u * u.dtype.type(s.dtype.type(scale)), s)  # scale in s's dtype
    # one kernel: the scale costs no extra pass over memory, and is priced as the GEMM's epilogue
    return ops.Cost(out, mm_flops + flops, nbytes, ops.gemm_of(mm))


def _softmax(scores, causal: bool):
    """Causal mask (keys after the query -> -inf), then a softmax over keys, max subtracted first.

    ~5 FLOPs per score: max, subtract, exp, sum, divide (the mask is a select).
    """
    if is_meta(scores):  # the causal mask is data: (s, s) booleans a shape-only run must not allocate
        return scores.copy(), 5 * scores.size, 2 * scores.nbytes
    dtype, s = scores.dtype, ops.widen(scores)  # half precision: float32 inside, one rounding (as torch)
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.triu(np.ones((sq, sk), bool), 1), -np.inf, s).astype(s.dtype)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return ops.narrow(e / e.sum(axis=-1, keepdims=True), dtype), 5 * scores.size, 2 * scores.nbytes


def _softmax_grad(p, dp, scale: float):
    """dS = P * (dP - sum(dP * P, keys)) * scale: ~5 FLOPs per score; masked scores have P = 0."""
    nbytes = p.nbytes + dp.nbytes + p.nbytes
    # torch's two kernels, each rounding once in half precision: softmax backward, then the scale's
    pw, dpw = ops.widen(p), ops.widen(dp)
    ds = ops.narrow(pw * (dpw - (dpw * pw).sum(axis=-1, keepdims=True)), p.dtype)
    return ops.elementwise(lambda u: u * u.dtype.type(p.dtype.type(scale)), ds)[0], 5 * p.size, nbytes


def _context(p, v):
    return ops.matmul(p, v)  # (b, n, s, s) @ (b, n, s, d): 2 s s d FLOPs per head


def _dv(p, dc):
    return ops.matmul(_t(p), dc)  # P^T dc


def _dprobs(dc, v):
    return ops.matmul(dc, _t(v))  # dc v^T


def _dq(ds, k):
    return ops.matmul(ds, k)


def _dk(ds, q):
    return ops.matmul(_t(ds), q)
