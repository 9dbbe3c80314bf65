"""Modules in the global view: parameters are DArrays, forward and backward are explicit NumPy.

A module runs local ops on each device's shard through `local` (which records
FLOPs and time, in the mesh's efficiency mode, in the trace) and moves data only through regions and
`redistribute`, i.e. through the engine.  Memory is counted by category on
each device: "weights", "grads", "activations" (what forward saves for
backward, each array once), and "comm" (the collectives' buffers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from tpsim import validate
from tpsim.darray import DArray, from_local
from tpsim.nn import entry, ops
from tpsim.placement import Placement, Replicate

M = TypeVar("M", bound="Module")  # child() hands back the module it was given, with its own type


class Module:
    """Base class: `y = m(x)` runs forward, `dx = m.backprop(dy)` runs backward."""

    def __init__(self, mesh, name: str | None = None, tp_dim: int | str | None = None):
        self.mesh = mesh
        self.name = name or type(self).__name__
        self.tp = mesh.dim_index(
            tp_dim if tp_dim is not None else mesh.ndim - 1
        )  # the tensor-parallel mesh dim
        self.params: dict[str, DArray] = {}
        self.grads: dict[str, DArray] = {}
        self.children: dict[str, Module] = {}
        self._saved: dict[str, object] = {}
        self._forwards = 0  # forwards not yet matched by a backward
        self.training = True

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout on) or not, for this module and all below it."""
        self.training = mode
        for c in self.children.values():
            c.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    @property
    def tp_size(self) -> int:
        return self.mesh.shape[self.tp]

    def placements(self, tp: Placement, other: Placement | None = None) -> list[Placement]:
        """Placements with `tp` on the tensor-parallel mesh dim and `other` (default R) elsewhere."""
        return [tp if i == self.tp else (other or Replicate()) for i in range(self.mesh.ndim)]

    def param(self, name: str, value: DArray) -> DArray:
        value.recategorize("weights")
        self.params[name] = value
        return value

    def child(self, name: str, module: M) -> M:
        module.rename(f"{self.name}.{name}")
        self.children[name] = module
        return module

    def rename(self, name: str) -> None:
        self.name = name
        for key, c in self.children.items():
            c.rename(f"{name}.{key}")

    def named_parameters(self) -> Iterator[tuple[str, DArray]]:
        for key, value in self.params.items():
            yield f"{self.name}.{key}", value
        for c in self.children.values():
            yield from c.named_parameters()

    def duplicated_rows(self, key: str, tp_rank: int) -> slice | None:
        """Rows of TP-sharded parameter `key` that tp_rank holds as a copy of another rank's (a grad
        norm counts them once).  None here: a shard is its rank's own."""
        return None

    def named_grads(self) -> Iterator[tuple[str, DArray]]:
        for key, value in self.grads.items():
            yield f"{self.name}.{key}", value
        for c in self.children.values():
            yield from c.named_grads()

    def accumulate(self, name: str, grad: DArray) -> None:
        """Store (or add to) a parameter's gradient; its bytes count as "grads"."""
        if name in self.grads:
            old = self.grads[name]
            grad = self.local("grad_accumulate", np.add, old, grad, placements=grad.placements)
        grad.recategorize("grads")
        self.grads[name] = grad

    def zero_grad(self) -> None:
        self.grads.clear()
        for c in self.children.values():
            c.zero_grad()

    def save(self, **tensors) -> None:
        """Keep what backward needs; DArrays among them count as "activations" (each array once)."""
        for value in tensors.values():
            if isinstance(value, DArray):
                value.saves += 1  # several modules may keep one array: it counts once, until the last lets go
                if value.category == "tensor":
                    value.recategorize("activations")
        self._saved.update(tensors)

    def saved(self, *names: str) -> tuple:
        """Take back what forward saved; an array no module keeps any more stops counting as activations."""
        out = tuple(self._saved.pop(n) for n in names)
        for value in out:
            if isinstance(value, DArray):
                value.saves -= 1
                if value.saves == 0 and value.category == "activations":
                    value.recategorize("tensor")
        return out

    @contextlib.contextmanager
    def scope(self, direction: str) -> Iterator[None]:
        self.mesh.context.append((self.name, direction))
        try:
            yield
        finally:
            self.mesh.context.pop()

    def __call__(self, *args, **kwargs):
        entry.check_inputs(self, args, kwargs, "forward")
        with self.scope("forward"):
            out = self.forward(*args, **kwargs)
        self._forwards += 1
        return out

    def backprop(self, *args, **kwargs):
        entry.check_forward_ran(self)
        entry.check_inputs(self, args, kwargs, "backward")
        with self.scope("backward"):
            out = self.backward(*args, **kwargs)
        self._forwards -= 1
        return out

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *args, **kwargs):
        raise NotImplementedError

    def local(self, name: str, fn: Callable, *args, placements: Sequence[Placement], shape=None) -> DArray:
        """Run `fn` on each device's shards of the DArray `args` (other args pass as they are).

        `fn` returns (out, flops, bytes) from `tpsim.nn.ops`, or a plain array (then counted
        as an elementwise op).  The result is a DArray with `placements`.
        """
        return local(self.mesh, name, fn, *args, placements=placements, shape=shape)

    def check_divides(self, what: str, size: int) -> None:
        """A dim that must split evenly over the TP degree, with the degrees that would work."""
        validate.divides(self.name, what, size, self.tp_size, f" (mesh dim {self.mesh.names[self.tp]})")


def local(mesh, name: str, fn: Callable, *args, placements: Sequence[Placement], shape=None) -> DArray:
    shards = []
    dtype = None
    for d in range(mesh.size):
        local_args = [a.shards[d] if isinstance(a, DArray) else a for a in args]
        result = fn(*local_args)
        if isinstance(result, tuple):
            out, flops, nbytes = result
        else:
            out = result
            flops = out.size
            nbytes = out.nbytes + sum(a.nbytes for a in local_args if hasattr(a, "nbytes"))
        dtype = out.dtype
        mesh.compute(d, name, flops, nbytes, dtype, ops.gemm_of(result))
        shards.append(out)
    return from_local(shards, mesh, placements, shape=shape, run_check=False)
