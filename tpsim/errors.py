"""The one small exception hierarchy of tpsim and of the reference.

Every public entry point validates its input before it touches a buffer, the
memory ledger or the trace, and raises one of these.  Messages name the rank or
device, the dim, the offending value and what would have been valid.  Every class
is defined here; the modules that raise one re-export it under its old import path
(`from tpsim.nn.config import ConfigError` still works).  Each also derives from
the builtin that fits (ValueError, TypeError, ...), so `except ValueError` keeps
catching what it caught before.

    TpsimError
    ├── ShapeError          shapes differ across ranks, or a dim does not divide
    │   └── UnevenGroups    the groups of a mesh dim hold different shapes
    ├── DTypeError          dtypes differ across ranks or from a layer's, or a dtype is unsupported
    ├── WorldSizeError      wrong number of buffers for the mesh, group or layer
    ├── MeshError           a mesh built from bad sizes or memory, or an array from another mesh
    ├── MeshDimError        a mesh dim that does not exist
    ├── PlacementError      a placement dim out of range, a redistribute not allowed, replicas that differ
    ├── AlgorithmError      an unknown collective or algorithm
    ├── ReduceOpError       an unknown reduction op
    ├── RootError           a root rank out of range
    ├── ScheduleError       a schedule that is not well formed
    ├── TopologyError       a topology that does not fit the mesh
    ├── TokenIdError        a token id or target outside the vocabulary
    ├── OutOfMemoryError    a virtual device over its memory capacity
    ├── ArgumentError       an argument outside its valid range (a size < 1, p, seed, an unknown name)
    ├── ConfigError         a model configuration that is unknown or has a bad field
    ├── CallOrderError      a call out of order: backward before forward
    ├── ResourceLimitError  a run whose estimated memory or time is past the limit (--force goes on)
    ├── LayoutError         TP x DP x PP degrees that do not fit the model or the cluster
    ├── PipelineError       a pipeline schedule that cannot be built
    ├── RecomputeError      an unknown activation recomputation mode
    ├── KernelsError        an unknown kernel set (unfused, fused, flash)
    ├── AnswerError         an exercise answer of the wrong kind
    ├── the `tpsim` command's tools:
    │   ├── CalibrationError  a calibration that could not run
    │   ├── FitError          too few or bad measurements to fit (alpha and beta, or a GEMM curve)
    │   ├── NcclTestsError    a file that is not nccl-tests output, or lacks what a fit needs
    │   ├── BenchError        a benchmark that could not be found or failed
    │   ├── ReportError       a GPU report that cannot be read
    │   └── PlotError         --plot without matplotlib
    └── the reference (real torch.distributed):
        ├── LaunchError       a backend, device, world size or timeout that cannot run here
        ├── RankFailed        a rank raised, was killed or timed out (carries rank, exit code, traceback)
        │   └── RunTimeout    the run outlived its timeout
        ├── CollectiveMismatch  ranks called different collectives (desync)
        ├── RecordMismatch    a rank's record of collectives differs from tpsim's trace
        └── SectionTimeout    a GPU-check section ran past its budget
"""

from __future__ import annotations


class TpsimError(Exception):
    """Base class of every error tpsim raises on bad input."""


class ShapeError(TpsimError, ValueError):
    """Shapes differ across ranks, or a dim does not split as required."""


class UnevenGroups(ShapeError):
    """The groups of a mesh dim hold different shapes (uneven shards on an n-d mesh)."""


class DTypeError(TpsimError, TypeError):
    """Dtypes differ across ranks or from a layer's, or a dtype is not supported."""


class WorldSizeError(TpsimError, ValueError):
    """The number of buffers does not match the mesh, its group, or the layer."""


class MeshError(TpsimError, ValueError):
    """A mesh built from bad sizes or memory, or an array that lives on another mesh."""


class MeshDimError(TpsimError, ValueError):
    """A mesh dim (by name or index) that the mesh does not have."""


class PlacementError(TpsimError, ValueError):
    """A placement that does not fit the array, a change of placement not allowed, or replicas that differ."""


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


class ArgumentError(TpsimError, ValueError):
    """An argument outside its valid range: a size < 1, a probability, a seed, an unknown name."""


class ConfigError(TpsimError, ValueError):
    """A model configuration that is unknown, unreadable, or has a bad field."""


class CallOrderError(TpsimError, RuntimeError):
    """A call out of order, such as backward before forward."""


class ResourceLimitError(TpsimError, ValueError):
    """A run whose estimated memory or time is past the limit; the message has the estimate."""


class LayoutError(TpsimError, ValueError):
    """A layout that does not fit the model or the cluster: degrees that don't divide, or don't multiply."""


class PipelineError(TpsimError, ValueError):
    """A pipeline schedule that cannot be built: unknown name, or a stage/microbatch count < 1."""


class RecomputeError(TpsimError, ValueError):
    """An unknown activation recomputation mode."""


class KernelsError(TpsimError, ValueError):
    """An unknown kernel set."""


class AnswerError(TpsimError, ValueError):
    """An answer of the wrong kind: a string where a number is asked, an unknown choice, ..."""


class CalibrationError(TpsimError, RuntimeError):
    """The measurement could not run: no torch, no reference, or a rank failed."""


class FitError(TpsimError, ValueError):
    """Too few or bad measurements to fit: alpha and beta, or a GEMM efficiency curve."""


class NcclTestsError(TpsimError, ValueError):
    """A file that is not nccl-tests output, or lacks what a fit needs."""


class BenchError(TpsimError, RuntimeError):
    """The benchmarks could not be found or one of them failed."""


class ReportError(TpsimError, ValueError):
    """A GPU report that cannot be read, or lacks the section a preset is made from."""


class PlotError(TpsimError, RuntimeError):
    """--plot was asked for, but matplotlib is not installed."""


class LaunchError(TpsimError, ValueError):
    """A backend, device, world size or timeout that cannot run here (says what would)."""


class RankFailed(TpsimError, RuntimeError):
    """A rank raised, was killed, or the run timed out; carries the rank, its exit code and traceback.

    The message puts the cause first and last: the failing rank's traceback, then one line for each
    other rank (`others`: usually gloo's "Connection reset by peer" after the cause), then the
    failing rank's error again.
    """

    def __init__(
        self,
        rank: int,
        exitcode: int | None,
        traceback: str,
        message: str | None = None,
        others: dict[int, str] | None = None,
    ):
        self.rank, self.exitcode, self.traceback = rank, exitcode, traceback
        self.others = dict(others or {})
        head = message or f"rank {rank} failed (exit code {exitcode})"
        parts = [head, f"--- rank {rank} ---", traceback.rstrip()]
        if self.others:
            parts.append("--- the other ranks, ended after it ---")
            parts += [f"rank {r}: {line}" for r, line in sorted(self.others.items())]
            cause = next((ln for ln in reversed(traceback.splitlines()) if ln.strip()), head)
            parts.append(f"--- the cause: rank {rank} ---\n{cause.strip()}")
        super().__init__("\n".join(parts))


class RunTimeout(RankFailed):
    """The run outlived its timeout; `rank` is the lowest rank still running, exit code None."""


class CollectiveMismatch(TpsimError, RuntimeError):
    """Ranks called different collectives, or the same one with a different op, root or dim (desync)."""


class RecordMismatch(TpsimError, AssertionError):
    """A rank's record of collectives differs from the tpsim trace it is compared with."""


class SectionTimeout(TpsimError, TimeoutError):
    """A section ran past its budget plus the grace; raised by the alarm."""
