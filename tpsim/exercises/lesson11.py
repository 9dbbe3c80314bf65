"""Lesson 11 exercises: bugs that don't crash, found with the detector (tpsim.bugs).

    11.1 mystery_tensor     which tensor the detector flags on the mystery layer
    11.2 mystery_factor     how far off the mystery layer's output is, in units of its bias, at t = 4
    11.3 norm_inflation     the double-counted grad norm of a replicated-only layer at t = 8
"""

from __future__ import annotations

import numpy as np

import tpsim
from tpsim.bugs import BY_NAME, detect, run
from tpsim.bugs.detect import Inputs
from tpsim.bugs.grad_norm import double_counted_grad_norm
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import LayerNorm

MYSTERY = BY_NAME["row_bias_every_rank"]
TENSORS = ("out", "dx", "grad.weight", "grad.bias", "grad_norm")


def mystery_layer(mesh):
    """A row-parallel layer (in 8, out 6) with one silent bug in it: find it with `tpsim.bugs.detect`."""
    return MYSTERY.build(mesh)


def correct_layer(mesh):
    """The same layer, written right: the truth to compare with."""
    return MYSTERY.truth(mesh)


def _mystery_tensor() -> Measured:
    report = detect(mystery_layer, correct_layer, MYSTERY.inputs, world_size=2)
    (name,) = report.flagged
    return Measured(
        name,
        f"detect() flags only {name!r} (relative error {report.errors[name]:.3g}); dx and every gradient "
        "match the truth exactly, so the bug is in the forward value alone.",
        traps=(("grad.bias", "the parameter involved; its gradient is right"),),
    )


def _mystery_factor() -> Measured:
    t = 4
    got, _ = run(mystery_layer, tpsim.Mesh(t), MYSTERY.inputs)
    want, _ = run(correct_layer, tpsim.Mesh(1), MYSTERY.inputs)
    bias = correct_layer(tpsim.Mesh(1)).params["bias"].full()
    nonzero = bias != 0
    ratio = (got["out"].full() - want["out"].full())[..., nonzero] / bias[nonzero]  # one value everywhere
    (k,) = set(np.round(ratio, 12).ravel().tolist())
    return Measured(
        k,
        f"At t = {t} the output exceeds the truth by {k:g} b in every position: each rank added b to its "
        f"partial sum and the all-reduce summed the {t} copies, t b instead of b.",
        traps=((float(t), "the whole sum t b, not the excess over b"),
               (0.0, "what a zero-initialised bias shows")),
    )


def _norm_inflation() -> Measured:
    t, h = 8, 8
    inputs = Inputs("x", (5, 2, h))

    def build(mesh):
        return LayerNorm(mesh, h, seed=5, init="exact", dtype="float64")

    got, _ = run(build, tpsim.Mesh(t), inputs, norm=double_counted_grad_norm)
    want, _ = run(build, tpsim.Mesh(1), inputs)
    ratio = got["grad_norm"] / want["grad_norm"]
    return Measured(
        ratio,
        f"every parameter of a LayerNorm is replicated, so each of the {t} ranks adds all of ||g||^2: "
        f"{t} ||g||^2 under the square root, sqrt({t}) = {ratio:.4f} times the true norm.",
        traps=((float(t), "the squares' factor, before the square root"), (1.0, "the norm counted once")),
    )


mystery_tensor = Prediction(
    "11.1",
    "Predict, then run: tpsim.bugs.detect(mystery_layer, correct_layer, Inputs('x', (5, 2, 8), Shard(2)), "
    "world_size=2) compares every tensor with the truth. Which one does it flag?",
    _mystery_tensor,
    kind="choice",
    choices=TENSORS,
    hint="a bias added on every rank before the all-reduce changes a value; ask which gradients depend on it",
)
mystery_factor = Exercise(
    "11.2",
    "At t = 4, the mystery layer's output minus the true output, divided by the bias b: what number is it?",
    measure=_mystery_factor,
    rel_tol=1e-9,
    hint="count how many ranks add b before the all-reduce sums their partial outputs, and how many should",
)
norm_inflation = Exercise(
    "11.3",
    "A LayerNorm without SP (weight and bias replicated) at t = 8: the grad norm that adds every rank's "
    "squares is how many times the true one?",
    measure=_norm_inflation,
    rel_tol=1e-6,
    hint="each rank holds the whole ||g||^2 of a replicated parameter; the norm is a square root of the sum",
)

EXERCISES = [mystery_tensor, mystery_factor, norm_inflation]
