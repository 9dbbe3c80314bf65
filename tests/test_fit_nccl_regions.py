"""`tpsim fit-nccl` on a log laid out as nccl-tests prints it, whose times switch from a tree to a ring
as the message grows (tpsim's NCCL model of 2 DGX A100, auto): one fit per region recovers each, to the
log's printed precision, and the error of every size is reported with its region."""

from __future__ import annotations

import json

import pytest

from tpsim.cli import main
from tpsim.collectives.costs import bus_bandwidth_factor
from tpsim.errors import FitError
from tpsim.nccl_tests import parse
from tpsim.plan.cluster import CLUSTERS

P = 16  # 2 nodes of 8
CLUSTER = CLUSTERS["a100"]
SIZES = [1 << k for k in range(10, 33, 2)]


def us(t: float) -> str:
    """nccl-tests' time column: 2 decimals under 100 us, 1 under 10 ms, none above."""
    v = t * 1e6
    return f"{v:7.2f}" if v < 100 else f"{v:7.1f}" if v < 10000 else f"{v:7.0f}"


def log_text() -> str:
    head = [
        "# nThread 1 nGpus 1 minBytes 1024 maxBytes 4294967296 step: 4(factor) warmup iters: 5 iters: 20 "
        "agg iters: 1 validation: 1 graph: 0",
        "#",
        "# Using devices",
        *(
            f"#  Rank {r:2d} Group  0 Pid {4000 + r:6d} on node{r // 8} device  {r % 8} [0x{r:02x}] "
            "NVIDIA A100-SXM4-80GB"
            for r in range(P)
        ),
        "#",
        "#" + " " * 62 + "out-of-place" + " " * 23 + "in-place",
        "#       size         count      type   redop    root     time   algbw   busbw #wrong     time"
        "   algbw   busbw #wrong",
        "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)"
        "  (GB/s)  (GB/s)",
    ]
    rows = []
    for s in SIZES:
        t = CLUSTER.all_reduce(P, 1, s)
        algbw = s / t / 1e9
        bus = algbw * bus_bandwidth_factor("all_reduce", P)
        cols = f"{us(t)} {algbw:7.2f} {bus:7.2f}"
        rows.append(f"{s:12d} {s // 4:13d}     float     sum      -1 {cols}    N/A {cols}    N/A")
    tail = ["# Out of bounds values : 0 OK", "# Avg bus bandwidth    : 42.0", "#"]
    return "\n".join([*head, *rows, *tail]) + "\n"


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "all_reduce_perf.log"
    path.write_text(log_text().replace("# nThread", "# Collective test starting: all_reduce_perf\n# nThread"))
    return path


def first_ring_size() -> int:
    return next(s for s in SIZES if CLUSTER.choose(P, 1, s) == "ring")


def test_the_log_reads_back_every_size_with_na_in_wrong():
    parsed = parse(log_text())
    assert parsed["ranks"] == P and [r["size"] for r in parsed["rows"]] == SIZES


def test_one_fit_per_region_recovers_both_algorithms(log, capsys):
    split = first_ring_size()
    assert CLUSTER.choose(P, 1, SIZES[0]) == "tree"  # two regions in this log
    assert main(["fit-nccl", str(log), "--split", str(split), "--algorithm", "tree,ring", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [g["algorithm"] for g in r["regions"]] == ["tree", "ring"]
    assert [p["size"] for p in r["points"]] == SIZES
    assert [p["region"] for p in r["points"]] == [int(s >= split) for s in SIZES]
    # the log prints 3 to 4 significant digits: rounding is at most 0.05 / 100 = 5e-4 of a time, and a
    # two-parameter fit through such points stays within twice that
    assert r["max_abs_error"] <= 1e-3
    ring = r["regions"][1]  # above the split the ring's bandwidth is the model's flat multi-rail one
    assert ring["bandwidth"] == pytest.approx(CLUSTER.ring(P, 1)[1], rel=1e-3)

    assert main(["fit-nccl", str(log), "--algorithm", "ring", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)  # one ring over both regions misses the tree's sizes
    assert one["max_abs_error"] > 10 * r["max_abs_error"]


def test_the_text_reports_each_region_and_each_size(log, capsys):
    main(["fit-nccl", str(log), "--split", str(first_ring_size()), "--algorithm", "tree,ring"])
    out = capsys.readouterr().out
    assert "region 0" in out and "region 1" in out and "Per size" in out
    assert out.count("tree") >= 2 and out.count(" ring ") >= 1


def test_a_region_too_small_to_fit_is_named(log):
    with pytest.raises(FitError, match=r"region 1 .* holds 1 sizes"):
        main_run(log, "--split", str(SIZES[-1]))
    with pytest.raises(FitError, match="names 3 algorithms for 2 regions"):
        main_run(log, "--split", "1MiB", "--algorithm", "tree,ring,ring")


def main_run(log, *argv):
    from tpsim.cli import build_parser

    args = build_parser().parse_args(["fit-nccl", str(log), *argv])
    return args.func(args)


def test_an_older_log_without_the_root_column_reads_alike():
    line = (
        "     1048576        262144     float     sum    45.10   23.25   40.69  0e+00"
        "    44.87   23.37   40.90  0e+00"
    )
    (row,) = parse("# all_reduce_perf\n" + line + "\n")["rows"]
    assert row["time_s"] == pytest.approx(45.10e-6) and row["in_place_time_s"] == pytest.approx(44.87e-6)


def test_mpirun_tagged_lines_read_alike():
    """`mpirun --tag-output` prefixes every line with "[job,rank]<stdout>:"."""
    tagged = "".join(f"[1,0]<stdout>:{line}\n" for line in log_text().splitlines())
    assert parse(tagged) == parse(log_text())
