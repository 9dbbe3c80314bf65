"""tpsim.bugs: every mutation is flagged by name, every correct layer passes, and the factors are the
ones each bug predicts."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.bugs import BY_NAME, CATALOGUE, SKIPPED, detect, grad_norm, run
from tpsim.darray import distribute
from tpsim.mesh import Mesh

NAMES = [m.name for m in CATALOGUE]


def test_catalogue_has_fifteen_documented_mutations():
    assert len(CATALOGUE) >= 15 and len(set(NAMES)) == len(NAMES)
    for m in CATALOGUE:
        assert m.what and m.source and m.symptom and m.caught_by
    newest = {"gqa_kv_head_grads_unreduced", "rope_positions_restart", "tied_embedding_grads_unreduced"}
    assert newest <= set(NAMES)
    assert not SKIPPED  # the pipeline stages made the last skipped one testable


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [2, 4])
def test_mutation_is_flagged_by_name(name, t):
    m = BY_NAME[name]
    report = m.detect(world_size=t)
    assert set(m.caught_by) <= set(report.flagged), report.format()
    assert all(report.errors[k] > 100 * report.rel_tol for k in m.caught_by)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [1, 2, 3])
def test_correct_layer_passes(name, t):
    m = BY_NAME[name]
    if name == "input_is_parallel_full_input" and t == 3:
        pytest.skip("in_features = 8 does not divide by 3")
    if m.pipelined and t % 2:
        pytest.skip("two pipeline stages of t/2 devices need an even t")
    report = m.detect_correct(world_size=t)
    assert report.ok, report.format()


@pytest.mark.parametrize("t", [2, 4])
def test_row_bias_every_rank_adds_t_biases(t):
    m = BY_NAME["row_bias_every_rank"]
    got, _ = run(m.build, Mesh(t), m.inputs)
    want, _ = run(m.truth, Mesh(1), m.inputs)
    bias = m.truth(Mesh(1)).params["bias"].full()
    extra = np.broadcast_to((t - 1) * bias, (5, 2, 6))
    np.testing.assert_array_equal(got["out"].full() - want["out"].full(), extra)


@pytest.mark.parametrize("t", [2, 4])
def test_reduce_scatter_mean_divides_by_t(t):
    m = BY_NAME["reduce_scatter_mean"]
    got, _ = run(m.build, Mesh(t), m.inputs)
    want, _ = run(m.truth, Mesh(1), m.inputs)
    np.testing.assert_array_equal(got["out"].full() * t, want["out"].full())


@pytest.mark.parametrize("t", [2, 4])
def test_unreduced_norm_grads_are_the_per_rank_partial_sums(t):
    """Each rank's dw is its own rows' share: summed over the ranks it gives the truth back."""
    m = BY_NAME["sp_norm_grad_unreduced"]
    got, _ = run(m.build, Mesh(t), m.inputs)
    want, _ = run(m.truth, Mesh(1), m.inputs)
    np.testing.assert_allclose(sum(got["grad.weight"].shards), want["grad.weight"].full(), rtol=1e-12)


@given(t=st.integers(2, 5))
def test_double_counted_norm_counts_replicated_squares_t_times(t):
    """||g||_bug^2 = ||g_sharded||^2 + t ||g_replicated||^2, exactly as the bug predicts."""
    m = BY_NAME["grad_norm_double_counted"]
    got, _ = run(m.build, Mesh(t), m.inputs, norm=grad_norm)
    replicated = ["grad.bias"]  # the only param R on TP in the row-parallel layer
    rep = sum(float(np.square(got[k].full()).sum()) for k in replicated)
    bugged = run(m.build, Mesh(t), m.inputs, norm=m.norm)[0]["grad_norm"]
    np.testing.assert_allclose(bugged**2, got["grad_norm"] ** 2 + (t - 1) * rep, rtol=1e-12)


@pytest.mark.parametrize(
    "name, same", [("dropout_tp_local_same_seed", True), ("dropout_replicated_different_seeds", False)]
)
def test_dropout_masks_across_shards(name, same):
    """Same seed: rank 1's mask is rank 0's first rows (one stream, read again); the right streams differ."""
    m = BY_NAME[name]
    for build, want_same in ((m.build, same), (m.truth, not same)):
        mesh = Mesh(2)
        y = build(mesh)(distribute(np.ones((5, 2, 8)), mesh, [m.inputs.placement]))
        a, b = y.shards
        assert np.array_equal(a[: b.shape[0]], b) == want_same


@pytest.mark.parametrize("t", [2, 4])
def test_unreduced_kv_grads_are_each_ranks_share(t):
    """Multi-query (one KV head on every rank): the copies' grads differ, and their sum is the truth's."""
    m = BY_NAME["gqa_kv_head_grads_unreduced"]
    got = m.view(run(m.build, Mesh(t), m.inputs)[0])["grad.query_key_value.weight[kv]"]
    want = m.view(run(m.truth, Mesh(t), m.inputs)[0])["grad.query_key_value.weight[kv]"]
    assert not np.array_equal(got.shards[0], got.shards[1])
    np.testing.assert_allclose(sum(got.shards), want.shards[0], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("t", [2, 4])
def test_unreduced_tied_copies_each_hold_one_term_and_drift_after_a_step(t):
    """Stage 0's copy holds the lookup's grad, the last stage's the logits'; they sum to the truth.  One SGD
    step from equal weights leaves the copies apart, where the correct pipeline keeps them bitwise equal."""
    from tpsim.bugs import pipeline

    m = BY_NAME["tied_embedding_grads_unreduced"]
    got, _ = pipeline.run_pipeline(m.build, t, m.inputs)
    want = pipeline.truth(m.inputs)
    first, copy = got[pipeline.TABLE].full(), got[pipeline.COPY].full()
    np.testing.assert_allclose(first + copy, want[pipeline.TABLE].full(), rtol=1e-12, atol=1e-12)
    assert np.abs(first).max() > 0 and np.abs(copy).max() > 0  # both stages' terms are there, apart
    for build, drift in ((m.build, True), (m.truth, False)):
        model = build(pipeline.pp_mesh(t))
        feed = pipeline.draw(m.inputs, 0)
        model.step(feed["tokens"], feed["targets"])
        table, out = model.stages[0].embedding.word_embeddings, model.stages[-1].output_layer
        w0 = table.params["weight"].full() - 0.1 * table.grads["weight"].full()
        w1 = out.params["weight"].full() - 0.1 * out.grads["weight"].full()
        assert (not np.array_equal(w0, w1)) == drift


@pytest.mark.parametrize("t", [2, 3])
def test_restarting_rope_is_right_on_the_first_shard_only(t):
    """Rank 0's rows start at position 0 either way; every later shard is rotated wrong."""
    m = BY_NAME["rope_positions_restart"]
    got, _ = run(m.build, Mesh(t), m.inputs)
    want, _ = run(m.truth, Mesh(t), m.inputs)
    same = [np.array_equal(a, b) for a, b in zip(got["out"].shards, want["out"].shards, strict=True)]
    assert same == [True] + [False] * (t - 1)


