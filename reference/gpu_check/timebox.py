"""A per-section time budget: `Budget.left()` for cooperative stops, and an alarm as a backstop.

A section checks `budget.expired` between units of work (one checker config, one GEMM shape) and
stops early; a unit that blocks past the budget plus `GRACE_S` is interrupted by SIGALRM, which
raises `SectionTimeout` in the main thread.  Either way the section is recorded as "cut short",
with the records it made so far.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

from reference.launch import RunTimeout
from tpsim.errors import ArgumentError, SectionTimeout

GRACE_S = 5.0  # a unit may overrun the cooperative deadline by this much before the alarm fires


class Budget:
    """Seconds a section may use, counted from its construction."""

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ArgumentError(f"a section budget must be > 0 seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    @property
    def expired(self) -> bool:
        return self.left() <= 0.0


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise SectionTimeout in the main thread after `seconds`; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise SectionTimeout(f"section ran past its budget ({seconds:.1f} s including {GRACE_S:g} s grace)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_section(fn, budget_s: float, records: list, *args) -> dict:
    """fn(budget, records, *args) under `budget_s`; returns {"status", "wall_s", "error"?}.

    status: "ok"; "mismatch" (a record says ok False); "cut short"; "failed" (an exception).

    fn appends its records as it makes them, so a cut-short section keeps what it finished.  fn
    returns True when it stopped early on its own (budget spent), else None.
    """
    budget = Budget(budget_s)
    out: dict = {}
    try:
        with alarm(budget_s + GRACE_S):
            stopped = fn(budget, records, *args)
        bad = [r for r in records if r.get("ok") is False]
        out["status"] = "cut short" if stopped else ("mismatch" if bad else "ok")
        if stopped:
            out["error"] = f"budget of {budget_s:g} s spent; later units skipped"
    except (SectionTimeout, RunTimeout) as e:  # the alarm, or the launcher's timeout (the budget left)
        out.update(status="cut short", error=str(e).splitlines()[0])
    except Exception as e:  # a failed section is recorded, and the next one runs
        out.update(status="failed", error=f"{type(e).__name__}: {e}")
    out["wall_s"] = budget.elapsed()
    return out
