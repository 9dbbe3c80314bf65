"""What every module checks when called: inputs on its mesh and in its dtype; backward after forward."""

from __future__ import annotations

from tpsim import validate
from tpsim.darray import DArray
from tpsim.dtypes import is_floating
from tpsim.errors import CallOrderError, MeshError, WorldSizeError


def check_inputs(module, args, kwargs, direction: str) -> None:
    """Refuse an input from another mesh, or floating data in another dtype than the weights."""
    arrays = [(f"argument {i}", a) for i, a in enumerate(args) if isinstance(a, DArray)]
    arrays += [(name, a) for name, a in kwargs.items() if isinstance(a, DArray)]
    mesh = module.mesh
    for what, a in arrays:
        if a.mesh is mesh:
            continue
        if a.mesh.shape != mesh.shape:
            raise WorldSizeError(
                f"{module.name}: {direction} {what} lives on a mesh of {a.mesh.size} devices "
                f"{a.mesh.shape}, but this layer runs on {mesh.size} devices {mesh.shape}; "
                "distribute the input on the layer's mesh"
            )
        raise MeshError(
            f"{module.name}: {direction} {what} lives on another Mesh of the same shape {mesh.shape}; "
            "an input must be on the layer's own Mesh (its memory, clocks and trace)"
        )
    weights = next((p.dtype for _, p in module.named_parameters()), None)
    if weights is None or not is_floating(weights):
        return
    for what, a in arrays:
        if is_floating(a.dtype):
            validate.same_dtype(f"{module.name}: {direction} {what}", a.dtype, weights)


def check_forward_ran(module) -> None:
    if not module._forwards:
        raise CallOrderError(
            f"{module.name}: backprop before forward; nothing is saved to differentiate. "
            f"Run y = {module.name}(x) first, then backprop(dy) once per forward"
        )
