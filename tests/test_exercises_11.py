"""Lesson 11's exercises: the right answer, worked out from what each bug does, passes; a wrong one fails."""

from __future__ import annotations

import math

import pytest

from tpsim.exercises import check, lesson11  # noqa: F401 -- importing registers the exercises

RIGHT_WRONG = [
    ("11.1", "out", "grad.bias"),  # the bias is added t times in forward; backward is the correct one
    ("11.2", 4 - 1, 4),  # t b instead of b: (t - 1) b too much
    ("11.3", math.sqrt(8), 8),  # every param replicated: 8 ||g||^2 under the root
]


@pytest.mark.parametrize(("key", "right", "wrong"), RIGHT_WRONG, ids=[k for k, _, _ in RIGHT_WRONG])
def test_right_answer_passes_and_wrong_fails(key, right, wrong):
    assert check(key, right).ok, check(key, right).message
    bad = check(key, wrong)
    assert not bad.ok and "the simulator measured" in bad.message
