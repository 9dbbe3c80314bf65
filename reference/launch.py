"""Launching ranks: one process group per rank, and a run that never hangs (backend choice: backend.py).

    spawn(fn, 4, x)                 -> [fn(ctx0, x), fn(ctx1, x), ...], one process per rank
    run(fn, 4, x)                   -> spawn(...), or this rank's fn(ctx, x) under torchrun
    main(fn, 4, x)                  -> run(...), but a failed rank exits non-zero with its traceback

Each rank's result and traceback travel through files in a shared `workdir` (no queues). The parent
watches every rank: when one raises or dies, the others are ended and `RankFailed` carries that rank's
number, exit code and traceback. A run that outlives `timeout` is ended the same way, with the Python
stack of every rank still running (faulthandler, on SIGUSR1) so that a hang says where it hung.
"""

from __future__ import annotations

import faulthandler
import multiprocessing.connection
import os
import pathlib
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback as tb
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reference import launch_checks
from reference.backend import Backend, LaunchError, choose_backend, rank_device
from tpsim.errors import RankFailed, RunTimeout, TpsimError, WorldSizeError

GRACE_S = 3.0  # a failed rank's peers get this long to end after SIGTERM before SIGKILL
SETTLE_S = 0.5  # after the first failure, wait this long for other exits before naming the cause


@dataclass
class RankContext:
    """What a rank function receives as its first argument."""

    rank: int
    world_size: int
    backend: Backend
    device: torch.device
    workdir: pathlib.Path  # shared by all ranks: results, tracebacks, logs


@contextmanager
def process_group(rank: int, world_size: int, backend: Backend, init_method: str, timeout_s: float = 60.0):
    """init_process_group with a timeout on every collective; destroy_process_group always, on any exit."""
    if backend.name == "nccl":
        torch.cuda.set_device(rank_device(backend, rank))
    dist.init_process_group(
        backend.name,
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(
    fn: Callable,
    world_size: int,
    *args,
    device: str = "auto",
    backend: str | None = None,
    timeout: float = 120.0,
    workdir: str | os.PathLike | None = None,
    pg_timeout: float | None = None,
    oversubscribe: bool = False,
) -> list:
    """Run fn(ctx, *args) on `world_size` fresh processes; return [rank 0's result, rank 1's, ...].

    fn must be a module-level function, and its result picklable: it comes back over a pipe that only
    the parent and that rank hold, never through a file. Without `workdir` a temporary one is used,
    removed after a clean run and kept (named in the error) after a failure. `pg_timeout` bounds each
    collective (default: `timeout`). More ranks than `launch_checks.max_ranks()` need `oversubscribe`.
    """
    chosen = choose_backend(world_size, device, backend)
    timeout = launch_checks.check_timeout("timeout", timeout)
    pg_timeout = launch_checks.check_timeout("pg_timeout", timeout if pg_timeout is None else pg_timeout)
    launch_checks.check_ranks(world_size, oversubscribe)
    keep = workdir is not None
    wd = pathlib.Path(workdir) if keep else pathlib.Path(tempfile.mkdtemp(prefix="tpsim-ref-"))
    wd.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]  # a workdir may be reused: every run gets its own file names
    init_method = f"file://{wd.resolve()}/rendezvous-{tag}"
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe(duplex=False) for _ in range(world_size)]  # (parent's end, the rank's end)
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(fn, args, rank, world_size, chosen, init_method, str(wd), tag, pg_timeout, pipes[rank][1]),
            name=f"tpsim-rank-{rank}",
            daemon=False,
        )
        for rank in range(world_size)
    ]
    try:
        for p, (_, sender) in zip(procs, pipes, strict=True):
            p.start()
            sender.close()  # the rank holds it now: its exit closes the pipe
        results = _watch(procs, wd, tag, timeout, [r for r, _ in pipes])
    finally:
        _end(procs)
    if not keep:
        shutil.rmtree(wd, ignore_errors=True)
    return results


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def run(fn: Callable, world_size: int | None, *args, **kw) -> list | object:
    """Under torchrun: this rank's fn(ctx, *args) (init from env://). Otherwise spawn(fn, world_size, ...).

    `world_size=None` takes torchrun's; given, it must match. Keywords as for `spawn`.
    """
    if not under_torchrun():
        if world_size is None:
            raise LaunchError("world_size=None is only valid under torchrun; pass the number of ranks")
        return spawn(fn, world_size, *args, **kw)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size is not None and world_size != size:
        raise WorldSizeError(
            f"rank {rank}: asked for world_size {world_size} but torchrun started {size} ranks; "
            f"pass --nproc-per-node {world_size} or a world size of {size}"
        )
    chosen = choose_backend(size, kw.get("device", "auto"), kw.get("backend"))
    if chosen.device_type == "cuda":  # torchrun's LOCAL_RANK picks the GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    wd = pathlib.Path(kw.get("workdir") or tempfile.gettempdir())
    timeout = kw.get("pg_timeout") or kw.get("timeout", 120.0)
    with process_group(rank, size, chosen, "env://", timeout):
        device = torch.device("cuda", torch.cuda.current_device()) if chosen.device_type == "cuda" else None
        ctx = RankContext(rank, size, chosen, device or torch.device("cpu"), wd)
        return fn(ctx, *args)


