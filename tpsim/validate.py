"""Input checks shared by tpsim and the reference: one rule and one message for both engines.

Pure Python (no NumPy, no torch), so the reference can run them on a rank before anything moves and
tpsim on the global view.  Each check raises from `tpsim.errors` and names who asked (`who`: a layer's
name, "rank 1: all_reduce #4", ...), the value, and what would be valid.  Each returns the value it
accepted, normalized where that helps (a NumPy integer becomes an int).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import TypeGuard

from tpsim.errors import ArgumentError, DTypeError, ReduceOpError, RootError, ShapeError, WorldSizeError


def is_int(value) -> TypeGuard[int]:
    """An integer that is not a bool (NumPy integers count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(who: str, name: str, value, error: type[Exception] = ArgumentError) -> int:
    """A size that must be an int >= 1 (in_features, a world size, a mesh dim...)."""
    if not is_int(value) or value < 1:
        raise error(f"{who}: {name} = {value!r}; valid: an int >= 1")
    return int(value)


def world_size(who: str, value) -> int:
    """A number of ranks or devices: an int >= 1."""
    return positive_int(who, "world size", value, WorldSizeError)


def choice(who: str, name: str, value, valid: Iterable, error: type[Exception] = ArgumentError):
    """A name that must be one of `valid`."""
    valid = tuple(valid)
    if value not in valid:
        raise error(f"{who}: {name} {value!r} is unknown; valid: {', '.join(map(str, valid))}")
    return value


def reduce_op(who: str, op, valid: Iterable) -> str:
    return choice(who, "op", op, valid, ReduceOpError)


def root(who: str, value, size: int) -> int:
    """A root rank inside a group of `size`."""
    if not is_int(value) or not 0 <= value < size:
        raise RootError(
            f"{who}: root {value!r} is out of range; valid: 0..{size - 1} (ranks of a group of {size})"
        )
    return int(value)


def divisors(size: int, most: int = 64) -> list[int]:
    return [d for d in range(1, min(size, most) + 1) if size % d == 0]


def divides(who: str, what: str, size: int, degree: int, where: str = "") -> None:
    """A dim that must split evenly over the TP degree; names the degrees that would work."""
    if size % degree:
        raise ShapeError(
            f"{who}: {what} = {size} does not divide by the TP degree {degree}{where}; "
            f"degrees that work: {divisors(size)}"
        )


def heads(who: str, hidden: int, num_heads) -> None:
    """Attention heads of whole features: num_heads >= 1 divides hidden."""
    if not is_int(num_heads) or num_heads < 1 or hidden % num_heads:
        raise ShapeError(
            f"{who}: hidden = {hidden} does not divide into num_heads = {num_heads} heads "
            f"of whole features; num_heads that work: {divisors(hidden, hidden)}"
        )


def seq_dim(who: str, value) -> int:
    """The sequence dim of an (s, b, h) or (b, s, h) activation; returns it as 0 or 1."""
    if value not in (0, 1, -3, -2) or isinstance(value, bool):
        raise ShapeError(f"{who}: seq_dim = {value!r}; x is (s, b, h) or (b, s, h): use 0 or 1")
    return value % 3


def exclusive(who: str, **flags) -> None:
    """Flags of which at most one may be set (gather_output and sequence_parallel)."""
    on = [name for name, value in flags.items() if value]
    if len(on) > 1:
        raise ArgumentError(f"{who}: {' and '.join(on)} are both set; pick one")


def dim(who: str, name: str, value, shape: tuple[int, ...]) -> int:
    """A tensor dim of `shape`, negative counting from the end; returns it >= 0."""
    n = len(shape)
    if not n:
        raise ShapeError(f"{who}: a 0-d tensor has no dims; {name} {value} does not exist")
    if not is_int(value) or not -n <= value < n:
        raise ShapeError(
            f"{who}: {name} {value!r} is out of range for shape {tuple(shape)}; valid: {-n}..{n - 1}"
        )
    return int(value) % n


def same_dtype(who: str, got, want) -> None:
    """An input whose dtype must equal the layer's (no silent upcast or downcast)."""
    if str(got) != str(want):
        raise DTypeError(
            f"{who}: input has dtype {got}, but the layer's weights are {want}; "
            f"cast the input to {want} (or build the layer with dtype={str(got)!r})"
        )
