"""reference.bugs: every mutation mirrored on real gloo ranks (world size 2, one spawn for all) is caught
by name, equals tpsim's buggy layer rank for rank, and the reference's correct layer passes.  The pipelined
GPT's entry runs as two stages of one rank each, send/recv between them."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from reference.bugs.catalogue import MIRROR
from reference.bugs.check import check
from tpsim.bugs import CATALOGUE

NAMES = [m.name for m in CATALOGUE]
pytestmark = pytest.mark.multiprocess  # one spawn of 2 gloo ranks for the whole catalogue


@pytest.fixture(scope="module")
def rows():
    return {r["name"]: r for r in check(2, timeout=240)}


def test_every_mutation_has_a_mirror():
    assert set(MIRROR) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_reference_mutation_caught_mirrored_and_correct_passes(rows, name):
    r = rows[name]
    m = next(m for m in CATALOGUE if m.name == name)
    assert set(m.caught_by) <= set(r["flagged"]), r
    assert r["mirror_ok"], f"reference and tpsim differ by {r['mirror_error']:.3g}"
    assert r["correct_ok"], r


@pytest.mark.parametrize("name, clean", [("row_bias_every_rank", ("dx", "grad.weight", "grad.bias")),
                                         ("reduce_scatter_mean", ("dx", "grad.weight"))])
def test_checker_names_only_what_the_bug_touches(rows, name, clean):
    """A bug in the forward value alone leaves the backward exact: those tensors are not flagged."""
    assert all(rows[name]["errors"][k] == 0 for k in clean)
    assert not set(clean) & set(rows[name]["flagged"])
