"""Lesson 1, the memory wall: exercises on how much of a layer each device holds, and how many it takes.

Every expected value is measured on virtual devices: layers are built on a mesh and the devices'
memory ledgers are read, or an OutOfMemoryError is caught.
"""

from __future__ import annotations

import math

import tpsim
from tpsim.errors import OutOfMemoryError
from tpsim.exercises.core import Exercise, Measured, Prediction
from tpsim.nn import ColumnParallelLinear, RowParallelLinear, TransformerBlock
from tpsim.report import fmt_bytes, table


def _weights_per_device() -> Measured:
    mesh = tpsim.Mesh(4)
    layer = ColumnParallelLinear(mesh, 32, 32, bias=True, dtype="float32")
    w, b = layer.params["weight"].local(2), layer.params["bias"].local(2)
    held = mesh.memory()[2]["weights"]
    why = (
        f"Device 2 holds a {w.shape} piece of W ({w.nbytes} B: {w.shape[0]} of the 32 output rows) "
        f"and {b.shape[0]} of the 32 bias values ({b.nbytes} B); its ledger counts {held} B of weights."
    )
    traps = ((32 * 32 * 4 + 32 * 4, "the whole layer: what one device holds when nothing is split"),
             (w.nbytes, "the weight's piece alone; the bias is split by output features too"))
    return Measured(held, why, traps)


weights_per_device = Exercise(
    "1.1",
    "A ColumnParallelLinear(in=32, out=32, bias=True) in float32 is split over 4 devices. "
    "How many bytes of weights (W and bias) does device 2 hold?",
    _weights_per_device,
    unit="bytes",
    hint=(
        "ColumnParallelLinear splits W by output rows and the bias with them; count the rows one device "
        "holds, times the input width, plus its share of the bias, at 4 B a number"
    ),
)

CAPACITY = 5000  # bytes of memory per device in exercise 1.2


def _min_devices() -> Measured:
    tried = []
    for t in range(1, 65):
        mesh = tpsim.Mesh(t, memory=CAPACITY)
        try:
            layer = ColumnParallelLinear(mesh, 64, 64, bias=False, dtype="float32")
        except OutOfMemoryError:
            tried.append(t)
            continue
        piece = max(m["weights"] for m in mesh.memory())
        del layer
        why = (
            f"With {t} devices the largest piece of W (64 x 64 float32 = 16384 B) is {piece} B, "
            f"which fits {CAPACITY} B; with {tried[-1]} devices building the layer raised OutOfMemoryError."
        )
        rows = math.ceil(64 / (t - 1)) if t > 1 else 64
        return Measured(t, why, ((t - 1, f"too few: {t - 1} devices get pieces of {rows} rows = "
                                          f"{rows * 64 * 4} B, over {CAPACITY} B"),))
    raise AssertionError("no mesh up to 64 devices fits")  # cannot happen: 64 devices hold 256 B each


min_devices = Exercise(
    "1.2",
    f"Each device has {CAPACITY} bytes of memory. What is the smallest number of devices over which a "
    "ColumnParallelLinear(in=64, out=64, bias=False) in float32 fits (pieces follow the torch.chunk rule)?",
    _min_devices,
    hint=(
        "pieces follow torch.chunk, ceil(64 / t) rows each; look for the smallest t whose largest piece "
        "fits one device"
    ),
)


def _gpt3_layer_weights() -> Measured:
    mesh = tpsim.Mesh(8, device="h100")
    layer = TransformerBlock(mesh, 12288, 96, init=None, dtype="bfloat16")  # shape-only: nothing allocated
    held = mesh.memory()[0]["weights"]
    full = sum(math.prod(p.shape) for _, p in layer.named_parameters()) * 2
    why = (
        f"The layer has {full // 2:,} parameters ({fmt_bytes(full)} in bfloat16). The four linears are split "
        f"8 ways; the two LayerNorms and the biases of the row-parallel layers stay whole on every device, "
        f"so device 0 holds {fmt_bytes(held)}, a little more than {fmt_bytes(full / 8)} = 1/8 of it."
    )
    return Measured(held, why, ((full / 8, "exactly 1/8 of the layer; some parameters are replicated"),
                                (full, "the whole layer, unsplit")))


gpt3_layer_weights = Exercise(
    "1.3",
    "One GPT-3 175B layer (hidden 12288, 96 heads, ffn 4 x 12288, with biases and two LayerNorms) in "
    "bfloat16 is split over 8 devices with Megatron's tensor parallelism. How many bytes of weights "
    "does device 0 hold?",
    _gpt3_layer_weights,
    unit="bytes",
    hint=(
        "the four big matrices are split 8 ways, but the LayerNorms and the biases of the row-parallel "
        "layers stay whole on every device"
    ),
)



def _row_parallel_ledger() -> Measured:
    mesh = tpsim.Mesh(3)
    layer = RowParallelLinear(mesh, 24, 8, bias=True, dtype="float32")  # kept: its weights stay in the ledger
    ledger = mesh.memory()
    held = ledger[1]["weights"]
    trace = table([(m["device"], m["weights"]) for m in ledger], ("device", "weights (B)"),
                  "the devices' memory ledgers")
    why = (f"RowParallelLinear splits W (8, 24) by input columns: 8 x 8 float32 = 256 B per device; the bias "
           f"(8 values, 32 B) is added once after the all-reduce, so every device holds all of it: {held} B.")
    traps = ((256, "W's piece alone; a row-parallel bias is not split"),
             ((8 * 24 * 4 + 8 * 4) / 3, "a third of everything; the bias is replicated, not split"))
    del layer
    return Measured(held, why, traps, trace=trace)


row_parallel_ledger = Prediction(
    "1.4",
    "Predict, then run: "
    "a RowParallelLinear(in=24, out=8, bias=True) in float32 is built on 3 devices. "
    "How many bytes of weights will device 1's memory ledger show?",
    _row_parallel_ledger,
    unit="bytes",
    hint="a row-parallel layer splits W by input features; ask what happens to the bias, which is added "
    "after the partial sums are reduced",
)

EXERCISES = [weights_per_device, min_devices, gpt3_layer_weights, row_parallel_ledger]
