"""The Megatron MLP: column-parallel fc1, GeLU on each rank's slice, row-parallel fc2.

    h = x W1^T + b1   (W1 split by its h_ffn outputs: no communication, copy_to)
    a = GeLU(h)       (local: each rank holds its h_ffn / t features)
    y = a W2^T + b2   (W2 split by its h_ffn inputs: one all-reduce)

One all-reduce forward (after fc2) and one backward (after fc1's dx); with
sequence parallelism an all-gather and a reduce-scatter take their places.
"""

from __future__ import annotations

from tpsim.darray import DArray
from tpsim.nn import ops
from tpsim.nn.linear import ColumnParallelLinear, RowParallelLinear
from tpsim.nn.module import Module


class ParallelMLP(Module):
    def __init__(
        self,
        mesh,
        hidden: int,
        ffn_hidden: int | None = None,
        *,
        bias: bool = True,
        seed: int = 0,
        init: str | None = "normal",
        dtype="float32",
        sequence_parallel: bool = False,
        seq_dim: int = 0,
        tp_dim=None,
        name: str | None = None,
    ):
        super().__init__(mesh, name, tp_dim)
        ffn_hidden = ffn_hidden or 4 * hidden
        kw = dict(
            bias=bias,
            init=init,
            dtype=dtype,
            sequence_parallel=sequence_parallel,
            seq_dim=seq_dim,
            tp_dim=tp_dim,
        )
        self.fc1 = self.child("fc1", ColumnParallelLinear(mesh, hidden, ffn_hidden, seed=seed, **kw))
        self.fc2 = self.child("fc2", RowParallelLinear(mesh, ffn_hidden, hidden, seed=seed + 2, **kw))

    def forward(self, x: DArray) -> DArray:
        h = self.fc1(x)
        self.save(h=h)
        a = self.local("gelu", ops.gelu, h, placements=h.placements)
        return self.fc2(a)

    def backward(self, dy: DArray) -> DArray:
        da = self.fc2.backprop(dy)
        (h,) = self.saved("h")
        dh = self.local("gelu_backward", ops.gelu_grad, h, da, placements=da.placements)
        return self.fc1.backprop(dh)
