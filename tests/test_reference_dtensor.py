"""tpsim against PyTorch's own tensor parallelism (DTensor): the same outputs, grads and collectives.

One launch per world size (gloo on CPU) runs every layer (MLP, attention, block), with and without
sequence parallelism, on arbitrary floats (float32) and on small integers (float64); the tests read
its reports.  The collective counts of DTensor's CommDebugMode must equal tpsim's communication
table, except for the differences that the two designs imply (reference/dtensor_compare.py); they
are asserted here, with their numbers worked out by hand for the block.
"""

from __future__ import annotations

import json
import time

import pytest

from reference.dtensor import Case, cases, check, cli, run_tpsim
from reference.dtensor_compare import format_reports, passed
from tpsim.errors import ShapeError

pytestmark = pytest.mark.multiprocess

WORLD_SIZES = (2, 3)  # 6 heads, ffn 96 and seq 6 split evenly over both
PARAMS = {"mlp": 4, "attention": 4, "block": 12}  # weights and biases


@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda t: f"tp{t}")
def reports(request):
    got = check(request.param, cases(), timeout=120)
    return {(r["case"]["layer"], r["case"]["sp"], r["case"]["init"]): r for r in got}


def counts(report) -> dict:
    """(phase, kind) -> (tpsim, DTensor)."""
    return {(r["phase"], r["kind"]): (r["tpsim"], r["dtensor"]) for r in report["comm"]}


def test_every_case_ran(reports):
    assert len(reports) == len(cases())
    for (layer, _, _), rep in reports.items():
        names = [t["name"] for t in rep["tensors"]]
        assert names[:2] == ["y", "dx"] and len(names) == 2 + PARAMS[layer], names


def test_outputs_and_grads_match_tpsim(reports):
    """Within torch.testing.assert_close's default tolerance of the dtype, every tensor, every case."""
    for rep in reports.values():
        bad = [(t["name"], t["max_abs_err"]) for t in rep["tensors"] if not t["assert_close"]]
        assert not bad, f"{rep['name']}: {bad}"


def test_integer_sums_are_bitwise(reports):
    """On integer data, a grad that is only a sum of integers (the output bias's: the sum of dy's rows)
    is exact in any order, so it is bitwise equal; tensors past a GeLU, softmax or LayerNorm are not
    (NumPy's and torch's tanh, exp and sqrt differ in the last bit), and the table says so."""
    for (layer, sp, init), rep in reports.items():
        if init != "exact":
            continue
        bias = {"mlp": "fc2.bias", "attention": "dense.bias", "block": "mlp.fc2.bias"}[layer]
        row = next(t for t in rep["tensors"] if t["name"] == bias)
        assert row["bitwise"] and row["max_abs_err"] == 0.0, (layer, sp, row)


def test_weight_shards_and_rank_agreement(reports):
    """DTensor's local shard of every parameter is tpsim's shard on that rank (torch.chunk layout, whole
    heads per rank for the interleaved QKV); every rank ends up with the same full tensors."""
    for rep in reports.values():
        assert rep["shards_equal"], rep["name"]
        assert rep["ranks_agree"], rep["name"]


def test_collectives_equal_without_sp(reports):
    for (layer, sp, _), rep in reports.items():
        if sp:
            continue
        assert all(r["status"] == "equal" and not r["reasons"] for r in rep["comm"]), rep["comm"]
        pairs = 2 if layer == "block" else 1  # one column -> row pair per MLP and per attention
        want = {("forward", "all_reduce"): (pairs, pairs), ("backward", "all_reduce"): (pairs, pairs)}
        assert counts(rep) == want


def test_collectives_with_sp_differ_only_as_known(reports):
    for (layer, sp, _), rep in reports.items():
        if not sp:
            continue
        assert all(r["status"] != "MISMATCH" for r in rep["comm"]), rep["comm"]
        pairs = 2 if layer == "block" else 1
        got = counts(rep)
        assert got[("forward", "all_gather")] == got[("forward", "reduce_scatter")] == (pairs, pairs)
        assert got[("backward", "reduce_scatter")] == (pairs, pairs)
        # [regather]: tpsim, as Megatron, all-gathers each column-parallel linear's input again for dW
        assert got[("backward", "all_gather")] == (2 * pairs, pairs)


def test_block_sp_layernorm_grads(reports):
    """The two SP LayerNorms: tpsim all-reduces [dw; db] fused in backward (2 calls); DTensor leaves the
    four grads Partial(sum) and reducing them takes 4 all-reduces. Worked out by hand, any world size."""
    for init in ("normal", "exact"):
        rep = reports[("block", True, init)]
        got = counts(rep)
        assert got[("backward", "all_reduce")] == (2, 0)
        assert got[("grads P->R", "all_reduce")] == (0, 4)
        assert len(got) == 6  # and nothing else: forward AG, RS; backward AG, RS, AR; grads AR
        places = rep["grad_placements"]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            assert places[f"{norm}.weight"] == places[f"{norm}.bias"] == "P(sum)"
        assert places["mlp.fc1.weight"] == "S(0)" and places["mlp.fc2.weight"] == "S(1)"
        assert places["mlp.fc2.bias"] == "R"  # added after the reduce-scatter's inverse: a full sum
    plain = reports[("block", False, "normal")]["grad_placements"]
    assert plain["input_layernorm.weight"] == "plain"  # not parallelized without SP: every rank computes it


def test_table_names_every_difference(reports):
    text = format_reports(list(reports.values()))
    for key in ("[regather]", "[ln-fused]", "[ln-partial]"):
        assert text.count(key) >= 2  # in a row of the table and in its note
    assert "MISMATCH" not in text and all(map(passed, reports.values()))
    ops = {op for rep in reports.values() for op in rep["dtensor_ops"]}  # what the kinds were mapped from
    names = ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor")
    assert ops == {f"c10d_functional.{k}" for k in names}


def test_uneven_sequence_is_refused_before_any_rank_starts():
    start = time.monotonic()
    with pytest.raises(ShapeError, match=r"seq_len = 7 does not divide by the world size 2.*\[1, 7\]"):
        check(2, [Case("mlp", True, s=7)])
    assert time.monotonic() - start < 5  # no processes were spawned


def test_cli_refuses_heads_that_do_not_split(capsys):
    assert cli(["--world-size", "4", "--layer", "attention", "--no-sp"]) == 1
    err = capsys.readouterr().err
    assert "num_heads = 6 does not divide by the TP degree 4" in err and "[1, 2, 3, 6]" in err


def test_cli_prints_table_and_json(tmp_path, capsys):
    out = tmp_path / "dtensor.json"
    argv = ["--world-size", "2", "--layer", "mlp", "--sp", "--init", "normal", "--json", str(out)]
    assert cli(argv) == 0
    text = capsys.readouterr().out
    assert "mlp SP  backward  all_gather          2        1  known [regather]" in text
    assert "1 of 1 cases pass" in text
    saved = json.loads(out.read_text())
    assert saved["world_size"] == 2 and saved["reports"][0]["name"] == "mlp SP normal float32"


def test_one_rank_expects_no_dtensor_collectives():
    """At world size 1 tpsim still records each collective (a group of one); DTensor issues none."""
    tp = run_tpsim(Case("block", True), 1)
    assert tp["comm"]["forward"] == {"all_gather": 2, "reduce_scatter": 2}
    assert tp["known"] == {
        (phase, kind): (n, ["one-rank"]) for phase, kinds in tp["comm"].items() for kind, n in kinds.items()
    }
