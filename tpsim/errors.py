"""The one small exception hierarchy of tpsim.

Every public entry point validates its input before it touches a buffer, the
memory ledger or the trace, and raises one of these.  Messages name the rank or
device, the dim, the offending value and what would have been valid.

    TpsimError
    ├── ShapeError          shapes differ across ranks, or a dim does not divide
    ├── DTypeError          dtypes differ across ranks, or a dtype is unsupported
    ├── WorldSizeError      wrong number of buffers for the mesh or group
    ├── PlacementError      a placement dim out of range, or a redistribute not allowed
    ├── MeshDimError        a mesh dim that does not exist
    ├── AlgorithmError      an unknown collective or algorithm
    ├── ReduceOpError       an unknown reduction op
    ├── RootError           a root rank out of range
    ├── ScheduleError       a schedule that is not well formed
    ├── TopologyError       a topology that does not fit the mesh
    └── OutOfMemoryError    a virtual device over its memory capacity
"""

from __future__ import annotations


class TpsimError(Exception):
    """Base class of every error tpsim raises on bad input."""


class ShapeError(TpsimError, ValueError):
    """Shapes differ across ranks, or a dim does not split as required."""


class DTypeError(TpsimError, TypeError):
    """Dtypes differ across ranks, or a dtype is not supported."""


class WorldSizeError(TpsimError, ValueError):
    """The number of buffers does not match the mesh or its group."""


class PlacementError(TpsimError, ValueError):
    """A placement that does not fit the array, or a change of placement that is not allowed."""


class MeshDimError(TpsimError, ValueError):
    """A mesh dim (by name or index) that the mesh does not have."""


class AlgorithmError(TpsimError, ValueError):
    """An unknown collective or algorithm."""


class ReduceOpError(TpsimError, ValueError):
    """An unknown reduction op."""


class RootError(TpsimError, ValueError):
    """A root rank outside the group."""


class ScheduleError(TpsimError, ValueError):
    """A schedule that is not well formed (reads a chunk nobody holds, double-counts, ...)."""


class TopologyError(TpsimError, ValueError):
    """A topology that does not fit the mesh, or an unknown preset."""


class TokenIdError(TpsimError, IndexError):
    """A token id or loss target outside 0..vocab_size-1."""


class OutOfMemoryError(TpsimError, MemoryError):
    """A virtual device asked for more bytes than its capacity allows."""
