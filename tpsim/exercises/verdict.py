"""What an exercise's measure returns, and the verdict on an answer (text, or a coloured box in Jupyter).

    Measured(96, "Each of the 4 devices sent ...", traps=((384, "what all 4 devices send together"),))
    Result("2.2", ok=True, message="Right: 96 B. ...")   # bool(result) is result.ok

A `Measured` is the expected value with its reasons, never typed in: an exercise's measure runs tpsim
to get it.  A `Result` prints as its message (and a Prediction's trace); in Jupyter it is a box,
green when right, red when wrong, grey while the answer is pending.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """What the simulator measured, and why, in words that quote its numbers."""

    value: object
    why: str
    traps: tuple[tuple[object, str], ...] = ()  # (a tempting wrong answer, what it would have meant)
    trace: str = ""  # what a Prediction's run() prints: the simulator's own trace, as text


@dataclass(frozen=True)
class Result:
    """The verdict on one answer.  `ok` is True only for a right answer; bool(result) is `ok`."""

    exercise: str
    ok: bool
    message: str
    answer: object = None
    expected: object = None
    pending: bool = False  # no answer given yet, or a prediction waiting for its run
    detail: str = ""  # a Prediction's trace, shown under the message

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return f"{self.message}\n{self.detail}" if self.detail else self.message

    def __repr__(self) -> str:
        return f"Result(exercise={self.exercise!r}, ok={self.ok}, message={self.message!r})"

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.ok else "#9e9e9e" if self.pending else "#c62828"
        head, _, rest = self.message.partition(":")
        return (
            f'<div style="border-left: 6px solid {colour}; padding: 6px 12px; margin: 4px 0;">'
            f"<b>Exercise {html.escape(self.exercise)} &mdash; {html.escape(head)}:</b>"
            f"{html.escape(rest)}"
            + (f"<pre>{html.escape(self.detail)}</pre>" if self.detail else "")
            + "</div>"
        )
