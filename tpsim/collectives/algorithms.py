"""The registry of collective algorithms: names, defaults, and `build`.

    ALGORITHMS["all_reduce"]  == ("ring", "halving_doubling", "tree", "direct")   # first is the default
    build("all_reduce", "ring", 4)                                                  # -> Schedule, memoised

Every algorithm works for every world size >= 1.  p = 1 gives a schedule with
no steps, except all_to_all, which keeps its local copy of the own chunk.
Schedules are immutable, so `build` caches them: the same arguments return the
very same object.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import lru_cache

from tpsim.collectives import direct, halving_doubling, pairwise, ring, tree
from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COLLECTIVES, ROOTED, Schedule
from tpsim.errors import AlgorithmError, RootError, WorldSizeError

_BUILDERS: dict[str, dict[str, Callable[..., Schedule]]] = {
    Collective.ALL_REDUCE: {
        "ring": ring.all_reduce,
        "halving_doubling": halving_doubling.all_reduce,
        "tree": tree.all_reduce,
        "direct": direct.all_reduce,
    },
    Collective.REDUCE_SCATTER: {
        "ring": ring.reduce_scatter,
        "recursive_halving": halving_doubling.reduce_scatter,
        "direct": direct.reduce_scatter,
    },
    Collective.ALL_GATHER: {
        "ring": ring.all_gather,
        "recursive_doubling": halving_doubling.all_gather,
        "direct": direct.all_gather,
    },
    Collective.BROADCAST: {"tree": tree.broadcast, "direct": direct.broadcast},
    Collective.REDUCE: {"tree": tree.reduce, "direct": direct.reduce},
    Collective.SCATTER: {"direct": direct.scatter, "tree": tree.scatter},
    Collective.GATHER: {"direct": direct.gather, "tree": tree.gather},
    Collective.ALL_TO_ALL: {"pairwise": pairwise.all_to_all, "direct": direct.all_to_all},
}

ALGORITHMS: dict[str, tuple[str, ...]] = {c: tuple(_BUILDERS[c]) for c in COLLECTIVES}
DEFAULT_ALGORITHM: dict[str, str] = {c: names[0] for c, names in ALGORITHMS.items()}


def build(
    collective: str, algorithm: str | None = None, world_size: int | None = None, root: int | None = None
) -> Schedule:
    """The schedule of `algorithm` (default: DEFAULT_ALGORITHM[collective]) for `world_size` ranks.

    Rooted collectives (reduce, broadcast, scatter, gather) need 0 <= root < world_size;
    the others ignore `root` and get a schedule with root None.  Raises AlgorithmError,
    WorldSizeError or RootError, naming the bad value and what would be valid.
    """
    algorithm = check_algorithm(collective, algorithm)
    if world_size is None:
        raise WorldSizeError(f"{collective}: world_size is required (an int >= 1)")
    p = _as_int(world_size)
    if p is None or p < 1:
        raise WorldSizeError(f"{collective}: world_size must be an int >= 1, got {world_size!r}")
    if collective not in ROOTED:
        return _build(collective, algorithm, p, None)
    r = _as_int(root)
    if r is None or not 0 <= r < p:
        raise RootError(f"{collective}: root must be a rank in 0..{p - 1} (world_size {p}), got {root!r}")
    return _build(collective, algorithm, p, r)


def check_algorithm(collective: str, algorithm: str | None = None) -> str:
    """Validate the names; return the algorithm, the collective's default when None."""
    if not isinstance(collective, str) or collective not in ALGORITHMS:
        raise AlgorithmError(f"unknown collective {collective!r}; valid: {', '.join(COLLECTIVES)}")
    if algorithm is None:
        return DEFAULT_ALGORITHM[collective]
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS[collective]:
        raise AlgorithmError(
            f"unknown algorithm {algorithm!r} for {collective}; valid: {', '.join(ALGORITHMS[collective])}"
        )
    return algorithm


@lru_cache(maxsize=512)
def _build(collective: str, algorithm: str, p: int, root: int | None) -> Schedule:
    builder = _BUILDERS[collective][algorithm]
    return builder(p) if root is None else builder(p, root)


def _as_int(value: object) -> int | None:
    """`value` as a plain int (NumPy integers welcome), or None for bools and non-integers."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