def test_bad_arguments_are_refused_before_anything_runs():
    from tpsim.bugs import Inputs
    from tpsim.errors import TpsimError, WorldSizeError

    m = BY_NAME["row_bias_every_rank"]
    with pytest.raises(TpsimError, match="valid kinds"):
        Inputs("ids", (5, 2))
    with pytest.raises(TpsimError, match="needs vocab"):
        Inputs("tokens", (5, 2))
    with pytest.raises(WorldSizeError, match="int >= 1"):
        detect(m.build, m.truth, m.inputs, world_size=0)
    with pytest.raises(WorldSizeError, match=r"even world size >= 2 .*, got 3"):
        BY_NAME["tied_embedding_grads_unreduced"].detect(world_size=3)


def test_cli_prints_every_mutation_caught(capsys):
    from tpsim.bugs.__main__ import main

    assert main(["--world-size", "2"]) == 0
    out = capsys.readouterr().out
    assert all(f"{n:<36} True" in out for n in NAMES)
    assert "skipped:" not in out  # no known bug is left out


def test_a_gradient_the_layer_never_produced_is_flagged():
    """A bug that drops a gradient altogether is named too, not skipped."""
    from tpsim.bugs import compare

    m = BY_NAME["row_bias_every_rank"]
    got, _ = run(m.truth, Mesh(2), m.inputs)
    want, _ = run(m.truth, Mesh(1), m.inputs)
    del got["grad.bias"]
    report = compare(got, want, 1e-12)
    assert report.flagged == ["grad.bias"] and report.findings[0].why.startswith("missing")


@pytest.mark.parametrize("t", [2, 3, 4])
def test_grad_norm_counts_a_replicated_kv_head_once(t):
    """MQA on t ranks: every rank holds the one KV head; the correct norm equals the unsharded one."""
    from tpsim.bugs.catalogue import GQA_H, _gqa
    from tpsim.bugs.detect import Inputs
    from tpsim.bugs.grad_norm import double_counted_grad_norm

    inputs = Inputs("x", (3, 2, GQA_H))
    sharded, _ = run(_gqa(), Mesh(t), inputs)
    whole, _ = run(_gqa(), Mesh(1), inputs)
    np.testing.assert_allclose(sharded["grad_norm"], whole["grad_norm"], rtol=1e-12)
    counted_t_times, _ = run(_gqa(), Mesh(t), inputs, norm=double_counted_grad_norm)
    assert counted_t_times["grad_norm"] > whole["grad_norm"] * (1 + 1e-6)
