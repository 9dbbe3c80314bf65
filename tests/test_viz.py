"""tpsim.viz: every picture holds what the simulator reported, read back from the drawn artists.

Each test runs something on virtual devices, draws it, then reads the figure (patches, texts,
image data, line data) and compares it with the simulator's own objects: placements and
local_slices, snapshots, trace.traffic_matrix(), per_link(), device_timeline rows, device memory,
and the closed-form costs.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_rgb
from PIL import Image
from rich.console import Console

import tpsim
from tpsim import Mesh, Partial, Replicate, Shard, distribute, meta, presets, viz
from tpsim.collectives import Collective
from tpsim.collectives.algorithms import build
from tpsim.collectives.costs import cost
from tpsim.darray import local_slices
from tpsim.errors import AlgorithmError, TopologyError, WorldSizeError
from tpsim.nn import ParallelMLP, TransformerBlock, device_timeline, tp_efficiency
from tpsim.nn.config import GPTConfig
from tpsim.report import fmt_bytes
from tpsim.viz.style import EVENT_COLORS, MEMORY_COLORS, device_color, fmt_value

R = Replicate()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def patches(fig, prefix: str) -> list:
    return [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith(prefix)]


def texts(fig, gid: str) -> list:
    return [t for ax in fig.axes for t in ax.texts if t.get_gid() == gid]


def same_color(a, b) -> bool:
    return np.allclose(to_rgb(a), to_rgb(b))


# ---------------------------------------------------------------- show_darray


def check_darray_picture(x) -> None:
    """Each device's patches: its colour, inside its block, covering 1/m of it (m devices share it)."""
    fig = viz.show_darray(x)
    n = x.mesh.size
    blocks = {d: local_slices(x.shape, x.mesh, x.placements, d) for d in range(n)}
    for d in range(n):
        block = blocks[d]
        rows, cols = (block[0], block[1]) if x.ndim == 2 else (slice(0, 1), block[0])
        holders = sum(blocks[e] == block for e in range(n))
        mine = patches(fig, f"dev{d}")
        size = (rows.stop - rows.start) * (cols.stop - cols.start)
        if size == 0:
            assert not mine, f"dev{d} holds nothing but is drawn"
            continue
        assert mine
        for p in mine:
            assert same_color(p.get_facecolor(), device_color(d, n))
            assert cols.start - 1e-9 <= p.get_x() and p.get_x() + p.get_width() <= cols.stop + 1e-9
            assert rows.start - 1e-9 <= p.get_y() and p.get_y() + p.get_height() <= rows.stop + 1e-9
        area = sum(p.get_width() * p.get_height() for p in mine)
        assert area == pytest.approx(size / holders)
    if np.prod(x.shape) <= 64 and not any(isinstance(p, Partial) for p in x.placements):
        full = x.full().reshape(1, -1) if x.ndim == 1 else x.full()
        values = texts(fig, "value")
        assert len(values) == full.size
        for t in values:
            c, r = (int(v - 0.5) for v in t.get_position())
            assert t.get_text() == fmt_value(full[r, c])
    title = fig.axes[0].get_title()
    for name, p in zip(x.mesh.names, x.placements, strict=True):
        assert f"{name}={p!r}" in title


@settings(max_examples=12)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 7),
    p=st.integers(1, 5),
    placement=st.sampled_from([Shard(0), Shard(1), R]),
)
def test_darray_blocks_are_the_devices_local_slices(rows, cols, p, placement):
    x = distribute(np.arange(rows * cols, dtype=np.float32).reshape(rows, cols), Mesh(p), [placement])
    check_darray_picture(x)
    plt.close("all")


@pytest.mark.parametrize(
    "placements", [[Shard(0), Shard(1)], [Shard(1), R], [R, Shard(0)], [Partial(), Shard(1)], [R, R]]
)
def test_darray_on_a_2d_mesh(placements):
    mesh = Mesh((2, 2), names=("dp", "tp"))
    check_darray_picture(distribute(np.arange(30.0).reshape(5, 6), mesh, placements))


def test_darray_1d_uneven_and_shape_only():
    check_darray_picture(distribute(np.arange(5.0), Mesh(4), [Shard(0)]))  # pieces [2, 2, 1, 0]
    fig = viz.show_darray(distribute(meta((512, 1024), "bfloat16"), Mesh(8), [Shard(1)]))
    assert not texts(fig, "value")  # no data, no values
    assert len(patches(fig, "dev")) == 8


