"""nccl-tests output (tpsim/nccl_tests.py) and `tpsim fit-nccl`: a log written from known alpha and
bandwidth with tpsim's ring closed form is read back, fitted, and the two recovered."""

from __future__ import annotations

import json

import pytest

from tpsim.cli import main
from tpsim.collectives.costs import ring_all_reduce
from tpsim.nccl_tests import NcclTestsError, parse

ALPHA, BW, P = 8e-6, 180e9, 8
HEADER = (
    """# nThread 1 nGpus 8 minBytes 1024 maxBytes 268435456 step: 4(factor) warmup iters: 5 iters: 20
# Collective test starting: all_reduce_perf
#
# Using devices
"""
    + "".join(
        f"#  Rank  {i} Group  0 Pid  4242 on    node0 device  {i} [0x{i:02x}] NVIDIA H100 80GB HBM3\n"
        for i in range(P)
    )
    + """#
#                                         out-of-place                  in-place
#    size    count  type redop root   time algbw busbw #wrong   time algbw busbw #wrong
#     (B) (elements)                  (us) (GB/s) (GB/s)        (us) (GB/s) (GB/s)
"""
)


def log_text(sizes=(1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26, 1 << 28)) -> str:
    lines = []
    for s in sizes:
        us = ring_all_reduce(P, s, ALPHA, BW) * 1e6
        algbw = s / us / 1e3
        bus = algbw * 2 * (P - 1) / P
        lines.append(f"{s:>12} {s // 4:>13} float sum -1 {us:8.6f} {algbw:7.2f} {bus:7.2f} 0 {us:8.6f} 0 0 0")
    return HEADER + "\n".join(lines) + "\n# Out of bounds values : 0 OK\n# Avg bus bandwidth    : 99.9\n"


def test_parse_reads_the_collective_the_ranks_and_every_size():
    log = parse(log_text())
    assert (log["collective"], log["ranks"]) == ("all_reduce", P)
    assert [r["size"] for r in log["rows"]] == [1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26, 1 << 28]
    assert log["rows"][-1]["time_s"] == pytest.approx(ring_all_reduce(P, 1 << 28, ALPHA, BW), rel=1e-6)


def test_fit_nccl_recovers_alpha_and_bandwidth(tmp_path, capsys):
    path = tmp_path / "all_reduce.log"
    path.write_text(log_text())
    assert main(["fit-nccl", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["alpha"] == pytest.approx(ALPHA, rel=1e-3) and r["bandwidth"] == pytest.approx(BW, rel=1e-3)
    assert r["max_abs_error"] < 1e-3 and len(r["points"]) == 6
    main(["fit-nccl", str(path), "--min-size", "1MiB"])
    assert "Per size" in capsys.readouterr().out


def test_not_a_log_is_refused(tmp_path, capsys):
    with pytest.raises(NcclTestsError, match="no nccl-tests data lines"):
        parse("hello\n# size count\n")
    path = tmp_path / "x.log"
    path.write_text(
        log_text().replace("# Collective test starting: all_reduce_perf\n", "").replace("all_reduce", "")
    )
    with pytest.raises(SystemExit):
        main(["fit-nccl", str(path)])
    assert "pass --collective" in capsys.readouterr().err
