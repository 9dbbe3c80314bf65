"""The Megatron MLP on one rank: the mirror of tpsim/nn/mlp.py.

    h = x W1^T + b1   (W1 split by its h_ffn outputs: no communication, copy_to)
    a = GeLU(h)       (local: this rank holds its h_ffn / t features)
    y = a W2^T + b2   (W2 split by its h_ffn inputs: one all-reduce)

One all-reduce forward (after fc2) and one backward (fc1's dx); with sequence parallelism an
all-gather and a reduce-scatter take their places.  GeLU is torch's tanh approximation, the
formula tpsim evaluates in NumPy (the two libms may differ in the last bit: see reference/check.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.linear import ColumnParallelLinear, RowParallelLinear
from reference.module import Module


class ParallelMLP(Module):
    def __init__(
        self,
        comm,
        hidden: int,
        ffn_hidden: int | None = None,
        *,
        bias: bool = True,
        seed: int = 0,
        init: str = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        name: str | None = None,
        device=None,
    ):
        super().__init__(comm, name, device)
        ffn_hidden = ffn_hidden or 4 * hidden
        kw = dict(bias=bias, init=init, dtype=dtype, sequence_parallel=sequence_parallel, seq_dim=seq_dim,
                  device=device)
        self.fc1 = ColumnParallelLinear(comm, hidden, ffn_hidden, seed=seed, name=f"{self.name}.fc1", **kw)
        self.fc2 = RowParallelLinear(comm, ffn_hidden, hidden, seed=seed + 2, name=f"{self.name}.fc2", **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (s, b, ffn/t) between the two
