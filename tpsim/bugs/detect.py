"""The detector: run a layer sharded and its truth unsharded on the same numbers, and name what differs.

    report = detect(build, truth, Inputs("x", (5, 2, 8), Shard(2)), world_size=2)
    report.flagged            -> ["out", "grad.weight", ...]
    print(report.format())

`build(mesh)` makes the layer under test on a `Mesh(world_size)`; `truth(mesh)` makes the correct
layer, run on a one-device mesh: plain NumPy, no collective.  (A stochastic layer, dropout, has no
unsharded twin: its truth runs on the same mesh, with the streams Megatron prescribes.)  Every
tensor is compared on every device with the piece its placement claims: the output, the input
gradient, every parameter gradient, and the global gradient norm.  Each finding names the tensor,
the rank and the relative error max|got - want| / max|want|.  A tensor placed R must also hold the
same bits on every rank, or the replicas have drifted apart.

Tolerance, derived: inputs and weights are small integers in float64, so the linear layers are exact
and the others (exp, log, sqrt) err by rounding only.  A sum of n terms errs by at most gamma_n =
n u / (1 - n u) times the sum of |terms| (Higham eq. 3.4, u = 2^-53); n is bounded by the number of
numbers the layer reads (inputs plus weights), and the |terms| by max|T| times that same n, for the
small-integer data.  So rel_tol = n^2 u, about 1e-12 here; every bug in the catalogue errs by 1e-3 or more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tpsim.bugs.grad_norm import grad_norm
from tpsim.darray import DArray, distribute
from tpsim.errors import TpsimError, WorldSizeError
from tpsim.mesh import Mesh
from tpsim.placement import Partial, Replicate

U64 = np.finfo(np.float64).eps / 2


@dataclass(frozen=True)
class Inputs:
    """What the layer takes: "x" (a float activation), "logits" (with integer targets < vocab) or
    "tokens" (ids (s, b) < vocab and targets: a whole model's step)."""

    kind: str
    shape: tuple[int, ...]
    placement: object = Replicate()
    vocab: int | None = None  # targets are drawn below it

    def __post_init__(self) -> None:
        if self.kind not in ("x", "logits", "tokens") or len(self.shape) < 1:
            raise TpsimError(f"Inputs: kind {self.kind!r} with shape {self.shape}; valid kinds: 'x', "
                             "'logits', 'tokens', with a shape of at least one dim")
        if self.kind == "tokens" and self.vocab is None:
            raise TpsimError(f"Inputs: kind 'tokens' with shape {self.shape} needs vocab, the ids' bound")


@dataclass(frozen=True)
class Finding:
    tensor: str
    rank: int
    rel_error: float
    why: str  # "differs from the truth" | "replicas differ"


@dataclass
class Report:
    findings: list[Finding]
    rel_tol: float
    errors: dict[str, float] = field(default_factory=dict)  # tensor -> worst relative error

    @property
    def flagged(self) -> list[str]:
        return sorted({f.tensor for f in self.findings})

    @property
    def ok(self) -> bool:
        return not self.findings

    def format(self) -> str:
        if self.ok:
            return f"no mismatch (every tensor within rel_tol {self.rel_tol:.1e})"
        w = max(16, *(len(f.tensor) for f in self.findings))  # the pipelined GPT's names are long
        lines = [f"{'tensor':<{w}} {'rank':>4} {'rel error':>10}  why"]
        lines += [f"{f.tensor:<{w}} {f.rank:>4} {f.rel_error:>10.3g}  {f.why}" for f in self.findings]
        return "\n".join(lines)


def draw(inputs: Inputs, seed: int) -> dict[str, np.ndarray]:
    """The global inputs: small integers as float64 (exact sums), and targets if the layer is a loss."""
    rng = np.random.default_rng(seed)
    if inputs.kind == "tokens":  # ids and targets below the vocab
        return {k: rng.integers(0, inputs.vocab, size=inputs.shape) for k in ("tokens", "targets")}
    out: dict[str, np.ndarray] = {inputs.kind: rng.integers(-2, 3, size=inputs.shape).astype(np.float64)}
    if inputs.kind == "logits":
        out["targets"] = rng.integers(0, inputs.vocab or inputs.shape[-1], size=inputs.shape[:-1])
    return out


def run(build, mesh, inputs: Inputs, seed: int = 0, norm=grad_norm) -> tuple[dict, dict]:
    """Forward and backward of `build(mesh)` on the drawn inputs: (named results, global feed).

    Results: "out" (and "mean" for a loss), "dx", "grad.<param>" as DArrays, "grad_norm" a float.
    """
    module = build(mesh)
    feed = draw(inputs, seed)
    x = distribute(feed[inputs.kind], mesh, _placements(mesh, module.tp, inputs.placement))
    named: dict[str, object] = {}
    if inputs.kind == "logits":
        y, named["mean"] = module(x, feed["targets"])
    else:
        y = module(x)
    named["out"] = y
    dy_global = np.random.default_rng(seed + 1).integers(-2, 3, size=y.shape).astype(np.float64)
    feed["dy"] = dy_global
    dx = module.backprop(distribute(dy_global, mesh, [Replicate() if isinstance(p, Partial) else p
                                                       for p in y.placements]))
    named["dx"] = dx
    root = module.name + "."
    for name, g in module.named_grads():
        named["grad." + name.removeprefix(root)] = g
    named["grad_norm"] = norm(module)
    return named, feed


def detect(build, truth, inputs: Inputs, *, world_size: int = 2, seed: int = 0, norm=grad_norm,
           truth_norm=grad_norm, truth_on_same_mesh: bool = False, view=None) -> Report:
    """Compare `build` on Mesh(world_size) with `truth` unsharded; see the module docstring.

    `view(named) -> named` adds tensors to compare on both sides (e.g. GQA's replicated KV rows)."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise WorldSizeError(f"detect: world_size must be an int >= 1, got {world_size!r}")
    got, _ = run(build, Mesh(world_size), inputs, seed, norm)
    want, _ = run(truth, Mesh(world_size if truth_on_same_mesh else 1), inputs, seed, truth_norm)
    tol = rel_tol(got, inputs)
    if view is not None:
        got, want = view(got), view(want)
    return compare(got, want, tol)


def rel_tol(named: dict, inputs: Inputs) -> float:
    """n^2 u with n the numbers the layer reads: its input and every parameter (see the docstring)."""
    params = sum(int(np.prod(g.shape)) for k, g in named.items() if k.startswith("grad."))
    n = int(np.prod(inputs.shape)) + params
    return n * n * U64


def compare(got: dict, want: dict, tol: float) -> Report:
    """Every tensor of `got` against the piece of `want` its placement claims, and R replicas' agreement."""
    missing = [name for name in want if name not in got]
    findings = [Finding(name, 0, float("inf"), "missing: the truth has it") for name in missing]
    errors = {f.tensor: f.rel_error for f in findings}
    for name, g in got.items():
        w = want.get(name)
        if w is None:
            continue
        if name == "grad_norm":
            err = abs(g - w) / max(abs(w), np.finfo(np.float64).tiny)
            errors[name] = err
            if err > tol:
                why = f"differs from the truth ({g:.6g} vs {w:.6g}, x{g / w:.4g})"
                findings.append(Finding(name, 0, err, why))
            continue
        full_w = _full(w)
        scale = max(float(np.max(np.abs(full_w), initial=0.0)), np.finfo(np.float64).tiny)
        if any(isinstance(p, Partial) for p in g.placements):  # a partial sum: judge what it sums to
            got_pieces, pieces = [_full(g)], [full_w]
        else:
            got_pieces, pieces = g.shards, distribute(full_w, g.mesh, list(g.placements)).shards
        worst = (0.0, 0)
        for d, (a, b) in enumerate(zip(got_pieces, pieces, strict=True)):
            err = float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0.0)) / scale
            worst = max(worst, (err, d))
        errors[name] = worst[0]
        if worst[0] > tol:
            findings.append(Finding(name, worst[1], worst[0], "differs from the truth"))
        if all(isinstance(p, Replicate) for p in g.placements) and g.mesh.size > 1:
            spread = [float(np.max(np.abs(np.asarray(s, np.float64) - g.shards[0]), initial=0.0)) / scale
                      for s in g.shards]
            if max(spread) > 0:
                findings.append(Finding(name, int(np.argmax(spread)), max(spread), "replicas differ"))
    return Report(findings, tol, errors)


def _full(x: DArray) -> np.ndarray:
    return np.asarray(x.full(), np.float64)


def _placements(mesh, tp: int, p) -> list:
    out = [Replicate()] * mesh.ndim
    out[tp] = p
    return out