def test_darray_partial_prints_each_devices_term():
    mesh = Mesh(2)
    x = tpsim.from_local([np.array([[1.0, 2.0]]), np.array([[10.0, 20.0]])], mesh, [Partial()])
    fig = viz.show_darray(x)
    values = texts(fig, "value")
    assert len(values) == 2 * 2
    for t in values:
        c, y = t.get_position()
        d = int(y * 2)  # line d of 2 in row 0 is device d's term
        assert t.get_text() == fmt_value(x.local(d)[0, int(c)])
        assert same_color(t.get_color(), device_color(d, 2))


def test_darray_3d_folds_leading_dims_into_rows():
    mesh = Mesh((2, 2), names=("dp", "tp"))
    x = distribute(np.arange(24.0).reshape(2, 3, 4), mesh, [Shard(1), Shard(0)])
    fig = viz.show_darray(x)
    for d in range(4):
        block = local_slices(x.shape, mesh, x.placements, d)
        size = np.prod([s.stop - s.start for s in block])
        drawn = sum(p.get_width() * p.get_height() for p in patches(fig, f"dev{d}"))
        assert drawn == size
    for t in texts(fig, "value"):  # row r of the view is (i, j) = divmod(r, 3)
        c, r = (int(v - 0.5) for v in t.get_position())
        assert t.get_text() == fmt_value(x.full()[r // 3, r % 3, c])


def test_show_darray_rejects_a_plain_array():
    with pytest.raises(TypeError, match="DArray"):
        viz.show_darray(np.zeros(3))


# ---------------------------------------------------------------- show_step, animation


RUNS = [
    (Collective.ALL_REDUCE, "ring", 4, {}),
    (Collective.ALL_REDUCE, "halving_doubling", 5, {}),  # fold steps for p not a power of two
    (Collective.BROADCAST, "tree", 5, {"root": 2}),
    (Collective.ALL_TO_ALL, "pairwise", 3, {}),  # starts with a local copy step
    (Collective.REDUCE_SCATTER, "direct", 4, {}),  # several reductions into one chunk in one step
]


def buffers_for(collective: str, p: int, root: int | None = None) -> list:
    if collective in (Collective.BROADCAST, Collective.SCATTER):
        return [np.arange(p, dtype=np.float64) if d == root else None for d in range(p)]
    return [np.arange(p, dtype=np.float64) + 10 * d for d in range(p)]


def point_to_box(point, box) -> float:
    """Distance from a point to a device box (0 inside)."""
    x0, y0, w, h = box.get_x(), box.get_y(), box.get_width(), box.get_height()
    dx = max(x0 - point[0], 0, point[0] - (x0 + w))
    dy = max(y0 - point[1], 0, point[1] - (y0 + h))
    return float(np.hypot(dx, dy))


@pytest.mark.parametrize(("collective", "algorithm", "p", "kw"), RUNS)
def test_show_step_draws_the_snapshot(collective, algorithm, p, kw):
    mesh = Mesh(p)
    snaps = list(tpsim.stepwise(collective, buffers_for(collective, p, kw.get("root")), mesh,
                                algorithm=algorithm, **kw))
    assert len(snaps) == len(build(collective, algorithm, p, kw.get("root")).steps) + 1
    for snap in snaps:
        fig = viz.show_step(snap, mesh)
        boxes = {d: patches(fig, f"box dev{d}")[0] for d in range(p)}
        moves = [t for t in snap.transfers if t.src != t.dst]
        arrows = patches(fig, "transfer ")
        assert len(arrows) == len(moves)
        for arrow, t in zip(arrows, moves, strict=True):
            start, end = arrow._posA_posB  # where the arrow was drawn from and to
            assert point_to_box(start, boxes[t.src]) < 0.2 < point_to_box(start, boxes[t.dst])
            assert point_to_box(end, boxes[t.dst]) < 0.2 < point_to_box(end, boxes[t.src])
        for d, chunks in snap.holds.items():
            for c, atoms in enumerate(chunks):
                stripes = patches(fig, f"chunk {d}.{c} from dev")
                owners = sorted(int(s.get_gid().rsplit("dev", 1)[1]) for s in stripes)
                assert owners == sorted(atoms or ())
                for s, q in zip(stripes, owners, strict=True):
                    assert same_color(s.get_facecolor(), device_color(q, p))
                for v in texts(fig, f"value {d}.{c}"):
                    assert v.get_text() == fmt_value(snap.buffers[d][c][0])
        title = fig.axes[0].get_title()
        assert fmt_bytes(snap.wire_bytes) in title
        assert re.search(rf"step {snap.step}\b", title) or snap.step == 0
        plt.close("all")
    assert snaps[-1].wire_bytes == mesh.trace.wire_bytes


def test_show_step_on_a_2d_mesh_lays_devices_on_a_grid():
    mesh = Mesh((2, 3), names=("dp", "tp"))
    snaps = list(tpsim.stepwise(Collective.ALL_GATHER, [np.ones(2)] * 6, mesh, mesh_dim="tp"))
    fig = viz.show_step(snaps[1], mesh)
    centres = {}
    for d in range(6):
        box = patches(fig, f"box dev{d}")[0]
        centres[d] = (box.get_x() + box.get_width() / 2, box.get_y() + box.get_height() / 2)
    for d in range(6):  # mesh row r is one row of boxes, column c one column
        r, c = mesh.coordinate(d)
        assert centres[d][1] == pytest.approx(centres[mesh.device_at((r, 0))][1])
        assert centres[d][0] == pytest.approx(centres[mesh.device_at((0, c))][0])
    assert len(patches(fig, "transfer ")) == len(snaps[1].transfers) == 6  # one ring step per group


def test_animation_frames_html_and_gif(tmp_path):
    mesh = Mesh(4)
    ar = Collective.ALL_REDUCE
    anim = viz.animate_collective(ar, buffers_for(ar, 4), mesh, algorithm="ring",
                                  interval=300)
    frames = len(build(Collective.ALL_REDUCE, "ring", 4).steps) + 1
    assert len(anim.snapshots) == frames
    assert [s.step for s in anim.snapshots] == list(range(frames))
    html = viz.to_html(anim)
    assert html.count("data:image/png;base64") == frames
    # the player works offline: no Font Awesome stylesheet from a CDN, plain-character buttons
    assert "font-awesome" not in html and 'class="fa ' not in html and "http" not in html.split("<script")[0]
    assert 'title="Play"' in html and "\u25b6" in html and "\u275a\u275a" in html
    path = viz.save_gif(anim, tmp_path / "ring.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == frames
        assert gif.info["duration"] == 300
        pictures = []
        for i in range(frames):
            gif.seek(i)
            pictures.append(np.asarray(gif.convert("RGB")))
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(pictures))
    np.testing.assert_array_equal(np.concatenate(anim.snapshots[-1].buffers[2]), 60 + 4 * np.arange(4.0))


# (collective, root, {group rank: placement before}, {group rank: placement after}) on 4 devices
CHANGES = [
    (Collective.ALL_REDUCE, None, dict.fromkeys(range(4), "P"), dict.fromkeys(range(4), "R")),
    (Collective.ALL_GATHER, None, dict.fromkeys(range(4), "S(0)"), dict.fromkeys(range(4), "R")),
    (Collective.REDUCE_SCATTER, None, dict.fromkeys(range(4), "P"), dict.fromkeys(range(4), "S(0)")),
    (Collective.ALL_TO_ALL, None, dict.fromkeys(range(4), "S(1)"), dict.fromkeys(range(4), "S(0)")),
    (Collective.BROADCAST, 2, {0: "-", 1: "-", 2: "R", 3: "-"}, dict.fromkeys(range(4), "R")),
    (Collective.REDUCE, 1, dict.fromkeys(range(4), "P"), {0: "-", 1: "R", 2: "-", 3: "-"}),
]


def placement_texts(fig, devices) -> dict:
    return {d: texts(fig, f"placement dev{d}")[0].get_text() for d in devices}


@pytest.mark.parametrize(("collective", "root", "before", "after"), CHANGES, ids=[c[0] for c in CHANGES])
def test_every_frame_labels_each_box_with_its_buffers_placement(collective, root, before, after):
    kw = {} if root is None else {"root": root}
    anim = viz.animate_collective(collective, buffers_for(collective, 4, root), Mesh(4), **kw)
    anim._draw_was_started = True  # its frames are drawn one by one here, not by a writer
    last = len(anim.snapshots) - 1
    for i in range(last + 1):
        anim._func(i)  # draws frame i into the animation's axes
        got = placement_texts(anim._fig, range(4))
        if i == 0:
            assert got == before
        elif i == last:
            assert got == after
        else:  # in between: the change the collective is making
            assert got == {d: f"{before[d]} -> {after[d]}" for d in range(4)}


def test_show_step_labels_the_group_s_placement_on_a_2d_mesh():
    mesh = Mesh((2, 3), names=("dp", "tp"))
    snaps = list(tpsim.stepwise(Collective.REDUCE, [np.ones(2)] * 6, mesh, mesh_dim="tp", root=1))
    fig = viz.show_step(snaps[-1], mesh, root=1)  # steps known from the schedule: the final state
    roots = {g[1] for g in mesh.groups("tp")}
    assert placement_texts(fig, range(6)) == {d: "R" if d in roots else "-" for d in range(6)}


DARRAY_LABELS = [([Shard(0)], "S(0)"), ([Replicate()], "R"), ([Partial()], "P"), ([Shard(1)], "S(1)")]


@pytest.mark.parametrize(("placements", "label"), DARRAY_LABELS)
def test_show_darray_labels_every_block_and_device_with_the_placement(placements, label):
    x = distribute(np.arange(12.0).reshape(3, 4), Mesh(3), placements)
    fig = viz.show_darray(x)
    labelled = [t for d in range(3) for t in texts(fig, f"placement dev{d}")]
    blocks = {tuple(map(repr, local_slices(x.shape, x.mesh, x.placements, d))) for d in range(3)}
    assert len(labelled) == len(blocks) - (label == "S(1)")  # S(1): 4 columns over 3, one piece empty
    assert {t.get_text() for t in labelled} == {label}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [f"dev{d} {label}" for d in range(3)]


def test_show_darray_labels_a_2d_mesh_placement_per_mesh_dim():
    x = distribute(np.arange(24.0).reshape(4, 6), Mesh((2, 2)), [Shard(0), Replicate()])
    fig = viz.show_darray(x)
    assert {t.get_text() for d in range(4) for t in texts(fig, f"placement dev{d}")} == {"S(0),R"}


def test_readme_gif_is_small_and_one_frame_per_step():
    gif = Path(__file__).resolve().parent.parent / "docs" / "img" / "ring_allreduce.gif"
    if not gif.exists():
        pytest.skip("docs/img/ring_allreduce.gif not rendered (python scripts/make_readme_gif.py)")
    assert gif.stat().st_size < 1.5 * 2**20
    with Image.open(gif) as im:
        assert im.n_frames == len(build(Collective.ALL_REDUCE, "ring", 4).steps) + 1


# ---------------------------------------------------------------- traffic


def busy_mesh() -> Mesh:
    mesh = Mesh(4, topology=presets.ring(4))
    tpsim.all_reduce([np.arange(8.0)] * 4, mesh, algorithm="ring")
    tpsim.broadcast([np.arange(6.0)] + [None] * 3, mesh, root=0, algorithm="tree")
    tpsim.all_gather([np.ones(3)] * 4, mesh, algorithm="direct")
    return mesh


def test_heatmap_is_the_traffic_matrix():
    mesh = busy_mesh()
    fig = viz.traffic_heatmap(mesh.trace)
    image = fig.axes[0].images[0]
    np.testing.assert_array_equal(np.asarray(image.get_array()), mesh.trace.traffic_matrix())
    labels = [t.get_text() for t in fig.axes[0].texts]
    matrix = mesh.trace.traffic_matrix()
    assert sorted(labels) == sorted(fmt_bytes(v) for v in matrix.ravel() if v)


def test_link_load_bars_are_per_link_bytes():
    mesh = busy_mesh()
    rows = mesh.trace.per_link()
    fig = viz.link_load(mesh)
    bars = patches(fig, "link ")
    assert [b.get_height() for b in bars] == [r["bytes"] for r in rows]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [r["link"] for r in rows]
    top = viz.link_load(mesh, top=3)
    kept = sorted(rows, key=lambda r: -r["bytes"])[:3]
    assert sorted(b.get_height() for b in patches(top, "link ")) == sorted(r["bytes"] for r in kept)


# ---------------------------------------------------------------- timeline, memory


def mlp_run(capacity: int | None = None) -> tuple[Mesh, ParallelMLP]:
    """A shape-only MLP forward and backward on 2 devices; the module is returned to keep its weights."""
    mesh = Mesh(2, device="h100", topology=presets.nvlink_node(2), memory=capacity)
    mlp = ParallelMLP(mesh, 256, 1024, init=None, dtype="bfloat16")
    mlp(distribute(meta((512, 256), "bfloat16"), mesh, [R]))
    mlp.backprop(distribute(meta((512, 256), "bfloat16"), mesh, [R]))
    return mesh, mlp


def test_timeline_bars_are_the_device_timeline_rows():
    mesh, _ = mlp_run()
    fig = viz.timeline(mesh)
    for d in range(mesh.size):
        rows = device_timeline(mesh, d)
        assert {r["direction"] for r in rows} == {"forward", "backward"}
        assert {r["kind"] for r in rows} == {"compute", "collective"}
        bars = patches(fig, f"event dev{d} ")
        assert len(bars) == len(rows)
        for bar, r in zip(bars, rows, strict=True):
            assert bar.get_x() == r["start"]
            assert bar.get_width() == pytest.approx(r["end"] - r["start"], rel=1e-12, abs=1e-18)
            assert same_color(bar.get_facecolor(), EVENT_COLORS[r["kind"], r["direction"]])
            assert bar.get_y() + bar.get_height() / 2 == pytest.approx(d)  # lane d
    one = viz.timeline(device_timeline(mesh, 1))
    assert len(patches(one, "event dev0 ")) == len(device_timeline(mesh, 1))
    with pytest.raises(TypeError, match="timeline needs"):
        viz.timeline([1, 2])


def test_memory_bars_are_in_use_by_category_and_capacity_is_the_line():
    probe, _ = mlp_run()
    peak = max(d.peak for d in probe.devices)
    mesh, _mlp = mlp_run(capacity=2 * peak)  # _mlp keeps the weights and grads alive
    fig = viz.memory(mesh)
    for dev in mesh.devices:
        cats = [c for c in MEMORY_COLORS if dev.in_use.get(c)]
        assert {"weights", "grads"} <= set(cats), cats
        bottom = 0
        for c in cats:
            (bar,) = patches(fig, f"{c} dev{dev.index}")
            assert bar.get_height() == dev.in_use[c]
            assert bar.get_y() == bottom
            bottom += dev.in_use[c]
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "capacity"]
    assert set(line.get_ydata()) == {2 * peak}
    unbounded = viz.memory(probe)  # 80 GiB of an H100 is far above: stated, not drawn
    assert not [ln for ln in unbounded.axes[0].lines if ln.get_gid() == "capacity"]
    assert "80.00 GiB" in unbounded.axes[0].get_title()


# ---------------------------------------------------------------- cost curves


def test_cost_curves_are_the_closed_forms_and_match_the_engine_on_a_uniform_network():
    alpha, bandwidth, p = 3e-6, 50e9, 4
    sizes = [1 << 12, 1 << 16, 1 << 20, 1 << 24]
    for collective in (Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
        fig = viz.cost_curves(collective, p, (alpha, bandwidth), sizes=sizes, measured=True)
        lines = {ln.get_gid(): ln for ln in fig.axes[0].lines}
        for a in tpsim.ALGORITHMS[collective]:
            closed = lines[f"closed form {a}"]
            assert list(closed.get_xdata()) == sizes
            assert list(closed.get_ydata()) == [cost(collective, a, p, s, alpha, bandwidth) for s in sizes]
            # on a fully connected network with S divisible by p the engine's time is the formula
            np.testing.assert_allclose(lines[f"simulated {a}"].get_ydata(), closed.get_ydata(), rtol=1e-9)
        plt.close("all")


def test_cost_curves_on_a_preset_use_its_path_and_check_input():
    fig = viz.cost_curves(Collective.ALL_REDUCE, 8, "pcie4", algorithms=["ring"], sizes=[1 << 20])
    path = presets.pcie(8, 4).path(0, 1)
    a, bw = sum(x.alpha for x in path), min(x.bandwidth for x in path)
    assert fig.axes[0].lines[0].get_ydata()[0] == cost(Collective.ALL_REDUCE, "ring", 8, 1 << 20, a, bw)
    with pytest.raises(WorldSizeError, match="p >= 2"):
        viz.cost_curves(Collective.ALL_REDUCE, 1, "nvlink")
    with pytest.raises(AlgorithmError, match="valid: ring"):
        viz.cost_curves(Collective.ALL_REDUCE, 4, "nvlink", algorithms=["rign"])
    with pytest.raises(TopologyError, match="unknown topology preset"):
        viz.cost_curves(Collective.ALL_REDUCE, 4, "nvlnk")


def test_efficiency_curve_is_tp_efficiency():
    cfg = GPTConfig(vocab_size=1024, hidden=256, num_layers=1, num_heads=8, seq_len=128, name="small")

    def build_block(mesh):  # the same layer, built here independently of the viz helper
        block = TransformerBlock(mesh, 256, 8, 1024, init=None, dtype="bfloat16")
        x = distribute(meta((128, 1, 256), "bfloat16"), mesh, [R])
        return block, x, distribute(meta((128, 1, 256), "bfloat16"), mesh, [R])

    fig = viz.efficiency_curve(cfg, [2, 4], topology=["nvlink", "pcie4"])
    for topo in ("nvlink", "pcie4"):
        rows = tp_efficiency(build_block, [2, 4], device="h100", topology=topo)
        (line,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == f"efficiency {topo}"]
        assert list(line.get_xdata()) == [1, 2, 4]
        np.testing.assert_allclose(line.get_ydata(), [r["efficiency"] for r in rows], rtol=1e-12)
    with pytest.raises(WorldSizeError, match="TP degree 0"):
        viz.efficiency_curve(build_block, [0])


# ---------------------------------------------------------------- terminal


def render(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_terminal_holdings_of_each_snapshot():
    mesh = Mesh(4)
    ar = Collective.ALL_REDUCE
    for snap in tpsim.stepwise(ar, buffers_for(ar, 4), mesh, algorithm="ring"):
        lines = render(viz.holdings(snap)).splitlines()
        for d, chunks in snap.holds.items():
            (row,) = [ln for ln in lines if re.search(rf"\bdev{d}\b", ln) and "->" not in ln]
            cells = [c.strip() for c in row.split("│")[2:-1]]
            want = [
                "+".join(map(str, sorted(a))) + f" = [{fmt_value(snap.buffers[d][c][0])}]"
                for c, a in enumerate(chunks)
            ]
            assert cells == want


def test_terminal_holdings_of_a_darray():
    mesh = Mesh((2, 2), names=("dp", "tp"))
    x = distribute(np.arange(12.0).reshape(4, 3), mesh, [Shard(0), R])
    text = render(viz.holdings(x))
    for d in range(4):
        block = local_slices(x.shape, mesh, x.placements, d)
        (row,) = [ln for ln in text.splitlines() if f"dev{d} " in ln]
        assert "[" + ", ".join(f"{s.start}:{s.stop}" for s in block) + "]" in row
        assert str(x.local(d).astype(int).tolist()).replace(" ", "") in row.replace(" ", "")
        assert "shard, replicated on tp" in row
    with pytest.raises(TypeError, match="Snapshot"):
        viz.holdings(np.zeros(2))


def test_demo_prints_rich_holdings(capsys):
    from tpsim.demo import main

    main(["--devices", "3", "--length", "3", "--size-mib", "1"])
    out = capsys.readouterr().out
    # the ring all-reduce's last table: every device holds 0+1+2 = [30], [33], [36]
    finals = [ln for ln in out.splitlines() if ln.count("0+1+2 = [") == 3]
    assert len(finals) >= 3
    for d in range(3):
        assert any(f"dev{d}" in ln and "[30]" in ln and "[33]" in ln and "[36]" in ln for ln in finals)


def test_import_tpsim_and_the_terminal_view_do_not_import_matplotlib():
    code = (
        "import sys, tpsim, tpsim.viz, tpsim.demo; tpsim.viz.holdings; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)})
