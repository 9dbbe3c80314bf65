"""The exercise checker and the exercises of lessons 1-5.

For each exercise, the right answer is computed here independently of the simulator: from the closed
form, or by counting by hand from the definition (torch.chunk pieces, ring steps, parameter counts).
It must pass; a wrong answer must fail with a message that names both values and says why.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from exercise_checks import answer

from tpsim.errors import TpsimError
from tpsim.exercises import (
    EXERCISES,
    PENDING,
    AnswerError,
    Exercise,
    Measured,
    Prediction,
    check,
    lesson01,
    lesson02,
    lesson03,
    lesson04,
    lesson05,
    lookup,
)

ALPHA = 2e-6  # NVLink end-to-end latency of the presets (an assumption stated there)
H100_BW, A100_BW = 450e9, 300e9  # NVLink 4 / NVLink 3 per direction, from the datasheets


def ring_all_gather(p, S, bw):
    return (p - 1) * (ALPHA + S / p / bw)


def ring_all_reduce(p, S, bw):
    return 2 * (p - 1) * (ALPHA + S / p / bw)


def gpt3_layer_bytes_per_device(h=12288, t=8, itemsize=2):
    split = (3 * h * h + 3 * h) + h * h + (4 * h * h + 4 * h) + 4 * h * h  # qkv w+b, dense w, fc1 w+b, fc2 w
    replicated = h + h + 4 * h  # dense and fc2 biases, two LayerNorms (weight and bias)
    return (split // t + replicated) * itemsize


def smallest_tp(rows=64, cols=64, itemsize=4, capacity=5000):
    return next(t for t in range(1, rows + 1) if math.ceil(rows / t) * cols * itemsize <= capacity)


def exact_weight(shape, seed=0):
    """init='exact': integers -2..2 from default_rng(seed), as tpsim.nn.init documents."""
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float32)


def partial_y13_device2():
    x = np.arange(32, dtype=np.float32).reshape(4, 8) % 5
    w = exact_weight((8, 8))
    return float(x[1, 4:6] @ w[3, 4:6])


def fastest_on_switch(p, S, bw):
    """Closed forms on a switch: a port per device, so direct's p-1 sends share the sender's port."""
    q = 1 << (p.bit_length() - 1)
    fold = 2 * (ALPHA + S / bw) if q < p else 0.0
    times = {
        "ring": ring_all_reduce(p, S, bw),
        "halving_doubling": 2 * math.log2(q) * ALPHA + 2 * (q - 1) / q * S / bw + fold,
        "tree": 2 * math.ceil(math.log2(p)) * (ALPHA + S / bw),
        "direct": ALPHA + (p - 1) * S / bw,
    }
    return min(times, key=times.get)


def crossover_6():
    """Direct against halving-doubling on 6 ports: 6 is folded into 4 (one step in, one out), so
    hd = 2 log2(4) alpha + 2 (3/4) S/bw + 2 (alpha + S/bw) = 6 alpha + 3.5 S/bw; direct = alpha + 5 S/bw."""
    return 5 * ALPHA * H100_BW / 1.5


# (exercise, the right answer worked out here, two wrong answers, words the solution must hold)
CASES = [
    (lesson01.weights_per_device, 8 * 32 * 4 + 8 * 4, (32 * 32 * 4 + 32 * 4, 8 * 32 * 4), ["ledger"]),
    (lesson01.min_devices, smallest_tp(), (3, 64), ["OutOfMemoryError"]),
    (lesson01.gpt3_layer_weights, gpt3_layer_bytes_per_device(),
     ("432 MiB", gpt3_layer_bytes_per_device() * 8), ["stay whole", "parameters"]),
    (lesson01.row_parallel_ledger, 8 * 24 * 4 // 3 + 8 * 4, (8 * 24 * 4 // 3, 8 * 24 * 4 + 32), ["bias"]),
    # torch.chunk: pieces of ceil(10 / 4) = 3 rows; the last device gets what is left
    (lesson02.output_shard_shape, (3, 10 - 3 * math.ceil(10 / 4)), ((3, 3), (3, 10)), ["torch.chunk"]),
    (lesson02.allgather_bytes, 2 / 3 * (5 * 12 * 4), (240, 80), ["(p-1)/p"]),
    (lesson02.allgather_time, ring_all_gather(8, 2048 * 49152 * 2, A100_BW),
     (2048 * 49152 * 2 / A100_BW, ring_all_reduce(8, 2048 * 49152 * 2, A100_BW)), ["7 steps"]),
    (lesson02.chunks_after_step, (0, 2, 3), ((0, 1, 2), (0, 3)), ["device 3"]),
    (lesson03.partial_value, partial_y13_device2(), (16, 0), ["Device 2"]),
    (lesson03.allreduce_bytes, 2 * 2 / 3 * (2 * 6 * 4), (48, 2 * 48), ["2(p-1)/p"]),
    (lesson03.allreduce_time, ring_all_reduce(8, 2048 * 12288 * 2, A100_BW), ("161 us", "1 s"), ["14 steps"]),
    (lesson03.replicas_identical, 1, (4, 2), ["copies"]),
    (lesson04.ring_steps, 2 * (6 - 1), (5, 6), ["reduce-scatter"]),
    (lesson04.ring_bytes, 2 * 3 / 4 * (1 << 20), ("2 MiB", "1 MiB"), ["2(p-1)/p S"]),
    (lesson04.fastest_large, fastest_on_switch(6, 256 << 20, H100_BW), ("direct", "tree"), ["NVLink"]),
    (lesson04.crossover, crossover_6(), ("100 KiB", 5 * ALPHA * H100_BW / (7 - 2 * 7 / 8)), ["6 devices"]),
    (lesson05.mlp_allreduces, 2, (4, 1), ["ParallelMLP.fc1"]),
    (lesson05.backward_region, "f", ("g", "reduce_from"), ["copy_to"]),  # both names of the one wrong choice
    (lesson05.mlp_forward_bytes, 2 * 3 / 4 * 2048 * 12288 * 2, (2048 * 12288 * 2, 2 * 2048 * 12288 * 2), []),
    (lesson05.layer_comm_time, 4 * ring_all_reduce(8, 2048 * 12288 * 2, A100_BW), ("1 ms", "10 us"),
     ["all-reduce"]),
]


@pytest.mark.parametrize("exercise, right, wrongs, words", CASES, ids=[c[0].key for c in CASES])
def test_right_answer_passes_and_wrong_ones_get_a_hint(exercise, right, wrongs, words):
    ok = answer(exercise, right)
    assert ok.ok and bool(ok), ok.message
    assert ok.message.startswith("Right: ")
    expected = exercise.show(exercise.parse(exercise.measured().value))
    for wrong in wrongs:
        bad = answer(exercise, wrong)
        assert not bad.ok and not bad.pending, bad.message
        assert bad.message.startswith("Not quite: you "), bad.message
        assert exercise.hint and exercise.hint in bad.message, bad.message  # the idea, every time
        if not isinstance(exercise, Prediction):  # a prediction's run shows the trace, so it may compare
            assert bad.expected is None and "measured" not in bad.message, bad.message
            assert ".solution()" in bad.message
    solution = exercise.solution()
    assert expected in solution
    for w in words:
        assert w in solution, (w, solution)


def test_a_wrong_answer_does_not_give_the_answer_away():
    """The old checker printed the measured value with every wrong answer; now only .solution() does."""
    bad = lesson02.allgather_bytes(240)
    assert "160 B" not in bad.message and "measured" not in bad.message
    assert "160 B" in lesson02.allgather_bytes.solution()


def test_every_exercise_of_lessons_1_to_5_is_tested():
    keys = {c[0].key for c in CASES}
    for module in (lesson01, lesson02, lesson03, lesson04, lesson05):
        assert 2 <= len(module.EXERCISES) <= 4
        assert {e.key for e in module.EXERCISES} <= keys
        assert any(isinstance(e, Prediction) for e in module.EXERCISES), module.__name__


def test_exercise_4_4_asks_and_measures_six_devices():
    """The old checker bisected on 8 devices while the question asks about the 6 of 4.3."""
    assert "6 H100s" in lesson04.crossover.question
    assert lesson04.crossover(crossover_6()).ok
    assert not lesson04.crossover(5 * ALPHA * H100_BW / (7 - 2 * 7 / 8)).ok  # the 8-device crossover


def test_crossover_tolerance_is_five_percent():
    exact = crossover_6()
    assert lesson04.crossover(exact * 1.04)
    assert not lesson04.crossover(exact * 1.07)


def test_predict_then_run_compares_the_prediction_with_the_trace():
    ex = lesson02.chunks_after_step
    ex.prediction = PENDING
    first = ex.run()
    assert first.pending and "Predict first" in first.message
    recorded = ex((0, 1, 2))
    assert recorded.pending and not recorded.ok and "Prediction recorded" in recorded.message
    result = ex.run()
    assert not result.ok and "(0, 2, 3)" in result.message and "after step 2" in result.detail
    assert "after step 2" in str(result) and "<pre>" in result._repr_html_()
    ex([0, 2, 3])
    assert ex.run().ok


def test_check_by_key_and_lookup():
    assert check("4.1", 10).ok
    assert lookup("2.2") is lesson02.allgather_bytes
    with pytest.raises(AnswerError, match=r"no exercise '99\.9'"):
        check("99.9", 1)


@pytest.fixture
def toy():
    """A checker test bench: the 'simulator' here counts the ring all-gather's bytes itself."""
    calls = []

    def measure():
        calls.append(1)
        return Measured(96, "Each of 4 devices sent 3 chunks of 32 B.", ((128, "the whole buffer"),))

    ex = Exercise("0.1", "Bytes each device sends?", measure, unit="bytes")
    yield ex, calls
    EXERCISES.pop("0.1", None)


