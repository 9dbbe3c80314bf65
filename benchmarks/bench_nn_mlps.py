"""The Megatron MLP three ways, forward + backward, for bench_nn.py: what tpsim is timed against.

    numpy_mlp(x, w1, b1, w2, b2, dy)   plain NumPy, unsharded (the tpsim / NumPy goal's baseline)
    TpsimMLP                           tpsim's ParallelMLP on WORLD virtual H100s on NVLink, with data
    TorchLocalMLP                      DTensor ColwiseParallel / RowwiseParallel on WORLD ranks simulated
                                       in one process (LocalTensorMode, the "fake" process group)
    TorchEagerMLP                      context: plain PyTorch eager, unsharded

Each has step() (y, dx) and reset() (outside the timed region).  The GeLU is tanh's, as
tpsim.nn.ops.gelu and torch's gelu(approximate="tanh"); fc1 is (ffn, h), fc2 (h, ffn).
"""

from __future__ import annotations

import math
import time

import numpy as np

from tpsim import Mesh, Replicate, distribute, presets
from tpsim.nn import ParallelMLP

GELU_C = math.sqrt(2.0 / math.pi)
WORLD = 8


def gelu(v):
    """tanh GeLU, as tpsim.nn.ops.gelu and torch's gelu(approximate="tanh")."""
    return 0.5 * v * (1 + np.tanh(GELU_C * (v + 0.044715 * (v * v * v))))


def gelu_grad(v, g):
    t = np.tanh(GELU_C * (v + 0.044715 * (v * v * v)))
    return g * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * v * v))


def numpy_mlp(x, w1, b1, w2, b2, dy, phases: dict | None = None):
    """The unsharded MLP, forward and backward; `phases` collects seconds spent in GEMMs and in the rest."""
    clock = PhaseClock(phases)
    h = clock.gemm(lambda: x @ w1.T)  # (tokens, h) @ (h, ffn)
    h = clock.other(lambda: h + b1)
    a = clock.other(lambda: gelu(h))
    y = clock.gemm(lambda: a @ w2.T)  # (tokens, ffn) @ (ffn, h)
    y = clock.other(lambda: y + b2)
    dw2 = clock.gemm(lambda: dy.T @ a)  # (h, tokens) @ (tokens, ffn)
    db2 = clock.other(lambda: dy.sum(axis=0))
    da = clock.gemm(lambda: dy @ w2)  # (tokens, h) @ (h, ffn)
    dh = clock.other(lambda: gelu_grad(h, da))
    dw1 = clock.gemm(lambda: dh.T @ x)  # (ffn, tokens) @ (tokens, h)
    db1 = clock.other(lambda: dh.sum(axis=0))
    dx = clock.gemm(lambda: dh @ w1)  # (tokens, ffn) @ (ffn, h)
    return y, dx, {"fc1.weight": dw1, "fc1.bias": db1, "fc2.weight": dw2, "fc2.bias": db2}


class PhaseClock:
    """Seconds spent in GEMMs and in everything else, added into `phases` (None: not timed)."""

    def __init__(self, phases: dict | None):
        self.phases = phases

    def _time(self, key, fn):
        if self.phases is None:
            return fn()
        t = time.perf_counter()
        out = fn()
        self.phases[key] = self.phases.get(key, 0.0) + time.perf_counter() - t
        return out

    def gemm(self, fn):
        return self._time("gemm", fn)

    def other(self, fn):
        return self._time("other", fn)


class TpsimMLP:
    """ParallelMLP on 8 virtual H100s on NVLink, with data; the inputs replicated, as Megatron's are."""

    def __init__(self, tokens: int, h: int, ffn: int, x: np.ndarray, dy: np.ndarray):
        self.mesh = Mesh(WORLD, device="h100", topology=presets.nvlink_node(WORLD))
        self.mlp = ParallelMLP(self.mesh, h, ffn, dtype="float32")
        self.x = distribute(x, self.mesh, [Replicate()])
        self.dy = distribute(dy, self.mesh, [Replicate()])

    def weights(self) -> tuple[np.ndarray, ...]:
        p = {name.split(".", 1)[1]: v.full() for name, v in self.mlp.named_parameters()}
        return p["fc1.weight"], p["fc1.bias"], p["fc2.weight"], p["fc2.bias"]

    def step(self):
        y = self.mlp(self.x)
        dx = self.mlp.backprop(self.dy)
        return y, dx

    def reset(self) -> None:
        """Outside the timed region: drop the grads, the trace and the clocks of the last step."""
        self.mlp.zero_grad()
        self.mesh.trace.clear()
        self.mesh.reset_clock()


class TorchLocalMLP:
    """The same MLP as DTensor ColwiseParallel fc1 / RowwiseParallel fc2 on 8 ranks simulated in one
    process: LocalTensorMode over the "fake" process group (as torch's LocalDTensorTestBase does)."""

    def __init__(self, w1, b1, w2, b2, x, dy):
        import torch
        import torch.distributed as dist
        from torch.distributed._local_tensor import LocalTensorMode
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
        from torch.testing._internal.distributed.fake_pg import FakeStore

        if not dist.is_initialized():
            dist.init_process_group("fake", rank=0, world_size=WORLD, store=FakeStore())
        device_mesh = init_device_mesh("cpu", (WORLD,))
        ffn, h = w1.shape
        model = torch.nn.Sequential()
        model.add_module("fc1", torch.nn.Linear(h, ffn))
        model.add_module("gelu", torch.nn.GELU(approximate="tanh"))
        model.add_module("fc2", torch.nn.Linear(ffn, h))
        with torch.no_grad():
            for p, v in zip(
                (model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias),
                (w1, b1, w2, b2),
                strict=True,
            ):
                p.copy_(torch.from_numpy(v))
        self.torch = torch
        self.mode = LocalTensorMode(frozenset(range(WORLD)))
        with self.mode:
            self.model = parallelize_module(
                model, device_mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()}
            )
        self.x, self.dy = torch.from_numpy(x), torch.from_numpy(dy)
        self.threads = torch.get_num_threads()
        self.version = torch.__version__

    def step(self):
        with self.mode:
            x = self.x.detach().requires_grad_(True)
            y = self.model(x)
            y.backward(self.dy)
            return settled(y), settled(x.grad)

    def close(self) -> None:
        self.torch.distributed.destroy_process_group()

    def reset(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def rank0(self, t) -> np.ndarray:
        """Rank 0's local tensor of a LocalTensor."""
        t = t._local_tensors[0] if hasattr(t, "_local_tensors") else t
        return t.detach().numpy()


class TorchEagerMLP:
    """Context, not a goal: the same MLP in plain PyTorch eager, unsharded, one process, same threads."""

    def __init__(self, w1, b1, w2, b2, x, dy):
        import torch

        self.params = [torch.from_numpy(v.copy()).requires_grad_(True) for v in (w1, b1, w2, b2)]
        self.x, self.dy = torch.from_numpy(x), torch.from_numpy(dy)
        self.F = torch.nn.functional

    def step(self):
        w1, b1, w2, b2 = self.params
        x = self.x.detach().requires_grad_(True)
        y = self.F.linear(self.F.gelu(self.F.linear(x, w1, b1), approximate="tanh"), w2, b2)
        y.backward(self.dy)
        return y, x.grad

    def reset(self) -> None:
        for p in self.params:
            p.grad = None


def settled(t):
    """An AsyncCollectiveTensor (what DTensor returns after a collective) waited on; else t."""
    return t.wait() if hasattr(t, "wait") else t
