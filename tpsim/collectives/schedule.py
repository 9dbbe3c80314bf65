"""Schedules: an algorithm written down as data.

A `Schedule` is a sequence of `Step`s; a step is a set of `Transfer`s that run
at the same time.  Schedules are pure Python (no NumPy) so that tpsim's engine
and the reference's point-to-point executor run the very same objects.

The buffer model.  Every rank holds one working buffer cut into
`schedule.num_chunks` chunks; a transfer names chunk ids, never offsets, so one
schedule serves every buffer length.  What the chunks mean depends on the
collective (p = world size, ranks are group-local 0..p-1):

    all_reduce      k chunks (the algorithm's choice); every rank starts with all
                    of them holding its own data and ends with all of them reduced
    reduce          as all_reduce, but only `root` must end fully reduced
    reduce_scatter  p chunks; every rank starts with all; rank j ends with chunk j reduced
    all_gather      p chunks; rank j starts with chunk j; every rank ends with all
    broadcast       k chunks; `root` starts with all; every rank ends with all
    scatter         p chunks; `root` starts with all; rank j ends with chunk j
    gather          p chunks; rank j starts with chunk j; `root` ends with all
    all_to_all      2p chunks; chunk j < p is rank r's input destined for rank j,
                    chunk p + i is rank r's output slot for what rank i sent

Semantics of a step.  Every transfer of a step reads its source before any
transfer of the step writes.  `op="copy"` overwrites the destination chunk;
`op="reduce"` combines into it.  When several transfers reduce into one
destination chunk in one step, the values are combined in ascending rank
order, the receiver's own value standing at the receiver's rank.  That order is
part of the definition: both engines follow it, so their results are bitwise
equal and every rank of a replicated result holds the same bits.  A transfer
with src == dst is a local copy: it crosses no link and counts no bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from tpsim.collectives.kinds import Collective
from tpsim.errors import ScheduleError

COPY = "copy"
REDUCE = "reduce"

COLLECTIVES = tuple(Collective)
ROOTED = frozenset({Collective.REDUCE, Collective.BROADCAST, Collective.SCATTER, Collective.GATHER})


class Transfer(NamedTuple):
    """Move `chunks` of `src`'s buffer into `dst_chunks` (default: the same ids) of `dst`'s."""

    src: int
    dst: int
    chunks: tuple[int, ...]
    op: str = COPY
    dst_chunks: tuple[int, ...] | None = None

    @property
    def targets(self) -> tuple[int, ...]:
        return self.chunks if self.dst_chunks is None else self.dst_chunks


@dataclass(frozen=True, slots=True)
class Step:
    """Transfers that run at the same time, stored by column so that large rings stay cheap.

    Build one from transfers with `Step.of([...])`; iterate it to get `Transfer`s back.
    Column i of every field describes transfer i.
    """

    src: tuple[int, ...]
    dst: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]
    dst_chunks: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, transfers: Iterable[Transfer]) -> Step:
        ts = list(transfers)
        return cls(
            tuple(t.src for t in ts),
            tuple(t.dst for t in ts),
            tuple(tuple(t.chunks) for t in ts),
            tuple(t.op for t in ts),
            tuple(tuple(t.targets) for t in ts),
        )

    def __iter__(self) -> Iterator[Transfer]:
        for s, d, c, o, dc in zip(self.src, self.dst, self.chunks, self.ops, self.dst_chunks, strict=False):
            yield Transfer(s, d, c, o, dc)

    def __len__(self) -> int:
        return len(self.src)


@dataclass(frozen=True, eq=False)
class Schedule:
    """One collective algorithm for one world size (and root), as data.

    Compared and hashed by identity: schedules are built once and cached.
    """

    collective: str
    algorithm: str
    world_size: int
    num_chunks: int
    steps: tuple[Step, ...]
    root: int | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    @property
    def num_transfers(self) -> int:
        return sum(len(s) for s in self.steps)

    def initial(self, rank: int, chunk: int) -> frozenset | None:
        """Atoms `(origin_rank, origin_chunk)` that `rank`'s `chunk` holds at the start, or None."""
        return initial_atoms(self.collective, self.world_size, self.root, rank, chunk)

    def expected(self, rank: int, chunk: int) -> frozenset | None:
        """Atoms `rank`'s `chunk` must hold at the end, or None where the result does not care."""
        return expected_atoms(self.collective, self.world_size, self.num_chunks, self.root, rank, chunk)

    def result_chunks(self, rank: int) -> tuple[int, ...]:
        """The chunk ids that make up `rank`'s result."""
        return tuple(c for c in range(self.num_chunks) if self.expected(rank, c) is not None)

    def verify(self) -> None:
        """Run the schedule on symbols and raise ScheduleError unless it computes its collective.

        Each chunk is tracked as the set of (origin rank, origin chunk) it contains.
        This catches reading a chunk nobody holds, reducing a contribution twice,
        two writers of one chunk in a step, and a result that misses a rank.
        """
        state = trace_contributions(self)[-1]
        for rank in range(self.world_size):
            for chunk in range(self.num_chunks):
                want = self.expected(rank, chunk)
                if want is not None and state[rank][chunk] != want:
                    raise ScheduleError(
                        f"{self.algorithm} {self.collective} (p={self.world_size}): rank {rank} "
                        f"chunk {chunk} ends with {_fmt(state[rank][chunk])}, expected {_fmt(want)}"
                    )


