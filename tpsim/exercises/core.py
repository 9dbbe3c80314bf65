"""The exercise checker: a learner's answer against a value the simulator measures, right or wrong and why.

    ex = Exercise("2.2", "Bytes each device sends ...", measure=_allgather_bytes, unit="bytes")
    ex(96)          # Result(ok=True,  "Right: 96 B. Each of the 4 devices sent ...")
    ex("1 KiB")     # Result(ok=False, "Not quite: you gave 1024 B. Hint: count what one device sends ...")
    ex.solution()   # the measured answer and why: only when asked for

A wrong answer gets a hint that points at the idea (and, for a tempting wrong value, what that value
would have meant), never the answer itself: the answer comes from `ex.solution()`.

A `Prediction` is a "predict, then run" exercise: `ex(answer)` records what the learner expects the
simulator to show, `ex.run()` runs it, prints the trace, and compares the prediction with it.

The expected value is never typed in: `measure` runs tpsim (a mesh, a layer, a collective) and
returns a `Measured`: the value, a sentence saying how it came about (with the simulator's own
numbers), and optionally tempting wrong values with what each would mean.  Results render as a
coloured box in Jupyter and as plain text elsewhere.

`ex()` (or `ex(None)`, unless None is one of the choices) shows the question as not answered yet.

Kinds of answer:
    number  an int or float; with unit="bytes" or "seconds" also a string such as "1.5 KiB" or
            "3 us".  Compared with math.isclose(rel_tol, abs_tol): exact unless a tolerance is given.
    choice  one of `choices` (case, spaces, "-" and "_" ignored: "Halving-Doubling" is fine); a choice
            may be None where the API itself says "nothing" with None.
    value   anything compared with == (tuples for shapes; lists are taken as tuples).

Measured and Result live in verdict.py, the reading of answers in answers.py; all are importable
from here.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tpsim.errors import AnswerError, ArgumentError
from tpsim.exercises.answers import choice_key, read_number, sentence
from tpsim.exercises.verdict import Measured, Result
from tpsim.report import fmt_bytes, fmt_time

KINDS = ("number", "choice", "value")
UNITS = ("bytes", "seconds", None)
PENDING = type("Pending", (), {"__repr__": lambda self: "PENDING"})()  # no answer given yet
EXERCISES: dict[str, Exercise] = {}  # key ("2.1") -> exercise, filled as lesson modules are imported


@dataclass
class Exercise:
    """One question whose answer the simulator measures.  Call it with an answer to check it."""

    key: str
    question: str
    measure: Callable[[], Measured]
    kind: str = "number"
    unit: str | None = None
    rel_tol: float = 0.0
    abs_tol: float = 0.0
    choices: Sequence[str | None] = ()  # None: a choice that is the Python value None
    aliases: dict[str, str] = field(default_factory=dict)  # other names a choice goes by ("f" -> "copy_to")
    hint: str = ""  # the idea a wrong answer is pointed at (never the answer)
    _measured: Measured | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            valid = ", ".join(KINDS)
            raise ArgumentError(f"exercise {self.key}: kind {self.kind!r} is unknown; valid: {valid}")
        if self.unit not in UNITS:
            raise ArgumentError(
                f"exercise {self.key}: unit {self.unit!r} is unknown; valid: bytes, seconds, None"
            )
        if self.kind == "choice" and not self.choices:
            raise ArgumentError(f"exercise {self.key}: a choice exercise needs its choices")
        EXERCISES[self.key] = self

    def measured(self) -> Measured:
        """Run the simulator (once; the measurement is deterministic) and return what it found."""
        if self._measured is None:
            self._measured = self.measure()
        return self._measured

    def check(self, answer=PENDING) -> Result:
        """Right, or a hint.  No answer (or None, unless None is a choice) means "not answered yet"; an
        answer of the wrong kind raises AnswerError, saying what kind is expected."""
        if self._pending(answer):
            return Result(self.key, False, f"No answer yet: {self.expects()}.", pending=True)
        given = self.parse(answer)
        m = self.measured()
        expected = self.parse(m.value)
        if self.matches(given, expected):
            return Result(self.key, True, f"Right: {self.show(expected)}. {m.why}", given, expected)
        return Result(self.key, False, f"Not quite: you gave {self.show(given)}. {self.nudge(given)}", given)

    __call__ = check

    def nudge(self, given) -> str:
        """The hint for a wrong answer: what a tempting value would mean, then the idea; not the answer."""
        trap = self._trap(given)
        words = [f"{self.show(given)} is {trap}." if trap else ""]
        words.append(f"Hint: {sentence(self.hint)}" if self.hint else "")
        words.append(f"Try again, or call exercise {self.key}'s .solution() for the answer.")
        return " ".join(w for w in words if w)

    def solution(self) -> str:
        """The measured answer and why, for after you have tried."""
        m = self.measured()
        return f"Exercise {self.key}: {self.show(self.parse(m.value))}. {m.why}"

    def _trap(self, given) -> str | None:
        return next((h for value, h in self.measured().traps if self.matches(given, self.parse(value))), None)

    def _pending(self, answer) -> bool:
        return answer is PENDING or (answer is None and None not in self.choices)

    def expects(self) -> str:
        if self.kind == "choice":
            return "answer with one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "value":
            return "answer with a value (a tuple for a shape)"
        return {
            "bytes": "answer with a number of bytes, e.g. 1536 or '1.5 KiB'",
            "seconds": "answer with a time in seconds, e.g. 2.5e-05 or '25 us'",
            None: "answer with a number",
        }[self.unit]

    def parse(self, answer):
        """The answer in canonical form (a float, a choice name, a tuple), or AnswerError."""
        if self.kind == "number":
            return read_number(answer, self.unit, self.key, self.expects())
        if self.kind == "choice":
            if answer is None and None in self.choices:
                return None
            names = {choice_key(c): c for c in self.choices if c is not None}
            names |= {choice_key(a): c for a, c in self.aliases.items()}
            if isinstance(answer, str) and None in self.choices and choice_key(answer) in ("none", "nothing"):
                raise AnswerError(
                    f"exercise {self.key}: {answer!r} is a string; the API says 'nothing' with "
                    f"None, so answer None (no quotes); {self.expects()}"
                )
            if not isinstance(answer, str) or choice_key(answer) not in names:
                raise AnswerError(f"exercise {self.key}: {answer!r} is not a choice; {self.expects()}")
            return names[choice_key(answer)]
        if isinstance(answer, list | np.ndarray):
            return tuple(np.asarray(answer).tolist())
        return answer

    def matches(self, given, expected) -> bool:
        if self.kind == "number":
            return math.isclose(given, expected, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        return given == expected

    def show(self, value) -> str:
        if self.kind != "number":
            return repr(value)
        if self.unit == "bytes":
            exact = f"{value:,.0f} B" if float(value).is_integer() else f"{value:,.1f} B"
            pretty = fmt_bytes(value)
            return exact if pretty.endswith(" B") else f"{exact} ({pretty})"
        if self.unit == "seconds":
            return fmt_time(value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def _repr_html_(self) -> str:
        return (
            f'<div style="border-left: 6px solid #1565c0; padding: 6px 12px; margin: 4px 0;">'
            f"<b>Exercise {html.escape(self.key)}.</b> {html.escape(self.question)}"
            f"<br><i>{html.escape(self.expects())}.</i></div>"
        )

    def __repr__(self) -> str:
        return f"Exercise {self.key}: {self.question} ({self.expects()})"


@dataclass(repr=False)  # keep Exercise.__repr__ (the question), not a field dump
class Prediction(Exercise):
    """Predict, then run: `ex(answer)` records a prediction, `ex.run()` runs the simulator, shows its
    trace and compares.  The measure's Measured carries the trace text to show (`Measured.trace`)."""

    prediction: object = field(default=PENDING, init=False, repr=False)

    def check(self, answer=PENDING) -> Result:
        if self._pending(answer):
            return Result(
                self.key, False, f"No prediction yet: {self.expects()}, then call .run().", pending=True
            )
        self.prediction = self.parse(answer)
        return Result(
            self.key,
            False,
            f"Prediction recorded: {self.show(self.prediction)}. Now run it: "
            f"exercise {self.key}'s .run() shows the trace and compares.",
            self.prediction,
            pending=True,
        )

    __call__ = check

    def run(self) -> Result:
        """Run the simulator, show its trace, and compare the recorded prediction with it."""
        m = self.measured()
        measured = self.parse(m.value)
        if self.prediction is PENDING:
            return Result(
                self.key,
                False,
                f"Predict first: call exercise {self.key} with your answer, then .run() again.",
                pending=True,
                detail=m.trace,
            )
        if self.matches(self.prediction, measured):
            return Result(
                self.key,
                True,
                f"Right: you predicted {self.show(self.prediction)} and the trace "
                f"shows {self.show(measured)}. {m.why}",
                self.prediction,
                measured,
                detail=m.trace,
            )
        # the run shows the trace, so the measured value is no secret any more: compare, and point at the idea
        trap = self._trap(self.prediction)
        words = f" {self.show(self.prediction)} is {trap}." if trap else ""
        words += f" Hint: {sentence(self.hint)}" if self.hint else ""
        message = f"Not quite: you predicted {self.show(self.prediction)}; "
        message += f"the trace shows {self.show(measured)}."
        return Result(self.key, False, message + words, self.prediction, measured, detail=m.trace)


def check(key: str, answer=PENDING) -> Result:
    """Check an answer to exercise `key` ("3.2"), loading its lesson's exercises if needed."""
    exercise = lookup(key)
    return exercise.check(answer)


def lookup(key: str) -> Exercise:
    if key not in EXERCISES and isinstance(key, str) and re.fullmatch(r"\d+\.\d+", key):
        module = f"tpsim.exercises.lesson{int(key.split('.')[0]):02d}"
        if importlib.util.find_spec(module) is not None:  # a lesson not written yet is not an error here
            importlib.import_module(module)
    if key not in EXERCISES:
        known = ", ".join(sorted(EXERCISES, key=lambda k: tuple(map(int, k.split(".")))))
        raise AnswerError(f"no exercise {key!r}; known so far: {known or 'none'} (keys look like '2.1')")
    return EXERCISES[key]
