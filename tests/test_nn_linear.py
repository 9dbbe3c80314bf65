"""ColumnParallelLinear, RowParallelLinear and ParallelMLP against their definition.

The oracle is the unsharded layer written plainly in NumPy from the full weights:

    y = x W^T + b        dx = dy W        dW = dy^T x        db = sum of dy

(summed over every leading dim).  On exact data (small integers) tpsim equals it bit for bit at
every TP degree, uneven splits included; the MLP's GeLU is not exact, so there it is close.
On random data the oracle is torch.autograd.  Then: the 2-D mesh (dp, tp), the collectives
each layer records, shape-only runs, and the memory ledger.
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

from tpsim import Mesh, Partial, Replicate, Shard, distribute, meta
from tpsim.errors import PlacementError, ShapeError
from tpsim.nn import ColumnParallelLinear, ParallelMLP, RowParallelLinear
from tpsim.placement import chunk_sizes

R = Replicate()
DTYPES = [np.float32, np.float64]
GELU_C = math.sqrt(2.0 / math.pi)


def gelu(h):
    return 0.5 * h * (1 + np.tanh(GELU_C * (h + 0.044715 * h**3)))


def gelu_grad(h):
    t = np.tanh(GELU_C * (h + 0.044715 * h**3))
    return 0.5 * (1 + t) + 0.5 * h * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * h * h)


def rows(a):
    """(..., n) -> (m, n): every leading dim is a row."""
    return a.reshape(-1, a.shape[-1])


def plain_linear(x, w, b, dy):
    """The unsharded layer: y, dx and the gradients by parameter name."""
    y = x @ w.T
    if b is not None:
        y = y + b
    grads = {"weight": rows(dy).T @ rows(x)}
    if b is not None:
        grads["bias"] = rows(dy).sum(axis=0)
    return y, dy @ w, grads


def plain_mlp(x, p, dy):
    """fc2(gelu(fc1(x))), unsharded, and its gradients by parameter name."""
    h = x @ p["fc1.weight"].T + p.get("fc1.bias", 0)
    a = gelu(h)
    y = a @ p["fc2.weight"].T + p.get("fc2.bias", 0)
    dh = (dy @ p["fc2.weight"]) * gelu_grad(h)
    grads = {"fc1.weight": rows(dh).T @ rows(x), "fc2.weight": rows(dy).T @ rows(a)}
    if "fc1.bias" in p:
        grads |= {"fc1.bias": rows(dh).sum(axis=0), "fc2.bias": rows(dy).sum(axis=0)}
    return y, dh @ p["fc1.weight"], grads


def torch_reference(kind, x, params, dy):
    """The same layer in torch.autograd (float64): y, dx, grads by parameter name."""
    xt = torch.tensor(x, requires_grad=True)
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    if kind == "mlp":
        h = F.linear(xt, pt["fc1.weight"], pt.get("fc1.bias"))
        y = F.linear(F.gelu(h, approximate="tanh"), pt["fc2.weight"], pt.get("fc2.bias"))
    else:
        y = F.linear(xt, pt["weight"], pt.get("bias"))
    y.backward(torch.tensor(dy))
    return y.detach(), xt.grad, {k: v.grad for k, v in pt.items()}


def pieces(t: int):
    """A feature count that splits over t ranks: even, or uneven by torch.chunk (empty pieces too)."""
    return st.integers(t, 3 * t)


COLUMN_FLAGS = st.fixed_dictionaries(
    {
        "gather_output": st.booleans(),
        "bias": st.booleans(),
        "skip_bias_add": st.booleans(),
        "sequence_parallel": st.booleans(),
    }
).filter(lambda f: not (f["gather_output"] and f["sequence_parallel"]))
ROW_FLAGS = st.fixed_dictionaries(
    {"input_is_parallel": st.booleans(), "bias": st.booleans(), "sequence_parallel": st.booleans()}
)
MLP_FLAGS = st.fixed_dictionaries({"bias": st.booleans(), "sequence_parallel": st.booleans()})


@st.composite
def layers(draw, kinds=("column", "row", "mlp"), max_t=8):
    """(kind, flags, t, in_features, out_features); the TP-split dim may be uneven."""
    kind = draw(st.sampled_from(kinds))
    t = draw(st.integers(1, max_t))
    flags = draw({"column": COLUMN_FLAGS, "row": ROW_FLAGS, "mlp": MLP_FLAGS}[kind])
    free, split = st.integers(1, 6), pieces(t)
    fin, fout = (split, free) if kind == "row" else (free, split)  # column and MLP split out / ffn
    return kind, flags, t, draw(fin), draw(fout)


def build(kind, mesh, fin, fout, flags, seq_dim=0, **kw):
    """The layer: for "mlp", fin is the hidden size and fout the FFN size (the one TP splits)."""
    cls = {"column": ColumnParallelLinear, "row": RowParallelLinear, "mlp": ParallelMLP}[kind]
    return cls(mesh, fin, fout, seq_dim=seq_dim, **flags, **kw)


def input_placement(kind, flags, seq_dim=0):
    """Where the layer takes x on the TP mesh dim."""
    if kind == "row":
        return Shard(-1) if flags["input_is_parallel"] else R
    return Shard(seq_dim) if flags["sequence_parallel"] else R


def out_features(kind, fin, fout):
    return fin if kind == "mlp" else fout


def run(m, x, x_tp, dy, dp=None):
    """y = m(x), then dx = m.backprop(dy), dy placed as y is.

    Returns (y, the bias handed back or None, dx, the placements x came in).
    """
    x = distribute(x, m.mesh, [x_tp] if dp is None else [dp, x_tp])
    x_placements = x.placements
    out = m(x)
    del x  # the caller lets go of its input, as a model does
    y, bias = out if isinstance(out, tuple) else (out, None)
    dx = m.backprop(distribute(dy, m.mesh, y.placements))
    return y, bias, dx, x_placements


def full_params(m) -> dict:
    """Every parameter's full value, by name without the module's own prefix."""
    return {k.split(".", 1)[1]: v.full() for k, v in m.named_parameters()}


def full_grads(m) -> dict:
    return {k.split(".", 1)[1]: v.full() for k, v in m.named_grads()}


def plain(kind, m, x, dy):
    p = full_params(m)
    return plain_mlp(x, p, dy) if kind == "mlp" else plain_linear(x, p["weight"], p.get("bias"), dy)


def exact_arrays(dtype, shape):
    return hnp.arrays(dtype, shape, elements=st.integers(-3, 3))


@given(
    layers(kinds=("column", "row")), st.sampled_from(DTYPES), st.integers(1, 4), st.integers(1, 3), st.data()
)
def test_linear_layers_are_x_wt_plus_b_bit_for_bit(layer, dtype, s, b, data):
    """Forward, dx and every parameter gradient equal the unsharded NumPy layer exactly."""
    kind, flags, t, fin, fout = layer
    m = build(kind, Mesh(t, names=("tp",)), fin, fout, flags, init="exact", dtype=dtype)
    x = data.draw(exact_arrays(dtype, (s, b, fin)))
    dy = data.draw(exact_arrays(dtype, (s, b, fout)))
    y, bias, dx, x_placements = run(m, x, input_placement(kind, flags), dy)
    want_y, want_dx, want_grads = plain(kind, m, x, dy)
    if flags.get("skip_bias_add") and flags["bias"]:
        assert bias is m.params["bias"]  # handed back for a later fused add ...
        want_y = want_y - bias.full()  # ... so y is x W^T alone
    assert y.dtype == dx.dtype == dtype
    assert_array_equal(y.full(), want_y)
    assert_array_equal(dx.full(), want_dx)
    assert dx.placements == x_placements  # dx comes back placed as x came
    assert full_grads(m).keys() == want_grads.keys()
    for name, g in full_grads(m).items():
        assert_array_equal(g, want_grads[name], err_msg=name)
        assert m.grads[name].placements == m.params[name].placements  # grads are sharded as weights


@given(layers(kinds=("mlp",)), st.sampled_from(DTYPES), st.integers(1, 4), st.integers(1, 3), st.data())
def test_parallel_mlp_is_fc2_gelu_fc1(layer, dtype, s, b, data):
    """GeLU is not exact, and fc2 sums its TP partials in another order: close, tightly."""
    _, flags, t, hidden, ffn = layer
    m = build("mlp", Mesh(t, names=("tp",)), hidden, ffn, flags, init="exact", dtype=dtype)
    x = data.draw(exact_arrays(dtype, (s, b, hidden)))
    dy = data.draw(exact_arrays(dtype, (s, b, hidden)))
    y, _, dx, x_placements = run(m, x, input_placement("mlp", flags), dy)
    want_y, want_dx, want_grads = plain_mlp(x, full_params(m), dy)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-4}
    assert y.dtype == dx.dtype == dtype
    assert_allclose(y.full(), want_y, **tol)
    assert_allclose(dx.full(), want_dx, **tol)
    assert dx.placements == x_placements
    assert full_grads(m).keys() == want_grads.keys()
    for name, g in full_grads(m).items():
        assert_allclose(g, want_grads[name], err_msg=name, **tol)


@given(layers(), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**16), st.data())
def test_every_layer_matches_torch_autograd_on_random_data(layer, s, b, seed, data):
    kind, flags, t, fin, fout = layer
    m = build(kind, Mesh(t, names=("tp",)), fin, fout, flags, init="normal", seed=seed, dtype=np.float64)
    floats = st.floats(-2, 2, allow_subnormal=False)
    x = data.draw(hnp.arrays(np.float64, (s, b, fin), elements=floats))
    dy = data.draw(hnp.arrays(np.float64, (s, b, out_features(kind, fin, fout)), elements=floats))
    y, bias, dx, _ = run(m, x, input_placement(kind, flags), dy)
    if bias is not None:
        y = distribute(y.full() + bias.full(), m.mesh, R)  # the caller's fused bias add
    want_y, want_dx, want_grads = torch_reference(kind, x, full_params(m), dy)
    torch.testing.assert_close(torch.from_numpy(y.full()), want_y)
    torch.testing.assert_close(torch.from_numpy(dx.full()), want_dx)
    for name, g in full_grads(m).items():
        torch.testing.assert_close(torch.from_numpy(g), want_grads[name], msg=lambda e, n=name: f"{n}: {e}")


@given(layers(max_t=4), st.sampled_from(DTYPES), st.integers(1, 2), st.integers(1, 4), st.data())
def test_on_a_dp_tp_mesh_outputs_match_and_weight_grads_are_partial_over_dp(layer, dtype, k, s, data):
    """x (b, s, h) is split by batch over dp: each dp rank's weight grad is a partial sum of the grad."""
    kind, flags, t, fin, fout = layer
    mesh = Mesh((2, t), names=("dp", "tp"))
    m = build(kind, mesh, fin, fout, flags, seq_dim=1, init="exact", dtype=dtype, tp_dim="tp")
    b = 2 * k  # even over dp: a known limit of uneven shards on a 2-d mesh (see test_darray.py)
    x = data.draw(exact_arrays(dtype, (b, s, fin)))
    dy = data.draw(exact_arrays(dtype, (b, s, out_features(kind, fin, fout))))
    y, bias, dx, x_placements = run(m, x, input_placement(kind, flags, seq_dim=1), dy, dp=Shard(0))
    want_y, want_dx, want_grads = plain(kind, m, x, dy)
    if bias is not None:
        want_y = want_y - bias.full()
    same = (
        assert_array_equal
        if kind != "mlp"
        else lambda a, w, **kw: assert_allclose(a, w, rtol=1e-5, atol=1e-4, **kw)
    )
    assert y.placements[0] == Shard(0)  # the batch stays split over dp
    assert dx.placements == x_placements
    same(y.full(), want_y)
    same(dx.full(), want_dx)
    for name, g in m.named_grads():
        name = name.split(".", 1)[1]
        assert g.placements[0] == Partial(), name
        same(g.full(), want_grads[name], err_msg=name)  # full() sums the dp partials


