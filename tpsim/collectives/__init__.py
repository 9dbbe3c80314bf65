"""Collectives as schedules: data that says which chunk goes where in each step.

schedule.py   Transfer / Step / Schedule, and the symbolic check `Schedule.verify`
ring.py, halving_doubling.py, tree.py, direct.py, pairwise.py   the algorithms
algorithms.py the registry: `build(collective, algorithm, world_size, root)`
costs.py      closed-form alpha-beta costs of every algorithm
engine.py     runs a schedule on virtual devices: the one door for bytes
step_arrays.py  a schedule's steps as NumPy index arrays, cached per schedule
layout.py     how buffers map onto chunks
api.py        all_reduce(), all_gather(), ... and stepwise()
"""

from tpsim.collectives.api import run_collective, stepwise
from tpsim.collectives.kinds import Collective
from tpsim.collectives.schedule import Schedule, Step, Transfer


def all_reduce(buffers, mesh, *, op="sum", algorithm=None, mesh_dim=None, accum_dtype=None, **kw):
    """Every device gets the reduction of every buffer (same shapes)."""
    return run_collective(
        Collective.ALL_REDUCE,
        buffers,
        mesh,
        op=op,
        algorithm=algorithm,
        mesh_dim=mesh_dim,
        accum_dtype=accum_dtype,
        **kw,
    )


def reduce_scatter(buffers, mesh, *, op="sum", algorithm=None, mesh_dim=None, accum_dtype=None, **kw):
    """Rank j gets rows-chunk j (torch.chunk rule along dim 0) of the reduction."""
    return run_collective(
        Collective.REDUCE_SCATTER,
        buffers,
        mesh,
        op=op,
        algorithm=algorithm,
        mesh_dim=mesh_dim,
        accum_dtype=accum_dtype,
        **kw,
    )


def all_gather(buffers, mesh, *, algorithm=None, mesh_dim=None, **kw):
    """Every device gets every rank's buffer, stacked along dim 0 in rank order."""
    return run_collective(Collective.ALL_GATHER, buffers, mesh, algorithm=algorithm, mesh_dim=mesh_dim, **kw)


def broadcast(buffers, mesh, *, root=0, algorithm=None, mesh_dim=None, **kw):
    """Every device gets the root's buffer; non-root entries may be None."""
    return run_collective(
        Collective.BROADCAST, buffers, mesh, root=root, algorithm=algorithm, mesh_dim=mesh_dim, **kw
    )


def reduce(buffers, mesh, *, root=0, op="sum", algorithm=None, mesh_dim=None, accum_dtype=None, **kw):
    """The root gets the reduction; the other results are None."""
    return run_collective(
        Collective.REDUCE,
        buffers,
        mesh,
        root=root,
        op=op,
        algorithm=algorithm,
        mesh_dim=mesh_dim,
        accum_dtype=accum_dtype,
        **kw,
    )


def scatter(buffers, mesh, *, root=0, algorithm=None, mesh_dim=None, **kw):
    """Rank j gets rows-chunk j of the root's buffer; non-root entries may be None."""
    return run_collective(
        Collective.SCATTER, buffers, mesh, root=root, algorithm=algorithm, mesh_dim=mesh_dim, **kw
    )


def gather(buffers, mesh, *, root=0, algorithm=None, mesh_dim=None, **kw):
    """The root gets every rank's buffer stacked along dim 0; the other results are None."""
    return run_collective(
        Collective.GATHER, buffers, mesh, root=root, algorithm=algorithm, mesh_dim=mesh_dim, **kw
    )


def all_to_all(buffers, mesh, *, algorithm=None, mesh_dim=None, **kw):
    """Rank j gets rows-chunk j of every rank's buffer, stacked along dim 0 in rank order."""
    return run_collective(Collective.ALL_TO_ALL, buffers, mesh, algorithm=algorithm, mesh_dim=mesh_dim, **kw)


__all__ = [
    "Collective",
    "Schedule",
    "Step",
    "Transfer",
    "all_gather",
    "all_reduce",
    "all_to_all",
    "broadcast",
    "gather",
    "reduce",
    "reduce_scatter",
    "scatter",
    "stepwise",
]
