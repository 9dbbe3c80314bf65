"""The block and the small GPT that sections c and e run, built alike in both engines from one dims dict.

block dims: s, b, hidden, heads, ffn;  gpt dims: those plus vocab and layers.  No dropout (its mask
draw has no FLOP rate in a DeviceSpec) and no vocab padding, so the two engines hold the same arrays.
The reference side runs on one rank (inside reference.launch); the tpsim side is shape-only.
"""

from __future__ import annotations

import numpy as np


def reference_case(layer: str, dims: dict, dtype: str):
    """The checker's Case for this workload (float data: normal weights), so the mirror builds it."""
    from reference.cases import Case

    if layer == "block":
        d = dict(s=dims["s"], b=dims["b"], hidden=dims["hidden"], heads=dims["heads"], ffn=dims["ffn"])
        return Case("block", d, {}, data="float", dtype=dtype)
    d = dict(
        s=dims["s"],
        b=dims["b"],
        vocab=dims["vocab"],
        hidden=dims["hidden"],
        heads=dims["heads"],
        ffn=dims["ffn"],
        layers=dims["layers"],
        seq_len=dims["s"],
    )
    return Case("gpt", d, {}, data="float", dtype=dtype)


def reference_step(layer: str, dims: dict, dtype: str, comm, device):
    """(module, step): step() runs one forward + backward of the mirror module on fresh inputs."""
    import torch

    from reference.cases_build import build_reference
    from reference.module import torch_dtype

    module, _ = build_reference(reference_case(layer, dims, dtype), comm, device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    s, b = dims["s"], dims["b"]
    if layer == "block":
        x = torch.randn((s, b, dims["hidden"]), generator=gen).to(device, torch_dtype(dtype))
        dy = torch.randn((s, b, dims["hidden"]), generator=gen).to(device, torch_dtype(dtype))

        def step():
            xi = x.detach().requires_grad_(True)
            module(xi).backward(dy)
    else:
        ids = torch.randint(0, dims["vocab"], (s, b), generator=gen).to(device)
        targets = torch.randint(0, dims["vocab"], (s, b), generator=gen).to(device)

        def step():
            module(ids, targets).backward()

    return module, step


def tpsim_step(layer: str, dims: dict, dtype: str, t: int, spec=None):
    """The tpsim mesh after one shape-only forward + backward on t devices (spec: a DeviceSpec or None)."""
    from tpsim import Mesh, Replicate, distribute, meta
    from tpsim import nn as t_nn

    mesh = Mesh(t, names=("tp",), device=spec) if spec is not None else Mesh(t, names=("tp",))
    s, b = dims["s"], dims["b"]
    if layer == "block":
        blk = t_nn.TransformerBlock(mesh, dims["hidden"], dims["heads"], dims["ffn"], init=None, dtype=dtype)
        y = blk(distribute(meta((s, b, dims["hidden"]), dtype), mesh, [Replicate()]))
        blk.backprop(distribute(meta(y.shape, dtype), mesh, [Replicate()]))
        return mesh
    cfg = t_nn.GPTConfig(
        vocab_size=dims["vocab"],
        hidden=dims["hidden"],
        num_layers=dims["layers"],
        num_heads=dims["heads"],
        seq_len=s,
        ffn_hidden=dims["ffn"],
        micro_batch=b,
        dtype=dtype,
        name="gpt",
    )
    model = t_nn.GPT(mesh, cfg, init=None, pad_to_multiple_of=None)
    ids = meta((s, b), "int64")
    model(ids, ids)
    model.backprop()
    return mesh


def median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))
