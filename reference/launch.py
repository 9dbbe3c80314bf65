"""Launching ranks: one process group per rank, and a run that never hangs (backend choice: backend.py).

    spawn(fn, 4, x)                 -> [fn(ctx0, x), fn(ctx1, x), ...], one process per rank
    run(fn, 4, x)                   -> spawn(...), or this rank's fn(ctx, x) under torchrun
    main(fn, 4, x)                  -> run(...), but a failed rank exits non-zero with its traceback

Each rank's result and traceback travel through files in a shared `workdir` (no queues). The parent
watches every rank: when one raises or dies, the others are ended and `RankFailed` carries that rank's
number, exit code and traceback. A run that outlives `timeout` is ended the same way, with the Python
stack of every rank still running (faulthandler, on SIGUSR1) so that a hang says where it hung (the
parent's watch: launch_watch.py).
"""

from __future__ import annotations

import faulthandler
import os
import pathlib
import pickle
import shutil
import signal
import socket
import sys
import tempfile
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
from reference.launch_watch import end, rank_file, watch, write_whole
from tpsim.errors import RankFailed, TpsimError, WorldSizeError
from tpsim.errors import RunTimeout as RunTimeout  # raised by launch_watch; imported from here too


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
        results = watch(procs, wd, tag, timeout, [r for r, _ in pipes])
    finally:
        end(procs)
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


def _rank_main(fn, args, rank, world_size, backend, init_method, workdir, tag, pg_timeout, sender) -> None:
    """The body of one rank's process: process group, fn, result down the pipe; a traceback file on
    failure, and exit code 1 without printing it (the parent reports it, the cause first)."""
    wd = pathlib.Path(workdir)
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # one machine: bind to loopback only
        os.environ.setdefault(name, loopback_interface())
    stack = open(rank_file(wd, tag, "stack", rank), "w")  # noqa: SIM115 -- open for the life of the process
    faulthandler.enable(file=stack, all_threads=True)  # a crash (SIGSEGV, SIGABRT) leaves its stack
    faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)  # the parent asks on a hang
    if "OMP_NUM_THREADS" not in os.environ and world_size > 1:
        torch.set_num_threads(1)  # as torchrun does: N ranks on shared cores, no oversubscription
    failed = rank_file(wd, tag, "traceback", rank)
    try:
        with process_group(rank, world_size, backend, init_method, pg_timeout):
            ctx = RankContext(rank, world_size, backend, rank_device(backend, rank), wd)
            try:
                result = fn(ctx, *args)
            except BaseException:
                write_whole(failed, tb.format_exc())  # before destroy_process_group, which may block
                raise
        sender.send_bytes(pickle.dumps(result, pickle.HIGHEST_PROTOCOL))  # plain pickle: no shared fds
        sender.close()
    except BaseException:
        if not failed.exists():
            write_whole(failed, tb.format_exc())
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # at once, printing nothing: no interpreter teardown (seconds with torch loaded)
    sys.stdout.flush()
    sys.stderr.flush()
    # done, result sent: skip the teardown too, where a C++ thread torch left joinable can abort the
    # process ("terminate called without an active exception", seen once in a DTensor run)
    os._exit(0)
