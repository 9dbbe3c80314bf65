"""An animation out of the notebook: matplotlib's jshtml player with controls that need no network, and
a looping GIF."""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.animation import FuncAnimation, PillowWriter


def to_html(anim: FuncAnimation) -> str:
    """The animation as self-contained HTML with play controls (`anim.to_jshtml()`): it plays in
    notebooks (`IPython.display.HTML(...)`) and in static docs built from executed notebooks, with no
    network: the buttons are labelled with plain characters, not Font Awesome icons from a CDN."""
    return offline_controls(anim.to_jshtml())


# matplotlib's player buttons draw Font Awesome icons loaded from a CDN; offline they would be blank
_GLYPHS = {
    "fa fa-minus": "\u2212",  # slower
    "fa fa-fast-backward": "|\u25c0\u25c0",  # first frame
    "fa fa-step-backward": "|\u25c0",  # previous frame
    "fa fa-play fa-flip-horizontal": "\u25c0",  # play backwards
    "fa fa-pause": "\u275a\u275a",  # pause
    "fa fa-play": "\u25b6",  # play
    "fa fa-step-forward": "\u25b6|",  # next frame
    "fa fa-fast-forward": "\u25b6\u25b6|",  # last frame
    "fa fa-plus": "+",  # faster
}
_FA_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>", re.S)
_FA_ICON = re.compile(r'<i class="(fa [^"]*)"></i>')


def offline_controls(html: str) -> str:
    """matplotlib's jshtml player with its Font Awesome icons replaced by plain characters and the
    stylesheet link to the CDN removed, so the controls show and work with no network."""
    html = _FA_LINK.sub("", html)
    glyph = lambda m: f'<span class="tpsim-anim-glyph">{_GLYPHS.get(m.group(1), "?")}</span>'  # noqa: E731
    return _FA_ICON.sub(glyph, html)


def save_gif(anim: FuncAnimation, path, *, fps: float | None = None, dpi: int = 80) -> Path:
    """Write the animation as a looping GIF (Pillow); `fps` defaults to 1000 / the frame interval.

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    interval = anim._interval  # type: ignore[attr-defined]  # FuncAnimation keeps `interval` there
    fps = fps if fps is not None else 1000.0 / interval
    anim.save(path, writer=PillowWriter(fps=fps), dpi=dpi)  # type: ignore[arg-type]  # a float fps works
    return path

