"""Lesson 12's exercises: the right answer passes; two wrong ones get the hint, never the answer."""

from __future__ import annotations

import pytest
from exercise_checks import right_passes_and_wrongs_get_the_hint

from tpsim.exercises import lesson12
from tpsim.exercises.core import Prediction

CASES = [  # (exercise, right, two wrong answers)
    # 2 x 80 layers x 1 KV head x 128 x 2 B: past t = g = 8 each rank still holds a whole KV head
    (lesson12.kv_per_token_t16, 2 * 80 * 1 * 128 * 2, ("20 KiB", 2 * 80 * 8 * 128 * 2)),
    # 32 x 8192 x 2 B = 512 KiB: past one-shot's reach, ring's 14 alphas still too many
    (lesson12.fastest_decode_allreduce, "two-shot", ("one-shot", "ring")),
    # (0.9 x 80 GiB - 32.86 GiB) // 80 KiB = 513,068 tokens; // 8192
    (lesson12.max_batch_t4, 62, (125, 177)),
]


@pytest.mark.parametrize(("exercise", "right", "wrongs"), CASES, ids=[c[0].key for c in CASES])
def test_right_answer_passes_and_wrong_ones_get_a_hint(exercise, right, wrongs):
    right_passes_and_wrongs_get_the_hint(exercise, right, wrongs)


def test_lesson_12_has_a_predict_then_run_exercise():
    assert lesson12.EXERCISES and any(isinstance(e, Prediction) for e in lesson12.EXERCISES)


def test_the_right_answers_follow_from_the_definitions():
    """40 KiB at t = 16 is t = 8's figure; 62 sequences is the tokens that fit over 8192."""
    from tpsim.hardware import device_spec
    from tpsim.serve import kv_cache_bytes_per_token, max_cached_tokens

    cfg = lesson12.MODEL
    assert kv_cache_bytes_per_token(cfg, 16) == kv_cache_bytes_per_token(cfg, 8) == 40 * 1024
    assert max_cached_tokens(cfg, 4, device_spec("h100").memory) // 8192 == 62
