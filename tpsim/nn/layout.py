"""Where a layer's outputs and parameter gradients live: placements derived from an input's.

    on_tp(x, tp, S(-1))          x's placements, with S(-1) on the TP mesh dim
    grad_placements(x)           a sum over x's rows: P where a mesh dim splits them, R elsewhere
    grad_placements(x, tp, S(0)) the same, with the parameter's own split S(0) on the TP mesh dim

A parameter's gradient sums over every row (token) of the activations.  A mesh dim that
splits those rows (data parallel over the batch; TP under sequence parallelism) leaves
each rank with the sum over its own rows only: a partial sum, P.  A mesh dim that does
not split them (R) gives every rank the whole sum.  On the TP mesh dim a split parameter
(a linear's weight, the embedding's table) keeps its split: each rank owns its piece.
"""

from __future__ import annotations

from tpsim.placement import Partial, Placement, Replicate, Shard


def on_tp(x, tp: int, p: Placement) -> list[Placement]:
    """x's placements with `p` on mesh dim `tp`."""
    out = list(x.placements)
    out[tp] = p
    return out


def grad_placements(x, tp: int | None = None, split: Placement | None = None) -> list[Placement]:
    """A sum over x's rows (a parameter's gradient); `split` on mesh dim `tp` for a parameter split there."""
    out: list[Placement] = [Partial() if isinstance(p, Shard) else Replicate() for p in x.placements]
    if tp is not None and split is not None:
        out[tp] = split
    return out
