"""Lessons 6-10's exercises: the right answer, worked out here from closed forms, passes; a wrong one fails.

Each exercise measures its answer by running the simulator; the right answers below come from the
formulas the lessons teach (not from the exercise's own measurement), so a checker that measured the
wrong thing would fail here.
"""

from __future__ import annotations

import pytest

from tpsim.collectives.costs import ring_all_reduce
from tpsim.exercises import (
    AnswerError,
    Prediction,
    check,
    lesson06,
    lesson07,
    lesson08,
    lesson09,
    lesson10,
    lookup,
)
from tpsim.nn.config import PRESETS, korthikanti_activation_bytes
from tpsim.presets import PCIE, PCIE_ALPHA

MiB = 1 << 20


def gpt_parameters(cfg, padded_vocab: int) -> int:
    """Parameters of tpsim's GPT with tied embeddings: layers, padded word table, positions, final LN."""
    h, f = cfg.hidden, cfg.ffn
    layer = (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    return cfg.num_layers * layer + padded_vocab * h + cfg.seq_len * h + 2 * h


def _gpt3_1_3b_sp_activations() -> float:
    cfg, t = PRESETS["gpt3-1.3b"], 8
    return korthikanti_activation_bytes(cfg, t, True)  # the formula alone: within the 0.1% allowed


GPT3_1_3B = gpt_parameters(PRESETS["gpt3-1.3b"], 51200)  # V = 51200 is a multiple of 128 already

RIGHT_WRONG = [
    # key, right (closed form), two wrong answers
    ("6.1", -(-50257 // (128 * 4)) * (128 * 4) // 4, (50257 // 4, 51200 // 4)),
    ("6.2", 3 * 2 * 7 / 8 * 2048 * 1 * 2, (3 * 2048 * 2, 2 * 7 / 8 * 2048 * 51200 * 2)),
    ("6.3", None, ("all_reduce", "all_gather")),  # None, as the API says "no collective"
    ("7.1", 4 * 7 / 8 * 2048 * 2048 * 2, (2 * 7 / 8 * 2048 * 2048 * 2, 4 * 2048 * 2048 * 2)),
    ("7.2", _gpt3_1_3b_sp_activations(), (korthikanti_activation_bytes(PRESETS["gpt3-1.3b"], 8, False),
                                          korthikanti_activation_bytes(PRESETS["gpt3-1.3b"], 1, False))),
    ("7.3", "reduce_scatter", ("all_reduce", "all_gather")),
    ("8.1", ring_all_reduce(8, 64 * MiB, PCIE_ALPHA, PCIE[4]), (64 * MiB / PCIE[4], "1 ms")),
    ("8.2", "(2, 8) dp x tp", ("(8, 2) tp x dp",)),  # two layouts: the one wrong choice
    ("8.3", 2 * (2 - 1) / 2 * 64 * MiB, (2 * 64 * MiB, 8 * 64 * MiB)),
    ("9.1", 2 * 7 / 8 * 2 * GPT3_1_3B, (2 * GPT3_1_3B, 2 * 2 * GPT3_1_3B)),  # bf16 gradients, ring over d = 8
    ("9.2", (4 - 1) / (12 + 4 - 1), ((4 - 1) / 12, 0.5)),
    ("9.3", "DP8", ("PP8", "TP8")),
    ("10.1", 0.0, (1.0, -1e8)),  # float32: -1e8 + 1 == -1e8 in the ring's order, so the 1 is lost
    ("10.2", 2 * (2 - 1) / 2 * 1000 * 4, (1000 * 4 * 2, 1000)),
]


def answer(key, value):
    """Check `value`; a predict-then-run exercise records it as the prediction, then runs and compares."""
    ex = lookup(key)
    result = ex(value)
    return ex.run() if isinstance(ex, Prediction) else result


@pytest.mark.parametrize(("key", "right", "wrongs"), RIGHT_WRONG, ids=[k for k, _, _ in RIGHT_WRONG])
def test_right_answer_passes_and_wrong_ones_get_a_hint(key, right, wrongs):
    good = answer(key, right)
    assert good.ok, good.message
    assert good.message.startswith("Right")
    for wrong in wrongs:
        bad = answer(key, wrong)
        assert not bad.ok and not bad.pending, bad.message
        assert bad.message.startswith("Not quite") and lookup(key).hint in bad.message
        if not isinstance(lookup(key), Prediction):
            assert "measured" not in bad.message and ".solution()" in bad.message


def test_6_3_takes_none_and_refuses_the_string():
    """The old checker wanted the string 'none'; the API says "no collective" with None."""
    assert lesson06.backward_collective(None).message.startswith("Prediction recorded: None")
    assert lesson06.backward_collective.run().ok
    with pytest.raises(AnswerError, match="answer None"):
        lesson06.backward_collective("none")
    assert lesson06.backward_collective().pending


def test_10_1_explains_the_order_the_ring_adds_in():
    """The old explanation said 1e8 + 1 came first; the ring adds rank 1's 1 to rank 2's -1e8 first."""
    assert lesson10.reduction_chain() == [(1, 2, -1e8), (2, 0, 0.0)]
    why = lesson10.sum_order.measured().why
    assert why.index("rank 1 sends") < why.index("rank 2 sends") and "1 + -1e+08 rounds to -1e+08" in why
    assert "1e8 + 1 rounds" not in why


def test_units_and_traps_are_read():
    assert check("6.2", "21 KiB").ok  # 21504 B
    assert not check("8.1", "1 ms").ok
    assert "MiB" in lesson08.nic_bytes.solution()
    trap = lesson06.padded_rows(50257 / 4)
    assert not trap.ok and "without padding" in trap.message  # the trap names the mistake


def test_no_answer_is_pending_and_a_wrong_kind_is_refused():
    for ex in (lesson06.padded_rows, lesson07.row_parallel_collective, lesson08.nic_bytes, lesson09.bubble,
               lesson10.sum_order):
        r = ex(None)
        assert not r.ok and r.pending
    with pytest.raises(AnswerError, match="is not a choice"):
        lesson09.does_not_fit("TP16")
    with pytest.raises(AnswerError, match="not a number"):
        lesson07.sp_forward_bytes([1, 2])


def test_every_exercise_has_a_question_and_a_solution_that_quotes_its_measurement():
    for module in (lesson06, lesson07, lesson08, lesson09, lesson10):
        keys = [v for v in vars(module).values() if hasattr(v, "measure") and hasattr(v, "key")]
        assert 2 <= len(keys) <= 4, module.__name__
        assert any(isinstance(ex, Prediction) for ex in keys), module.__name__
        for ex in keys:
            assert ex.question.endswith("?"), ex.key
            solution = ex.solution()
            assert solution.startswith(f"Exercise {ex.key}: ") and len(solution) > 60
