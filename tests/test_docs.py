"""The docs site builds with `mkdocs build --strict`, and its lesson pages work in a browser with no network.

The build renders the lessons executed once for the session (lesson_runs.executed, passed to the docs
hook as TPSIM_EXECUTED_LESSONS).  Then headless Chromium opens lesson 7's page, served over a localhost
http.server, runs its scripts and dumps the DOM: the figures must be <img> elements holding PNG data,
and the animation (matplotlib's to_jshtml player) must have its frames, its slider and its buttons, and
its image must have been set by the player's script.  Without Chromium the browser tests are skipped, or
fail under CI (env CI set), where scripts/test installs it.

Offline: Chromium runs with every host name but 127.0.0.1 unresolvable (--host-resolver-rules), so a
page that needs a CDN fails here.  A small harness page, written into the built site, opens each lesson
in an iframe, waits for MathJax, and reports: typeset formulas (mjx-container), TeX left raw in the text,
and, on the animated lesson, the frame before and after pressing the player's play button.  A screenshot
of one lesson page is saved and its path printed (pytest -s shows it; CI keeps it as an artifact).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import re
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
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"  # no name resolves but localhost
SCREENSHOT_DIR = pathlib.Path(os.environ.get("TPSIM_SCREENSHOT_DIR", ROOT / "build" / "screenshots"))
# TeX left in a page's text: $$...$$, $...$ (no space inside the dollars, as TeX writes it), \( or \[
RAW_TEX = re.compile(r"\$\$[^$]+\$\$|(?<![$\w])\$(?=[^\s$])[^$\n]*[^\s$]\$(?!\w)|\\\(|\\\[")


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
        self.text: list[str] = []  # prose: text outside script, style, pre, code and typeset math
        self._in_script = False
        self._skip = 0

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
        if tag in SKIPPED:
            self._skip += 1

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False
        if tag in SKIPPED:
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)
        elif not self._skip:
            self.text.append(data)


SKIPPED = {"script", "style", "pre", "code", "textarea", "mjx-container"}


def raw_tex(html: str) -> list[str]:
    """TeX in a page's prose (not in code, scripts or typeset math)."""
    return RAW_TEX.findall(" ".join(parse(html).text))


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
        OFFLINE, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url,
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


def chromium(exe: str, profile: pathlib.Path, *args: str, budget_ms: int = 5000) -> list[str]:
    return [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars",
        OFFLINE, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args,
    ]


def need_browser() -> str:
    exe = browser()
    if exe is None:
        message = f"no Chromium ({', '.join(BROWSERS)}) on PATH: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: the browser check must run here)")
        pytest.skip(message)
    return exe


HARNESS = """<!doctype html><meta charset="utf-8"><title>offline check</title>
<pre id="result">pending</pre><iframe id="f" width="1200" height="900"></iframe>
<script>
const PAGES = %s, ANIMATED = %s;
const wait = ms => new Promise(r => setTimeout(r, ms));
const SKIP = new Set(["SCRIPT", "STYLE", "PRE", "CODE", "TEXTAREA", "MJX-CONTAINER"]);
const RAW = new RegExp(%s);
function prose(doc) {
  const out = [], walk = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    let p = n.parentElement, skip = false;
    for (; p; p = p.parentElement) if (SKIP.has(p.tagName.toUpperCase())) { skip = true; break; }
    if (!skip) out.push(n.textContent);
  }
  return out.join(" ");
}
function load(frame, url) {
  return new Promise(r => { frame.onload = r; frame.src = url; });
}
(async () => {
  const frame = document.getElementById("f"), report = {};
  for (const page of PAGES) {
    await load(frame, page);
    await wait(4000);  // MathJax typesets after load
    const doc = frame.contentDocument, r = {};
    r.mjx = doc.querySelectorAll("mjx-container").length;
    r.raw = (prose(doc).match(new RegExp(RAW.source, "g")) || []).slice(0, 5);
    r.mathjax_loaded = !!(frame.contentWindow.MathJax && frame.contentWindow.MathJax.version);
    if (page === ANIMATED) {
      const img = doc.querySelector("img[id^='_anim_img']"), slider = doc.querySelector("input.anim-slider");
      const play = doc.querySelector("button[title='Play']");
      r.frame_before = slider ? slider.value : null;
      const src = img ? img.src : "";
      if (play) play.click();
      await wait(3000);
      r.frame_after = slider ? slider.value : null;
      r.image_changed = !!img && img.src !== src;
      r.play_label = play ? play.textContent.trim() : null;
    }
    report[page] = r;
  }
  document.getElementById("result").textContent = JSON.stringify(report);
})();
</script>
"""