def make_steps(steps: Iterable[Iterable[Transfer]]) -> tuple[Step, ...]:
    """Freeze a list of lists of transfers into steps, dropping empty steps."""
    return tuple(Step.of(s) for s in (list(s) for s in steps) if s)


def initial_atoms(collective: str, p: int, root: int | None, rank: int, chunk: int) -> frozenset | None:
    if collective in (Collective.ALL_REDUCE, Collective.REDUCE, Collective.REDUCE_SCATTER):
        return frozenset({(rank, chunk)})
    if collective in (Collective.ALL_GATHER, Collective.GATHER):
        return frozenset({(rank, chunk)}) if chunk == rank else None
    if collective in (Collective.BROADCAST, Collective.SCATTER):
        return frozenset({(root, chunk)}) if rank == root else None
    if collective == Collective.ALL_TO_ALL:
        return frozenset({(rank, chunk)}) if chunk < p else None
    raise ScheduleError(f"unknown collective {collective!r}; valid: {', '.join(COLLECTIVES)}")


def expected_atoms(
    collective: str, p: int, k: int, root: int | None, rank: int, chunk: int
) -> frozenset | None:
    everyone = range(p)
    if collective == Collective.ALL_REDUCE:
        return frozenset((q, chunk) for q in everyone)
    if collective == Collective.REDUCE:
        return frozenset((q, chunk) for q in everyone) if rank == root else None
    if collective == Collective.REDUCE_SCATTER:
        return frozenset((q, chunk) for q in everyone) if chunk == rank else None
    if collective == Collective.ALL_GATHER:
        return frozenset({(chunk, chunk)})
    if collective == Collective.GATHER:
        return frozenset({(chunk, chunk)}) if rank == root else None
    if collective == Collective.BROADCAST:
        return frozenset({(root, chunk)})
    if collective == Collective.SCATTER:
        return frozenset({(root, chunk)}) if chunk == rank else None
    if collective == Collective.ALL_TO_ALL:
        return frozenset({(chunk - p, rank)}) if chunk >= p else None
    raise ScheduleError(f"unknown collective {collective!r}; valid: {', '.join(COLLECTIVES)}")


def trace_contributions(schedule: Schedule) -> list[list[list[frozenset | None]]]:
    """Symbolic run: the atoms of every (rank, chunk) before the first step and after each step."""
    p, k = schedule.world_size, schedule.num_chunks
    state = [[schedule.initial(r, c) for c in range(k)] for r in range(p)]
    history = [[row[:] for row in state]]
    for index, step in enumerate(schedule.steps):
        nxt = [row[:] for row in state]
        written: dict[tuple[int, int], str] = {}
        for t in step:
            if not (0 <= t.src < p and 0 <= t.dst < p):
                raise ScheduleError(f"step {index}: transfer {t} names a rank outside 0..{p - 1}")
            if t.op not in (COPY, REDUCE):
                raise ScheduleError(f"step {index}: transfer {t} has op {t.op!r}; valid: copy, reduce")
            if len(t.targets) != len(t.chunks):
                raise ScheduleError(
                    f"step {index}: transfer {t} maps {len(t.chunks)} chunks to {len(t.targets)}"
                )
            for c, d in zip(t.chunks, t.targets, strict=False):
                if not (0 <= c < k and 0 <= d < k):
                    raise ScheduleError(f"step {index}: transfer {t} names a chunk outside 0..{k - 1}")
                atoms = state[t.src][c]
                if atoms is None:
                    raise ScheduleError(f"step {index}: rank {t.src} sends chunk {c}, which it does not hold")
                prev = written.get((t.dst, d))
                if prev is not None and (prev == COPY or t.op == COPY):
                    raise ScheduleError(f"step {index}: rank {t.dst} chunk {d} has two writers, one a copy")
                written[(t.dst, d)] = t.op
                if t.op == COPY:
                    nxt[t.dst][d] = atoms
                else:
                    have = nxt[t.dst][d]
                    if have is None:
                        raise ScheduleError(
                            f"step {index}: rank {t.dst} reduces into chunk {d}, which it does not hold"
                        )
                    if have & atoms:
                        raise ScheduleError(
                            f"step {index}: rank {t.dst} chunk {d} would count {_fmt(have & atoms)} twice"
                        )
                    nxt[t.dst][d] = have | atoms
        state = nxt
        history.append([row[:] for row in state])
    return history


def _fmt(atoms: frozenset | None) -> str:
    if atoms is None:
        return "nothing"
    return "{" + ", ".join(f"r{r}c{c}" for r, c in sorted(atoms)) + "}"
