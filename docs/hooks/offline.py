"""mkdocs hook: the site works with no network.

MathJax.  mkdocs-jupyter leaves the lessons' formulas as TeX (`$...$`, `$$...$$`) and loads no MathJax
(mkdocs-jupyter #212).  This hook copies MathJax 3 from the `django-static-mathjax` package on PyPI (pure
static files, no Django needed: `pip install django-static-mathjax`) into the site under
javascripts/mathjax/, and mkdocs.yml loads it with extra_javascript after docs/javascripts/mathjax-config.js.
Only what TeX input and CommonHTML output use is copied (tex-chtml.js, input/, output/chtml/, a11y/, ui/);
not the speech engine or the other combined builds.

Animations.  matplotlib's jshtml player takes its button icons from a Font Awesome CDN; tpsim.viz.to_html
already replaces them with plain characters, and this hook does the same to any player left on a page.
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

from mkdocs.exceptions import PluginError

TARGET = "javascripts/mathjax"
PARTS = ("tex-chtml.js", "input", "output/chtml", "a11y", "ui")


def mathjax_dir() -> pathlib.Path:
    """The es5 folder of MathJax 3 inside the installed django-static-mathjax package."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise PluginError("MathJax for the docs comes from PyPI: pip install django-static-mathjax")
    es5 = pathlib.Path(spec.origin).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise PluginError(f"no MathJax 3 build (tex-chtml.js) in {es5}: pip install django-static-mathjax")
    return es5


def on_config(config):
    mathjax_dir()  # fail before building anything when MathJax is missing
    return config


def on_page_content(html, page, config, files):
    if "font-awesome" in html or 'class="fa fa-' in html:
        from tpsim.viz.player import offline_controls

        html = offline_controls(html)
    return html


def on_post_build(config):
    src, dst = mathjax_dir(), pathlib.Path(config.site_dir) / TARGET
    for part in PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        else:
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / part, dst / part)
