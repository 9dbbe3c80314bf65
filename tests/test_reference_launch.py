"""reference.launch: backend choice, spawn, torchrun, and runs that end (never hang) when a rank fails."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from reference.backend import Backend, LaunchError, choose_backend
from reference.launch import RankFailed, RunTimeout, spawn
from tpsim.errors import TpsimError

FAIL_WITHIN_S = 30.0  # the bound: a failed rank ends the whole run within 30 s


def _gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


@pytest.mark.parametrize(
    ("gpus", "world_size", "want"),
    [
        (4, 4, Backend("nccl", "cuda", False)),  # one GPU per rank
        (8, 2, Backend("nccl", "cuda", False)),
        (2, 4, Backend("gloo", "cuda", True)),  # ranks share GPUs: gloo, staged through the CPU
        (1, 2, Backend("gloo", "cuda", True)),
        (0, 4, Backend("gloo", "cpu", False)),  # no CUDA
    ],
)
def test_choose_backend_auto(monkeypatch, gpus, world_size, want):
    _gpus(monkeypatch, gpus)
    assert choose_backend(world_size) == want


def test_choose_backend_overrides(monkeypatch):
    _gpus(monkeypatch, 4)
    assert choose_backend(2, device="cpu") == Backend("gloo", "cpu", False)
    assert choose_backend(2, backend="gloo") == Backend("gloo", "cuda", True)
    assert choose_backend(4, device="cuda", backend="nccl") == Backend("nccl", "cuda", False)
    _gpus(monkeypatch, 0)
    assert choose_backend(1, backend="gloo") == Backend("gloo", "cpu", False)


@pytest.mark.parametrize(
    ("gpus", "kw", "says"),
    [
        (2, {"world_size": 4, "backend": "nccl"}, "world_size 4 > 2 GPUs"),
        (4, {"world_size": 2, "backend": "nccl", "device": "cpu"}, "needs CUDA tensors"),
        (0, {"world_size": 2, "backend": "nccl"}, "no CUDA device"),
        (0, {"world_size": 2, "device": "cuda"}, "device='cuda'"),
        (0, {"world_size": 2, "backend": "mpi"}, "'mpi' is unknown"),
        (0, {"world_size": 2, "device": "tpu"}, "'tpu' is unknown"),
        (0, {"world_size": 0}, "world_size must be an int >= 1, got 0"),
    ],
)
def test_choose_backend_rejects(monkeypatch, gpus, kw, says):
    _gpus(monkeypatch, gpus)
    with pytest.raises(LaunchError, match=says) as err:
        choose_backend(**kw)
    assert isinstance(err.value, TpsimError)


def _describe(ctx, scale):
    x = torch.full((3,), float(ctx.rank + 1))
    dist.all_reduce(x)
    same_dir = (ctx.workdir / f"seen-{ctx.rank}").write_text("x") and ctx.workdir.is_dir()
    return {
        "rank": ctx.rank,
        "world": (ctx.world_size, dist.get_world_size(), dist.get_rank()),
        "backend": ctx.backend,
        "device": str(ctx.device),
        "sum": (x * scale).tolist(),
        "workdir": same_dir,
    }


@pytest.mark.multiprocess
def test_spawn_runs_every_rank_and_returns_results_in_rank_order(tmp_path):
    out = spawn(_describe, 3, 10.0, device="cpu", workdir=tmp_path, timeout=60)
    assert [o["rank"] for o in out] == [0, 1, 2]
    assert [o["world"] for o in out] == [(3, 3, 0), (3, 3, 1), (3, 3, 2)]
    assert all(o["backend"] == Backend("gloo", "cpu", False) and o["device"] == "cpu" for o in out)
    assert [o["sum"] for o in out] == [[60.0] * 3] * 3  # (1 + 2 + 3) * 10 on every rank
    assert sorted(p.name for p in tmp_path.glob("seen-*")) == ["seen-0", "seen-1", "seen-2"]
    assert not dist.is_initialized()  # the parent never joins a process group


def _raise_on_rank_1(ctx):
    if ctx.rank == 1:
        raise ValueError("rank 1 cannot go on: bad shard (4, 6)")
    dist.all_reduce(torch.ones(2))  # rank 0 waits here for a peer that is gone
    return "unreachable"


def _kill_rank_1(ctx):
    if ctx.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(torch.ones(2))
    return "unreachable"


def _hang_rank_1(ctx):
    if ctx.rank == 1:
        time.sleep(600)
    dist.all_reduce(torch.ones(2))


@pytest.mark.multiprocess
def test_a_raising_rank_ends_the_run_with_its_traceback():
    start = time.monotonic()
    with pytest.raises(RankFailed) as err:
        spawn(_raise_on_rank_1, 2, device="cpu", timeout=120)
    assert time.monotonic() - start < FAIL_WITHIN_S
    e = err.value
    assert (e.rank, e.exitcode) == (1, 1)
    assert "ValueError: rank 1 cannot go on: bad shard (4, 6)" in e.traceback
    assert "_raise_on_rank_1" in e.traceback and "rank 1 failed (exit code 1)" in str(e)


@pytest.mark.multiprocess
def test_a_killed_rank_ends_the_run_with_its_exit_code():
    start = time.monotonic()
    with pytest.raises(RankFailed) as err:
        spawn(_kill_rank_1, 2, device="cpu", timeout=120)
    assert time.monotonic() - start < FAIL_WITHIN_S
    assert (err.value.rank, err.value.exitcode) == (1, -signal.SIGKILL)
    assert "killed by SIGKILL" in err.value.traceback


@pytest.mark.multiprocess
def test_a_hang_ends_at_the_timeout_with_the_stacks_of_live_ranks():
    start = time.monotonic()
    with pytest.raises(RunTimeout) as err:
        spawn(_hang_rank_1, 2, device="cpu", timeout=6, pg_timeout=120)
    assert time.monotonic() - start < FAIL_WITHIN_S
    assert err.value.exitcode is None and "ranks [0, 1] still running" in str(err.value)
    assert "_hang_rank_1" in err.value.traceback  # rank 1's stack shows where it sleeps
    assert "all_reduce" in err.value.traceback  # rank 0's shows the collective it waits in


def _module(*args, launcher=()):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, *launcher, "-m", "reference.smoke", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.multiprocess
def test_an_entry_point_exits_nonzero_with_the_failing_rank_traceback():
    done = _module("--world-size", "2", "--device", "cpu", "--fail-rank", "1")
    assert done.returncode == 1
    assert "error: rank 1 failed (exit code 1)" in done.stderr
    assert "RuntimeError: rank 1 fails on purpose (--fail-rank 1)" in done.stderr


@pytest.mark.multiprocess
def test_the_same_entry_point_runs_under_torchrun():
    done = _module("--device", "cpu", launcher=("-m", "torch.distributed.run", "--nproc-per-node", "2"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("all_reduce of the ranks: 1.0") == 2  # one line per rank, 0 + 1


def _tcp_local_addresses(ctx):
    """The local address of every TCP socket this rank holds, after a collective."""
    dist.all_reduce(torch.ones(2))
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.islink(f"/proc/self/fd/{fd}") else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    out.append(fields[1].split(":")[0])  # hex local address
    return out


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@pytest.mark.multiprocess
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads /proc/net/tcp (Linux)")
def test_spawned_ranks_talk_over_loopback_only(monkeypatch):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    addresses = spawn(_tcp_local_addresses, 2, device="cpu", timeout=60)
    assert all(addresses), "each rank holds gloo's TCP pairs"
    assert {a for per_rank in addresses for a in per_rank} <= LOOPBACK


@pytest.mark.multiprocess
def test_a_failure_reports_the_cause_first_and_last_and_each_peer_in_one_line(capfd):
    with pytest.raises(RankFailed) as err:
        spawn(_raise_on_rank_1, 3, device="cpu", timeout=120)
    lines = str(err.value).splitlines()
    cause = "ValueError: rank 1 cannot go on: bad shard (4, 6)"
    assert lines[0].startswith("rank 1 failed") and lines[-1] == cause
    peers = [ln for ln in lines if ln.startswith(("rank 0: ", "rank 2: "))]
    assert len(peers) == 2 and sorted(err.value.others) == [0, 2]
    assert str(err.value).count("Traceback (most recent call last)") == 1  # the cause's, only
    assert "Traceback" not in capfd.readouterr().err  # no rank printed its own


@pytest.mark.parametrize(
    ("kw", "error", "says"),
    [
        ({"world_size": 0}, LaunchError, "world_size must be an int >= 1, got 0"),
        ({"world_size": -1}, LaunchError, "got -1"),
        ({"world_size": 2, "timeout": -1}, LaunchError, r"timeout = -1 s; valid: a number of seconds > 0"),
        ({"world_size": 2, "timeout": 5, "pg_timeout": 0}, LaunchError, "pg_timeout = 0"),
        ({"world_size": 10_000}, LaunchError, r"world_size 10000 is more processes .*--oversubscribe"),
    ],
)
def test_spawn_refuses_before_starting_a_process(tmp_path, kw, error, says):
    with pytest.raises(error, match=says):
        spawn(_describe, device="cpu", workdir=tmp_path / "wd", **kw)
    assert not (tmp_path / "wd").exists()  # refused before the workdir was made