def test_units_and_traps(toy):
    ex, calls = toy
    assert ex(96).ok and ex("96 B").ok and ex("0.09375 KiB").ok and ex(np.int64(96)).ok
    bad = ex("128")
    assert bad.message == ("Not quite: you gave 128 B. 128 B is the whole buffer. "
                           "Try again, or call exercise 0.1's .solution() for the answer.")
    assert ex.solution() == "Exercise 0.1: 96 B. Each of 4 devices sent 3 chunks of 32 B."
    assert len(calls) == 1  # measured once, then remembered


def test_pending_and_bad_answers(toy):
    ex, _ = toy
    for pending in (ex(None), ex()):
        assert not pending.ok and pending.pending and pending.message.startswith("No answer yet")
    for bad in ("lots", "5 parsecs", [96], True, float("nan")):
        with pytest.raises(AnswerError, match=r"exercise 0\.1"):
            ex(bad)
    with pytest.raises(AnswerError, match="one of 'copy_to', 'reduce_from'"):
        lesson05.backward_region("gather_from")


def test_tolerance_and_seconds():
    ex = Exercise("0.2", "How long?", lambda: Measured(2.0e-4, "Measured."), unit="seconds", rel_tol=0.02)
    try:
        assert ex("201 us").ok and ex(2.0e-4).ok and ex("0.2 ms").ok
        assert not ex("210 us").ok
    finally:
        EXERCISES.pop("0.2")


def test_html_reprs(toy):
    ex, _ = toy
    assert "Exercise 0.1" in ex._repr_html_() and "number of bytes" in ex._repr_html_()
    right, wrong = ex(96)._repr_html_(), ex(1)._repr_html_()
    assert "#2e7d32" in right and "Right" in right
    assert "#c62828" in wrong and "Not quite" in wrong


def test_bad_definitions_are_refused():
    with pytest.raises(TpsimError, match="kind 'guess'"):
        Exercise("0.3", "?", lambda: Measured(1, "."), kind="guess")
    with pytest.raises(TpsimError, match="needs its choices"):
        Exercise("0.4", "?", lambda: Measured("a", "."), kind="choice")
    assert "0.3" not in EXERCISES and "0.4" not in EXERCISES
