"""Lesson 11's exercises: the right answer passes; two wrong ones get the hint, never the answer."""

from __future__ import annotations

import math

import pytest
from exercise_checks import right_passes_and_wrongs_get_the_hint

from tpsim.exercises import lesson11
from tpsim.exercises.core import Prediction

CASES = [  # (exercise, right, two wrong answers)
    (lesson11.mystery_tensor, "out", ("grad.bias", "dx")),  # the bias is added t times in forward only
    (lesson11.mystery_factor, 4 - 1, (4, 0)),  # t b instead of b: (t - 1) b too much
    (lesson11.norm_inflation, math.sqrt(8), (8, 1)),  # every param replicated: 8 ||g||^2 under the root
]


@pytest.mark.parametrize(("exercise", "right", "wrongs"), CASES, ids=[c[0].key for c in CASES])
def test_right_answer_passes_and_wrong_ones_get_a_hint(exercise, right, wrongs):
    right_passes_and_wrongs_get_the_hint(exercise, right, wrongs)


def test_lesson_11_has_a_predict_then_run_exercise():
    assert lesson11.EXERCISES and any(isinstance(e, Prediction) for e in lesson11.EXERCISES)
