"""Pairwise exchange all-to-all: p-1 rounds, one peer per rank per round.

Rank r's buffer has 2p chunks: input chunk j (j < p) is destined for rank j,
and output slot p+i receives what rank i sent.  Step 0 moves the own chunk r to
slot p+r locally (src == dst, no link, no bytes).  In step s = 1..p-1 rank r
sends chunk (r+s) mod p to rank (r+s) mod p, landing in that rank's slot p+r;
so each rank sends to one peer and receives from another, (r-s) mod p, per step.

Cost with S the full input of one rank (p chunks of S/p), the local step free:

    (p-1) alpha + (p-1)/p * S/bw

(Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication
Operations in MPICH", IJHPCA 2005, the long-message all-to-all.)
"""

from __future__ import annotations

from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import COPY, Schedule, Transfer, make_steps


def all_to_all(p: int) -> Schedule:
    """Pairwise all-to-all: a local step then p-1 exchange steps, 2p chunks."""
    local = [Transfer(r, r, (r,), COPY, (p + r,)) for r in range(p)]
    rounds = [
        [Transfer(r, (r + s) % p, ((r + s) % p,), COPY, (p + r,)) for r in range(p)] for s in range(1, p)
    ]
    return Schedule(Collective.ALL_TO_ALL, "pairwise", p, 2 * p, make_steps([local, *rounds]))