def main(fn: Callable, world_size: int | None, *args, **kw) -> list | object:
    """`run` for `python -m reference.X`: a failed rank prints its traceback (exit 1), a refusal why (2)."""
    try:
        return run(fn, world_size, *args, **kw)
    except RankFailed as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except TpsimError as err:  # refused before any rank started: a usage error
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def loopback_interface() -> str:
    """The loopback interface's name ("lo" on Linux, "lo0" on macOS)."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"


def _path(wd: pathlib.Path, tag: str, kind: str, rank: int) -> pathlib.Path:
    return wd / f"{kind}-{tag}-rank{rank}.txt"  # "traceback" or "stack": text, never unpickled


def _rank_main(fn, args, rank, world_size, backend, init_method, workdir, tag, pg_timeout, sender) -> None:
    """The body of one rank's process: process group, fn, result down the pipe; a traceback file on
    failure, and exit code 1 without printing it (the parent reports it, the cause first)."""
    wd = pathlib.Path(workdir)
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # one machine: bind to loopback only
        os.environ.setdefault(name, loopback_interface())
    stack = open(_path(wd, tag, "stack", rank), "w")  # noqa: SIM115 -- open for the life of the process
    faulthandler.enable(file=stack, all_threads=True)  # a crash (SIGSEGV, SIGABRT) leaves its stack
    faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)  # the parent asks on a hang
    if "OMP_NUM_THREADS" not in os.environ and world_size > 1:
        torch.set_num_threads(1)  # as torchrun does: N ranks on shared cores, no oversubscription
    failed = _path(wd, tag, "traceback", rank)
    try:
        with process_group(rank, world_size, backend, init_method, pg_timeout):
            ctx = RankContext(rank, world_size, backend, rank_device(backend, rank), wd)
            try:
                result = fn(ctx, *args)
            except BaseException:
                _write(failed, tb.format_exc())  # before destroy_process_group, which may block
                raise
        sender.send_bytes(pickle.dumps(result, pickle.HIGHEST_PROTOCOL))  # plain pickle: no shared fds
        sender.close()
    except BaseException:
        if not failed.exists():
            _write(failed, tb.format_exc())
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # at once, printing nothing: no interpreter teardown (seconds with torch loaded)
    sys.stdout.flush()
    sys.stderr.flush()
    # done, result sent: skip the teardown too, where a C++ thread torch left joinable can abort the
    # process ("terminate called without an active exception", seen once in a DTensor run)
    os._exit(0)


def _watch(procs: list, wd: pathlib.Path, tag: str, timeout: float, pipes: list) -> list:
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
        raised = [r for r in range(len(procs)) if _path(wd, tag, "traceback", r).exists()]
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
    raised = [r for r in range(len(procs)) if _path(wd, tag, "traceback", r).exists()]
    stamps = {r: _path(wd, tag, "traceback", r).stat().st_mtime for r in raised}
    if killed:
        rank = killed[0]
    elif stamps:
        rank = min(stamps, key=lambda r: (stamps[r], r))
    else:
        rank = next(r for r, c in enumerate(codes) if c not in (None, 0))
    procs[rank].join(timeout=GRACE_S)  # give a raising rank time to exit, for its exit code
    code = procs[rank].exitcode
    text = _read(_path(wd, tag, "traceback", rank))
    if not text:
        how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else "exited"
        crash = _read(_path(wd, tag, "stack", rank))
        text = f"rank {rank} {how} (exit code {code}) without a Python traceback\n{crash}"
    _end(procs)
    others = {r: _last_line(wd, tag, r, procs[r].exitcode) for r in range(len(procs)) if r != rank}
    raise RankFailed(rank, code, text, f"rank {rank} failed (exit code {code}); workdir {wd}", others)


def _last_line(wd: pathlib.Path, tag: str, rank: int, code: int | None) -> str:
    """One line for a rank that is not the cause: its exception, or how it ended."""
    lines = [ln for ln in _read(_path(wd, tag, "traceback", rank)).splitlines() if ln.strip()]
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
    stacks = "\n".join(f"--- stack of rank {r} ---\n{_read(_path(wd, tag, 'stack', r))}" for r in alive)
    _end(procs)
    raise RunTimeout(
        alive[0], None, stacks, f"run timed out after {timeout:g} s: ranks {alive} still running"
    )


def _end(procs: list) -> None:
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


def _write(path: pathlib.Path, text: str) -> None:
    """Whole or not at all: the parent may read the file the moment it appears."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
