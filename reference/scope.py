"""Which module issued a collective, and in which direction: the label and direction of tpsim's trace.

Forward: the innermost reference Module whose forward is running (`module`, entered by Module.__call__).
Backward: the module whose forward built the autograd node now running backward: `mark` writes that
label into a custom Function's output node, and `current` reads it back from the running node.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

import torch

LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("tpsim_reference_label", default=None)


@contextmanager
def module(name: str):
    token = LABEL.set(name)
    try:
        yield
    finally:
        LABEL.reset(token)


def mark(y: torch.Tensor) -> torch.Tensor:
    """y, the output of a Function.apply, with the running module's label on its backward node."""
    if y.grad_fn is not None:
        y.grad_fn.metadata["label"] = LABEL.get()
    return y


def current() -> tuple[str | None, str]:
    """(label, direction) of a collective issued now: "backward" inside autograd's backward pass."""
    node = torch._C._current_autograd_node()
    if node is None:
        return LABEL.get(), "forward"
    return node.metadata.get("label"), "backward"
