"""Uneven all_gather / reduce_scatter: the bytes are what gloo sends (padded to the longest piece).

tpsim pads by default (layout.PADDED), the reference's native mode sends what gloo sends, and its
schedule mode pads the same way, so the three agree byte for byte; `padded=False` is tpsim's unpadded
schedule, which only schedule mode can run, and the two engines agree on it too.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

pytest.importorskip("torch")
import torch

import tpsim
from reference.comm import Comm
from reference.launch import spawn
from tpsim.collectives import Collective
from tpsim.collectives.costs import wire_size
from tpsim.errors import AlgorithmError

P = 4
GATHER_ROWS = [5, 5, 5, 2]  # S(0) of 17 rows by the torch.chunk rule: the last piece is short
SCATTER_ROWS = 17  # reduce_scatter's input rows on every rank: chunks 5, 5, 5, 2
COLS = 24


def inputs(collective: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    rows = GATHER_ROWS if collective == Collective.ALL_GATHER else [SCATTER_ROWS] * P
    return [rng.integers(-8, 9, (n, COLS)).astype(np.float32) for n in rows]


def _ranks(ctx, modes):
    out = []
    for mode, padded in modes:
        row = {}
        for c in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
            comm = Comm(mode=mode, algorithm={c: "ring"}, padded=padded)
            y = getattr(comm, c)(torch.from_numpy(inputs(c)[ctx.rank]), dim=0)
            row[c] = (y.numpy(), comm.bytes_sent)
        out.append(row)
    return out


def tpsim_side(c: str, padded: bool):
    mesh = tpsim.Mesh(P)
    y = getattr(tpsim, c)(inputs(c), mesh, algorithm="ring", padded=padded)
    return y, [d["sent"] for d in mesh.trace.per_device()]


@pytest.mark.multiprocess
def test_native_and_schedule_send_tpsims_bytes_padded_and_schedule_can_go_unpadded():
    modes = [("native", True), ("schedule", True), ("schedule", False)]
    got = spawn(_ranks, P, modes, device="cpu", timeout=120)
    for m, (mode, padded) in enumerate(modes):
        for c in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
            want, sent = tpsim_side(c, padded)
            for rank in range(P):
                y, nbytes = got[rank][m][c]
                assert_array_equal(y, want[rank], err_msg=f"{c} {mode} padded={padded} rank {rank}")
                assert nbytes == sent[rank], f"{c} {mode} padded={padded} rank {rank}"


@pytest.mark.parametrize("c", [Collective.ALL_GATHER, Collective.REDUCE_SCATTER])
def test_padding_costs_what_the_closed_form_says_and_never_reaches_the_result(c):
    x = inputs(c)
    rows = [a.shape[0] for a in x]
    (padded_y, padded_sent), (plain_y, plain_sent) = tpsim_side(c, True), tpsim_side(c, False)
    for a, b in zip(padded_y, plain_y, strict=True):
        assert_array_equal(a, b)
    itemsize = x[0].itemsize
    # ring all_gather / reduce_scatter: every rank sends (p - 1) / p of S
    assert sum(padded_sent) == (P - 1) * wire_size(c, P, rows, COLS * itemsize)
    unpadded = sum(a.nbytes for a in x) if c == Collective.ALL_GATHER else x[0].nbytes
    assert sum(plain_sent) == (P - 1) * unpadded
    assert sum(padded_sent) > sum(plain_sent)  # 17 rows do not split evenly over 4


def test_padded_must_be_a_bool_and_the_state_stays():
    mesh = tpsim.Mesh(P)
    with pytest.raises(AlgorithmError, match="padded='no'"):
        tpsim.all_gather(inputs(Collective.ALL_GATHER), mesh, padded="no")
    assert not mesh.trace.collectives and all(d.used == 0 for d in mesh.devices)
