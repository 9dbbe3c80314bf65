"""What `spawn` refuses before it starts a process: a timeout that is not > 0, and more ranks than
this machine can run (RANKS_PER_CORE per core, at least MIN_RANKS) unless oversubscription is asked."""

from __future__ import annotations

import argparse
import os
from numbers import Real

from tpsim.errors import LaunchError

RANKS_PER_CORE = 4  # gloo ranks on CPU time-share the cores; beyond this a run only thrashes
MIN_RANKS = 8  # a small machine may still run every world size the tests use


def check_timeout(name: str, seconds) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, Real) or not seconds > 0:
        raise LaunchError(f"{name} = {seconds!r} s; valid: a number of seconds > 0")
    return float(seconds)


def max_ranks() -> int:
    return max(MIN_RANKS, RANKS_PER_CORE * (os.cpu_count() or 1))


def check_ranks(world_size: int, oversubscribe: bool) -> None:
    """Refuse a world size beyond what the cores can hold, unless `oversubscribe`."""
    if world_size > max_ranks() and not oversubscribe:
        raise LaunchError(
            f"world_size {world_size} is more processes than this machine runs well: {os.cpu_count()} "
            f"cores, at most {max_ranks()} ranks ({RANKS_PER_CORE} per core); pass oversubscribe=True "
            "(--oversubscribe) to spawn them anyway"
        )


def positive(kind):
    """An argparse type: an int or float > 0 (a world size, a timeout)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; valid: {what} > 0")
        return value

    return parse
