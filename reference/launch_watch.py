"""The parent's side of a spawn: every rank watched until all have sent a result, or one fails.

    results = watch(procs, workdir, tag, timeout, pipes)   # [rank 0's result, ...] or RankFailed
    end(procs)                                              # SIGTERM, then SIGKILL after GRACE_S

A result comes back over a pipe only the parent and that rank hold.  What a failed or hung rank has
to say travels as files in the shared workdir, one per rank (`rank_file`): "traceback" (written whole,
`write_whole`, the moment the rank raises) and "stack" (faulthandler's, on a crash or on SIGUSR1).
At the first failure the cause is named (a rank killed by a signal, else the first traceback, else the
first non-zero exit) and the others are ended; at the timeout every live rank's stack is collected.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import pathlib
import pickle
import signal
import time

from tpsim.errors import RankFailed, RunTimeout

GRACE_S = 3.0  # a failed rank's peers get this long to end after SIGTERM before SIGKILL
SETTLE_S = 0.5  # after the first failure, wait this long for other exits before naming the cause


def rank_file(wd: pathlib.Path, tag: str, kind: str, rank: int) -> pathlib.Path:
    return wd / f"{kind}-{tag}-rank{rank}.txt"  # "traceback" or "stack": text, never unpickled


def watch(procs: list, wd: pathlib.Path, tag: str, timeout: float, pipes: list) -> list:
    """Every rank's result once all have exited 0; RankFailed at the first failure or at the timeout.

    Results are read as they arrive, so a rank sending a large one is never blocked on a full pipe."""
    deadline = time.monotonic() + timeout
    results: dict[int, object] = {}
    while True:
        _receive(pipes, results)
        codes = [p.exitcode for p in procs]
        if all(c == 0 for c in codes):
            _receive(pipes, results)
            missing = [r for r in range(len(procs)) if r not in results]
            if missing:
                r = missing[0]
                raise RankFailed(r, 0, "exited 0 but sent no result", f"rank {r} gave no result")
            return [results[r] for r in range(len(procs))]
        bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
        raised = [r for r in range(len(procs)) if rank_file(wd, tag, "traceback", r).exists()]
        if bad or raised:
            _fail(procs, wd, tag, bad, raised)
        if time.monotonic() > deadline:
            _time_out(procs, wd, tag, timeout)
        waiting = [pipes[r] for r in range(len(procs)) if r not in results and not pipes[r].closed]
        multiprocessing.connection.wait(
            [p.sentinel for p in procs if p.exitcode is None] + waiting, timeout=0.1
        )


def _receive(pipes: list, results: dict) -> None:
    """Take every result that has arrived; a pipe closed without one is left to the exit code."""
    for r, conn in enumerate(pipes):
        if r in results or conn.closed or not conn.poll():
            continue
        try:
            results[r] = pickle.loads(conn.recv_bytes())  # from the rank itself, never from a file
        except EOFError:
            conn.close()


def _fail(procs: list, wd: pathlib.Path, tag: str, bad: list[int], raised: list[int]) -> None:
    """Name the cause: a rank killed by a signal, else the first to write a traceback (its peers fail
    after it, with "connection reset by peer"), else the first to exit non-zero."""
    multiprocessing.connection.wait([p.sentinel for p in procs if p.exitcode is None], timeout=SETTLE_S)
    codes = [p.exitcode for p in procs]
    killed = [r for r, c in enumerate(codes) if c is not None and c < 0]
    raised = [r for r in range(len(procs)) if rank_file(wd, tag, "traceback", r).exists()]
    stamps = {r: rank_file(wd, tag, "traceback", r).stat().st_mtime for r in raised}
    if killed:
        rank = killed[0]
    elif stamps:
        rank = min(stamps, key=lambda r: (stamps[r], r))
    else:
        rank = next(r for r, c in enumerate(codes) if c not in (None, 0))
    procs[rank].join(timeout=GRACE_S)  # give a raising rank time to exit, for its exit code
    code = procs[rank].exitcode
    text = read_text(rank_file(wd, tag, "traceback", rank))
    if not text:
        how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else "exited"
        crash = read_text(rank_file(wd, tag, "stack", rank))
        text = f"rank {rank} {how} (exit code {code}) without a Python traceback\n{crash}"
    end(procs)
    others = {r: _last_line(wd, tag, r, procs[r].exitcode) for r in range(len(procs)) if r != rank}
    raise RankFailed(rank, code, text, f"rank {rank} failed (exit code {code}); workdir {wd}", others)


def _last_line(wd: pathlib.Path, tag: str, rank: int, code: int | None) -> str:
    """One line for a rank that is not the cause: its exception, or how it ended."""
    lines = [ln for ln in read_text(rank_file(wd, tag, "traceback", rank)).splitlines() if ln.strip()]
    if lines:
        return lines[-1].strip()
    if code is not None and code < 0:
        return f"ended by {signal.Signals(-code).name} after the failure"
    return f"exited with code {code}"


def _time_out(procs: list, wd: pathlib.Path, tag: str, timeout: float) -> None:
    alive = [r for r, p in enumerate(procs) if p.exitcode is None]
    for r in alive:  # faulthandler writes each live rank's Python stack into its stack file
        os.kill(procs[r].pid, signal.SIGUSR1)
    time.sleep(0.5)
    stacks = "\n".join(
        f"--- stack of rank {r} ---\n{read_text(rank_file(wd, tag, 'stack', r))}" for r in alive
    )
    end(procs)
    raise RunTimeout(
        alive[0], None, stacks, f"run timed out after {timeout:g} s: ranks {alive} still running"
    )


def end(procs: list) -> None:
    """SIGTERM every live rank, then SIGKILL what is left after GRACE_S; reap all."""
    for p in procs:
        if p.pid is not None and p.exitcode is None:
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        if p.pid is not None:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                p.kill()
                p.join(timeout=GRACE_S)


def write_whole(path: pathlib.Path, text: str) -> None:
    """Whole or not at all: the parent may read the file the moment it appears."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_text(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
