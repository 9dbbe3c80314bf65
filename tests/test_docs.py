"""The docs site builds with `mkdocs build --strict`, and a lesson page shows its figures and animation.

The build renders the lessons executed once for the session (lesson_runs.executed, passed to the docs
hook as TPSIM_EXECUTED_LESSONS).  Then headless Chromium opens lesson 7's page, served over a localhost
http.server, runs its scripts and dumps the DOM: the figures must be <img> elements holding PNG data,
and the animation (matplotlib's to_jshtml player) must have its frames, its slider and its buttons, and
its image must have been set by the player's script.  Without Chromium the browser test is skipped, or
fails under CI (env CI set), where scripts/test installs it.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser

import pytest
from lesson_runs import ROOT, executed, lesson_names

ANIMATED = "07_sequence_parallelism"  # a lesson with figures and an animation
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def mkdocs_build(site: pathlib.Path, lessons: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TPSIM_EXECUTED_LESSONS": str(lessons)}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    folder, runs = executed()
    failed = [n for n, r in runs.items() if r.error]
    if failed:
        pytest.fail(f"lessons failed to execute, so the docs cannot show them: {failed} (test_lessons.py)")
    out = tmp_path_factory.mktemp("site")
    start = time.monotonic()
    build = mkdocs_build(out, folder)
    seconds = time.monotonic() - start
    assert build.returncode == 0, f"mkdocs build --strict failed ({seconds:.0f} s):\n{build.stderr[-6000:]}"
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


class Dom(HTMLParser):
    """The parts of a page this test reads: images, the animation player's elements, script text."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.inputs: list[dict] = []
        self.buttons = 0  # the animation player's buttons
        self.animations = 0
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        elif tag == "input":
            self.inputs.append(a)
        elif tag == "button" and "anim" in a.get("onclick", ""):  # the player's, not the theme's
            self.buttons += 1
        elif tag == "div" and "animation" in a.get("class", "").split():
            self.animations += 1
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def parse(html: str) -> Dom:
    dom = Dom()
    dom.feed(html)
    return dom


def png_images(dom: Dom) -> list[dict]:
    return [i for i in dom.images if i.get("src", "").startswith("data:image/png;base64,")]


def test_the_site_builds_strict_with_every_lesson(site):
    for name in lesson_names():
        page = site / "lessons" / pathlib.Path(name).stem / "index.html"
        assert page.is_file(), f"no page for {name} in the built site"
    for page in ("index.html", "reference-runs/index.html", "api/nn/index.html", "api/reference/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "nn" / "index.html").read_text()
    assert "ColumnParallelLinear" in api and "VocabParallelCrossEntropy" in api  # rendered from docstrings


def test_lesson_pages_carry_their_figures(site):
    """Every lesson that draws a figure shows it: PNG data in <img> elements of the static page."""
    without = []
    for name in lesson_names():
        executed_nb = (executed()[0] / name).read_text()
        page = (site / "lessons" / pathlib.Path(name).stem / "index.html").read_text()
        if '"image/png"' in executed_nb and not png_images(parse(page)):
            without.append(name)
    assert not without, f"pages without the figures their notebooks drew: {without}"


def test_the_hook_names_missing_executed_lessons(tmp_path):
    empty = tmp_path / "executed"
    empty.mkdir()
    build = mkdocs_build(tmp_path / "site", empty)
    assert build.returncode != 0
    assert "TPSIM_EXECUTED_LESSONS" in build.stderr and lesson_names()[0] in build.stderr


def browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request in the test output
        pass


@pytest.fixture
def served(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_lesson_page_shows_figures_and_a_playing_animation_in_chromium(served, site, tmp_path):
    exe = browser()
    if exe is None:
        message = f"no Chromium ({', '.join(BROWSERS)}) on PATH: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: the browser check must run here)")
        pytest.skip(message)
    url = f"{served}/lessons/{ANIMATED}/"
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"chromium exited {run.returncode}:\n{run.stderr[-3000:]}"
    dom = parse(run.stdout)
    static = parse((site / "lessons" / ANIMATED / "index.html").read_text())

    figures = [i for i in png_images(dom) if not i.get("id", "").startswith("_anim_img")]
    assert len(figures) >= 1, f"{url}: no figure (<img> with PNG data) in the DOM"

    assert dom.animations >= 1, f"{url}: no animation player (div.animation)"
    players = [i for i in dom.images if i.get("id", "").startswith("_anim_img")]
    assert players, f"{url}: the animation has no image element"
    assert all(i.get("src", "").startswith("data:image/png;base64,") for i in players), (
        "the player's image holds no frame: its script did not run in the browser"
    )
    assert not any(i.get("src") for i in static.images if i.get("id", "").startswith("_anim_img")), (
        "the frame is already in the static page, so the check above would not show the script ran"
    )
    sliders = [i for i in dom.inputs if i.get("type") == "range" and "anim-slider" in i.get("class", "")]
    assert sliders, f"{url}: the animation has no frame slider"
    frames = int(sliders[0].get("max", "0")) + 1
    assert frames >= 2, f"the animation has {frames} frame(s)"
    in_scripts = sum(s.count("data:image/png;base64,") for s in dom.scripts)
    assert in_scripts >= frames, f"the player's scripts hold {in_scripts} frames of {frames}"
    assert dom.buttons >= 4, f"{url}: the player shows {dom.buttons} buttons (play, pause, step, ...)"
