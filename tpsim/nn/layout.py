"""Where a layer's outputs and parameter gradients live: placements derived from an input's.

    on_tp(x, tp, S(-1))          x's placements, with S(-1) on the TP mesh dim
    grad_placements(x, w)        the gradient of parameter w, a sum over x's rows
    grad_placements(x)           any other sum over x's rows (the loss's mean)

A parameter's gradient sums over every row (token) of the activations.  On a mesh dim
where the parameter is split (a linear's weight, the embedding's table, on TP) each rank
owns its piece of the gradient: the parameter's own Shard.  On a mesh dim where it is
replicated, a split of x's rows (data parallel over the batch; TP under sequence
parallelism) leaves each rank the sum over its own rows only, a partial sum P; otherwise
every rank has the whole sum, R.
"""

from __future__ import annotations

from tpsim.placement import Partial, Placement, Replicate, Shard


def on_tp(x, tp: int, p: Placement) -> list[Placement]:
    """x's placements with `p` on mesh dim `tp`."""
    out = list(x.placements)
    out[tp] = p
    return out


def grad_placements(x, param=None) -> list[Placement]:
    """Per mesh dim: param's own Shard where it is split, else P where x's rows are split, else R."""
    own = param.placements if param is not None else [Replicate()] * len(x.placements)
    return [
        q if isinstance(q, Shard) else Partial() if isinstance(p, Shard) else Replicate()
        for p, q in zip(x.placements, own, strict=True)
    ]
