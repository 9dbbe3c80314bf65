"""tpsim.exercises: the lessons' exercises, each answer checked against the simulator.

    core.py        Exercise, Prediction, check(): right or wrong, and why
    verdict.py     Measured (the simulator's answer and why), Result (the verdict)
    answers.py     reading an answer: numbers with units, choice names
    lesson01.py    the memory wall              lesson02.py  column-parallel linear
    lesson03.py    row-parallel linear          lesson04.py  collectives step by step
    lesson05.py    the Megatron MLP and attention
    lesson06..12   (see lessons/README.md)

In a notebook:

    from tpsim.exercises import lesson02 as ex
    ex.allgather_bytes            # shows the question
    ex.allgather_bytes(96)        # Right (with the simulator's reasoning), or a hint
    ex.allgather_bytes.solution() # the answer, when you ask for it
    tpsim.exercises.check("2.2", 96)   # the same, by key

Every expected value is measured by running tpsim when the exercise is first checked; none is typed in.
"""

from tpsim.exercises.core import (
    EXERCISES,
    PENDING,
    AnswerError,
    Exercise,
    Measured,
    Prediction,
    Result,
    check,
    lookup,
)

__all__ = [
    "EXERCISES",
    "PENDING",
    "AnswerError",
    "Exercise",
    "Measured",
    "Prediction",
    "Result",
    "check",
    "lookup",
]
