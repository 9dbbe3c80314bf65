"""The placement each device's buffer has before and after a collective (DESIGN: a collective is a
change of placement), as the pictures label it.

The low-level collectives cut along dim 0, so a collective reads, on every rank of its group:

    all_reduce      P -> R          all_gather    S(0) -> R       reduce_scatter  P -> S(0)
    all_to_all   S(1) -> S(0)       broadcast     R@ -> R         scatter         R@ -> S(0)
    reduce          P -> R@         gather        S(0) -> R@

R@ is "replicated on the root only": the root's label is R and every other rank's is "-" (it holds
nothing); "R@root" on every rank when the root is not given.  While the steps run, a buffer is
between the two: "P -> R".
"""

from __future__ import annotations

from tpsim.collectives.kinds import Collective
from tpsim.placement import Partial, Replicate, Shard

ON_ROOT = "R@"
NOTHING = "-"
ARROW = " -> "

S0, S1, R, P = Shard(0), Shard(1), Replicate(), Partial()
CHANGES: dict[str, tuple[object, object]] = {
    Collective.ALL_REDUCE: (P, R),
    Collective.ALL_GATHER: (S0, R),
    Collective.REDUCE_SCATTER: (P, S0),
    Collective.ALL_TO_ALL: (S1, S0),
    Collective.BROADCAST: (ON_ROOT, R),
    Collective.SCATTER: (ON_ROOT, S0),
    Collective.REDUCE: (P, ON_ROOT),
    Collective.GATHER: (S0, ON_ROOT),
}


def change(collective: str, rank: int = 0, root: int | None = None) -> tuple[str, str]:
    """(before, after) on group rank `rank`; `root` (a group rank) is needed by the rooted ones."""
    before, after = CHANGES[collective]
    return _on(before, rank, root), _on(after, rank, root)


def label(collective: str, step: int, num_steps: int | None, rank: int = 0, root: int | None = None) -> str:
    """A buffer's placement after `step` of `num_steps` (0: before the first; None: steps unknown)."""
    before, after = change(collective, rank, root)
    if step == 0:
        return before
    if num_steps is not None and step >= num_steps:
        return after
    return before + ARROW + after


def buffer_labels(collective: str, groups, step: int, num_steps: int | None, root: int | None = None) -> dict:
    """{device: label} for every device of `groups` (tuples of device ids, group rank = position)."""
    return {d: label(collective, step, num_steps, r, root) for g in groups for r, d in enumerate(g)}


def _on(p, rank: int, root: int | None) -> str:
    if p != ON_ROOT:
        return repr(p)  # S(0), R, P: the placements' own short names
    if root is None:
        return "R@root"  # the root is not known: every rank says where the data is
    return "R" if rank == root else NOTHING
