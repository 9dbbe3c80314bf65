"""The one check every exercise gets: the right answer passes; a wrong one gets the hint, not the answer."""

from __future__ import annotations

from tpsim.exercises.core import Prediction


def answer(exercise, value):
    """Check `value`; a predict-then-run exercise records it as the prediction, then runs and compares."""
    result = exercise(value)
    return exercise.run() if isinstance(exercise, Prediction) else result


def right_passes_and_wrongs_get_the_hint(exercise, right, wrongs) -> None:
    ok = answer(exercise, right)
    assert ok.ok and ok.message.startswith("Right: "), ok.message
    for wrong in wrongs:
        bad = answer(exercise, wrong)
        assert not bad.ok and bad.message.startswith("Not quite: you "), bad.message
        assert exercise.hint and exercise.hint in bad.message, bad.message
    assert exercise.show(exercise.parse(exercise.measured().value)) in exercise.solution()