@pytest.fixture(scope="module")
def offline_report(site, tmp_path_factory) -> dict:
    """Every lesson page opened in Chromium with no network: formulas, raw TeX, the animation's play."""
    exe = need_browser()
    pages = [f"/lessons/{pathlib.Path(n).stem}/" for n in lesson_names()]
    animated = f"/lessons/{ANIMATED}/"
    (site / "offline-check.html").write_text(HARNESS % (json.dumps(pages), json.dumps(animated),
                                                         json.dumps(RAW_TEX.pattern)))
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tmp_path_factory.mktemp("profile")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run = subprocess.run(chromium(exe, profile, "--dump-dom", f"{url}/offline-check.html",
                                      budget_ms=(len(pages) + 1) * 8000),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"chromium exited {run.returncode}:\n{run.stderr[-3000:]}"
        found = re.search(r'<pre id="result">(.*?)</pre>', run.stdout, re.S)
        assert found and found.group(1) != "pending", f"the harness did not finish:\n{run.stdout[-2000:]}"
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOT_DIR / "lesson-04-offline.png"
        subprocess.run(chromium(exe, profile, "--window-size=1280,4000", f"--screenshot={shot}",
                                f"{url}/lessons/04_collectives/", budget_ms=8000),
                       capture_output=True, text=True, timeout=120)
        print(f"screenshot of lesson 4, offline: {shot}")
        return {"pages": json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")),
                "screenshot": shot}
    finally:
        server.shutdown()
        server.server_close()


def test_the_static_pages_load_mathjax_from_the_site_itself(site):
    page = (site / "lessons" / ANIMATED / "index.html").read_text()
    sources = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert any(s.endswith("javascripts/mathjax/tex-chtml.js") for s in sources), sources
    assert (site / "javascripts" / "mathjax" / "tex-chtml.js").is_file()
    assert (site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert not any(s.startswith(("http:", "https:", "//")) for s in sources), sources
    assert "font-awesome" not in page and 'class="fa fa-' not in page  # the player's icons need no CDN


def test_every_lesson_page_typesets_its_formulas_offline(site, offline_report):
    problems = []
    for page, r in offline_report["pages"].items():
        static = (site / page.strip("/") / "index.html").read_text()
        if raw_tex(static) and not r["mjx"]:
            problems.append(f"{page}: has formulas but no typeset math (mjx-container)")
        if r["raw"]:
            problems.append(f"{page}: TeX left raw after MathJax: {r['raw']}")
        if not r["mathjax_loaded"]:
            problems.append(f"{page}: MathJax did not load")
    print({page: (r["mjx"], len(r["raw"])) for page, r in offline_report["pages"].items()})
    assert not problems, "\n".join(problems)
    assert sum(bool(raw_tex((site / p.strip("/") / "index.html").read_text()))
               for p in offline_report["pages"]) >= 5  # the check above is not vacuous


def test_pressing_play_advances_the_animation_offline(offline_report):
    r = offline_report["pages"][f"/lessons/{ANIMATED}/"]
    print(f"offline, {ANIMATED}: {r}")
    assert r["play_label"] == "\u25b6", f"the play button shows {r['play_label']!r}, not a plain-text glyph"
    assert r["frame_before"] is not None and r["frame_after"] != r["frame_before"], r
    assert r["image_changed"], r


def test_a_screenshot_of_a_lesson_page_is_kept(offline_report):
    shot = offline_report["screenshot"]
    assert shot.is_file() and shot.stat().st_size > 50_000, shot
    print(f"screenshot: {shot}")


def test_raw_tex_finder():
    assert raw_tex("<p>cost $2(p-1) S/p$ bytes</p>") and raw_tex("<p>$$x^2$$</p>")
    assert raw_tex("<p>\\(a\\)</p>")
    assert not raw_tex("<p>costs $5 and $6</p>") and not raw_tex("<pre>$x_1$</pre>")
    assert not raw_tex("<p><mjx-container>x_1</mjx-container></p>")