def table(mesh):
    return [(c.collective, c.label, c.direction, c.nbytes, c.group_size) for c in mesh.trace.collectives]


def sent(mesh) -> list[int]:
    return [d["sent"] for d in mesh.trace.per_device()]


@given(st.integers(1, 8), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.sampled_from(DTYPES))
def test_mlp_without_sp_is_one_all_reduce_each_way(t, k, b, h, dtype):
    s = k * t  # s b h divides by t: then a ring moves the same bytes from every device
    mesh = Mesh(t, names=("tp",))
    m = ParallelMLP(mesh, h, 2 * t, init="exact", dtype=dtype)
    x = np.ones((s, b, h), dtype)
    run(m, x, R, x)
    sbh = s * b * h * np.dtype(dtype).itemsize
    assert table(mesh) == [
        ("all_reduce", "ParallelMLP.fc2", "forward", sbh, t),
        ("all_reduce", "ParallelMLP.fc1", "backward", sbh, t),
    ]
    assert sent(mesh) == [2 * 2 * (t - 1) * sbh // t] * t  # each ring all-reduce: 2(t-1)/t sbh per device


@given(st.integers(1, 8), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.sampled_from(DTYPES))
def test_mlp_with_sp_is_the_megatron_set(t, k, b, h, dtype):
    """Forward: all-gather x, reduce-scatter y.

    Backward: all-gather dy, all-gather x again for dW (SP keeps only its piece), reduce-scatter dx.
    """
    s = k * t
    mesh = Mesh(t, names=("tp",))
    m = ParallelMLP(mesh, h, 2 * t, init="exact", dtype=dtype, sequence_parallel=True)
    x = np.ones((s, b, h), dtype)
    run(m, x, Shard(0), x)
    sbh = s * b * h * np.dtype(dtype).itemsize
    assert table(mesh) == [
        ("all_gather", "ParallelMLP.fc1", "forward", sbh, t),
        ("reduce_scatter", "ParallelMLP.fc2", "forward", sbh, t),
        ("all_gather", "ParallelMLP.fc2", "backward", sbh, t),  # dy
        ("all_gather", "ParallelMLP.fc1", "backward", sbh, t),  # x again, for dW
        ("reduce_scatter", "ParallelMLP.fc1", "backward", sbh, t),  # dx
    ]
    assert sent(mesh) == [5 * (t - 1) * sbh // t] * t  # each ring all-gather or reduce-scatter: (t-1)/t sbh


# layer, flags -> (collective, direction, the array it moves) in the order they run
LINEAR_TABLES = [
    ("column", {}, [("all_reduce", "backward", "x")]),
    ("column", {"gather_output": True}, [("all_gather", "forward", "y"), ("all_reduce", "backward", "x")]),
    (
        "column",
        {"sequence_parallel": True},
        [
            ("all_gather", "forward", "x"),
            ("all_gather", "backward", "x"),
            ("reduce_scatter", "backward", "x"),
        ],
    ),
    ("row", {}, [("all_reduce", "forward", "y")]),
    ("row", {"input_is_parallel": False}, [("all_reduce", "forward", "y"), ("all_gather", "backward", "x")]),
    (
        "row",
        {"sequence_parallel": True},
        [("reduce_scatter", "forward", "y"), ("all_gather", "backward", "y")],
    ),
]


@pytest.mark.parametrize(
    ("kind", "flags", "want"),
    LINEAR_TABLES,
    ids=[f"{k}-{'-'.join(f) or 'plain'}" for k, f, _ in LINEAR_TABLES],
)
@pytest.mark.parametrize("t", [1, 3, 4])
def test_linear_layer_collectives(kind, flags, want, t):
    mesh, (s, b, fin, fout) = Mesh(t, names=("tp",)), (2 * t, 3, 7, 11)  # uneven, no empty piece
    m = build(kind, mesh, fin, fout, flags, init="exact", dtype=np.float32)
    flags = {"input_is_parallel": True, "sequence_parallel": False} | flags
    run(m, np.ones((s, b, fin), np.float32), input_placement(kind, flags), np.ones((s, b, fout), np.float32))
    nbytes = {"x": s * b * fin * 4, "y": s * b * fout * 4}
    label = type(m).__name__
    assert table(mesh) == [(c, label, d, nbytes[a], t) for c, d, a in want]


def records(mesh) -> list[dict]:
    return [asdict(c) for c in mesh.trace.collectives]


def ledger(mesh) -> list[dict]:
    return [{k: v for k, v in d.in_use.items() if v} for d in mesh.devices]


@given(layers(), st.sampled_from(DTYPES), st.integers(1, 4), st.integers(1, 3))
def test_a_shape_only_run_records_what_the_data_run_does(layer, dtype, s, b):
    kind, flags, t, fin, fout = layer
    shape_x, shape_y = (s, b, fin), (s, b, out_features(kind, fin, fout))
    x_tp = input_placement(kind, flags)
    runs = []
    for init, arrays in (("exact", np.ones), (None, meta)):
        mesh = Mesh(t, names=("tp",))
        m = build(kind, mesh, fin, fout, flags, init=init, dtype=dtype)
        out = m(distribute(arrays(shape_x, dtype), mesh, [x_tp]))
        y = out[0] if isinstance(out, tuple) else out
        after_forward = ledger(mesh)
        dx = m.backprop(distribute(arrays(shape_y, dtype), mesh, y.placements))
        runs.append((mesh, m, y, dx, after_forward))
    (data, _, y, dx, data_forward), (shapes, _, y_meta, dx_meta, shapes_forward) = runs
    assert y_meta.is_meta and dx_meta.is_meta and not y.is_meta
    assert (y_meta.shape, y_meta.placements, dx_meta.placements) == (y.shape, y.placements, dx.placements)
    assert records(shapes) == records(data)  # bytes, labels, directions, times
    assert shapes.trace.per_device() == data.trace.per_device()
    assert [(c.name, c.flops, c.nbytes) for c in shapes.trace.compute] == [
        (c.name, c.flops, c.nbytes) for c in data.trace.compute
    ]
    assert shapes_forward == data_forward  # activations, weights and what is in flight, per device
    assert ledger(shapes) == ledger(data)


def weight_elements(kind, flags, fin, fout, t, r) -> int:
    """The elements of the weight shards TP rank r holds."""
    if kind == "mlp":
        return weight_elements("column", flags, fin, fout, t, r) + weight_elements(
            "row", flags, fout, fin, t, r
        )
    bias = 1 if flags["bias"] else 0
    if kind == "column":
        return chunk_sizes(fout, t)[r] * (fin + bias)  # W and b split by out
    return fout * chunk_sizes(fin, t)[r] + bias * fout  # W split by in; b whole


def saved_elements(kind, flags, s, b, fin, fout, t, r) -> int:
    """The elements TP rank r keeps for backward: its x (a sequence piece under SP), and h and GeLU(h)."""
    if kind == "row":
        return s * b * chunk_sizes(fin, t)[r]
    x = (chunk_sizes(s, t)[r] if flags["sequence_parallel"] else s) * b * fin
    return x + 2 * s * b * chunk_sizes(fout, t)[r] if kind == "mlp" else x


@given(layers(), st.sampled_from(DTYPES), st.integers(1, 4), st.integers(1, 3))
def test_memory_ledger_counts_saved_activations_weights_and_grads(layer, dtype, s, b):
    kind, flags, t, fin, fout = layer
    mesh = Mesh(t, names=("tp",))
    m = build(kind, mesh, fin, fout, flags, init="exact", dtype=dtype)
    size = np.dtype(dtype).itemsize
    weights = [weight_elements(kind, flags, fin, fout, t, r) * size for r in range(t)]
    activations = [saved_elements(kind, flags, s, b, fin, fout, t, r) * size for r in range(t)]
    x_tp = input_placement(kind, flags)
    out = m(distribute(np.ones((s, b, fin), dtype), mesh, [x_tp]))  # the caller keeps no x: only m does
    y = out[0] if isinstance(out, tuple) else out
    assert [d.in_use["weights"] for d in mesh.devices] == weights
    assert [d.in_use["activations"] for d in mesh.devices] == activations
    assert all(d.in_use["comm"] == 0 for d in mesh.devices)  # collective buffers are given back
    m.backprop(distribute(np.ones((s, b, out_features(kind, fin, fout)), dtype), mesh, y.placements))
    # freed as backward returns, by reference counting alone (no cycles, so gc.collect() is not needed)
    assert [d.in_use["activations"] for d in mesh.devices] == [0] * t
    assert [d.in_use["grads"] for d in mesh.devices] == weights


def test_gather_output_with_sequence_parallel_is_refused():
    with pytest.raises(ValueError, match="gather_output and sequence_parallel"):
        ColumnParallelLinear(Mesh(2), 4, 4, gather_output=True, sequence_parallel=True)




@pytest.mark.parametrize("sequence_parallel", [False, True])
@pytest.mark.parametrize(
    ("kind", "t", "n", "bias"),
    [
        ("row", 4, 5, True),  # b is whole on every rank
        ("column", 4, 5, False),
        ("column", 8, 7, False),
        ("mlp", 3, 4, False),
        ("column", 4, 5, True),
        ("mlp", 3, 4, True),
    ],
)
def test_a_split_with_an_empty_piece_works_as_dtensor_lays_it_out(kind, t, n, bias, sequence_parallel):
    """n = 5 over 4 ranks is [2, 2, 1, 0]: rank 3 holds no features, and the layer is still the layer."""
    assert 0 in chunk_sizes(n, t)
    flags = {"bias": bias, "sequence_parallel": sequence_parallel}
    flags |= {"input_is_parallel": True} if kind == "row" else {}
    fin, fout = (n, 3) if kind == "row" else (3, n)
    m = build(kind, Mesh(t, names=("tp",)), fin, fout, flags, init="exact", dtype=np.float64)
    x, dy = np.ones((5, 2, fin)), np.ones((5, 2, out_features(kind, fin, fout)))
    y, _, dx, _ = run(m, x, input_placement(kind, flags), dy)
    want_y, want_dx, want_grads = plain(kind, m, x, dy)
    assert_allclose(y.full(), want_y)
    assert_allclose(dx.full(), want_dx)
    for name, g in full_grads(m).items():
        assert_allclose(g, want_grads[name], err_msg=name)


def test_row_parallel_refuses_a_replicated_input_when_input_is_parallel():
    mesh = Mesh(2, names=("tp",))
    m = RowParallelLinear(mesh, 4, 3, init="exact", dtype=np.float64)
    x = distribute(np.ones((2, 4)), mesh, R)
    before = ledger(mesh)
    with pytest.raises(PlacementError, match=r"(?<!\w)R(?!\w)"):
        m(x)
    assert ledger(mesh) == before and x.category == "tensor"


@pytest.mark.parametrize("kind", ["column", "row"])
def test_a_layer_refuses_an_input_with_the_wrong_number_of_features(kind):
    mesh = Mesh(2, names=("tp",))
    flags = {"bias": True, "sequence_parallel": False} | (
        {"input_is_parallel": True} if kind == "row" else {}
    )
    m = build(kind, mesh, 4, 6, flags, init="exact", dtype=np.float64)
    x = distribute(np.ones((2, 6)), mesh, [input_placement(kind, flags)])
    before = ledger(mesh)
    with pytest.raises(ShapeError, match="4"):
        m(x)
    assert ledger(mesh) == before and x.category == "tensor"


def test_after_backward_an_input_the_caller_keeps_is_no_longer_an_activation():
    mesh = Mesh(2, names=("tp",))
    m = ColumnParallelLinear(mesh, 4, 6, init="exact", dtype=np.float64)
    x = distribute(np.ones((3, 4)), mesh, R)
    m.backprop(distribute(np.ones((3, 6)), mesh, m(x).placements))
    gc.collect()
    assert [d.in_use["activations"] for d in mesh.devices] == [0, 0]
