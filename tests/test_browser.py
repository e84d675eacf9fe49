"""The built book as a reader sees it: the tiny run's book opened page by page in headless Chromium.

On every page: internal links and assets resolve (anchors included), every image loads and has alt
text, formulas are typeset by the vendored MathJax, and no glue placeholder, "??" or traceback is
left. Set EMPATHY_SCREENSHOTS=<folder> to keep a screenshot of every page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser import Chromium, check_book, check_page, find_chromium

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                    "chromium; .ci/run installs it)")


@pytest.mark.slow
@needs_chromium
def test_every_page_of_the_tiny_book_renders_whole_in_chromium(tiny_run):
    _, _, html, _ = tiny_run
    shots = os.environ.get("EMPATHY_SCREENSHOTS")
    broken, pages = check_book(html, CHROMIUM, Path(shots) if shots else None)
    names = {str(p.relative_to(html)) for p in pages}
    assert {"book/intro.html", "book/results.html", "book/limitations.html", "book/pride.html",
            "book/run/06_judge.html"} <= names
    assert not broken, "\n".join(f"{b.page}: " + "; ".join(b.problems) for b in broken)


@needs_chromium
def test_the_checks_catch_what_they_look_for(tmp_path):
    """A page with every fault the book test looks for, and a clean one: each fault is reported."""
    vendor = Path(__file__).resolve().parents[1] / "book" / "_vendor" / "mathjax"
    (tmp_path / "mathjax").symlink_to(vendor)
    (tmp_path / "ok.png").write_bytes(_one_pixel_png())
    math = '<span class="math notranslate nohighlight">\\(x^2\\)</span>'
    mathjax = '<script defer src="mathjax/tex-mml-chtml.js"></script>'
    (tmp_path / "good.html").write_text(
        f'<html><head>{mathjax}</head><body><main><p id="here">Fine {math}.</p><img src="ok.png" alt="a dot">'
        '<a href="good.html#here">self</a><p>Agreed 65.6\u00a0% of pairs.</p><pre><code>x = 7 % 3</code></pre>'
        '<div class="cell_output"><pre>half of them: 50\u00a0%</pre></div></main></body></html>')
    (tmp_path / "bad.html").write_text(
        '<html><body><main><p>Win rate ?? and {glue:text}`x` and $$y$$</p><div class="cell_output"><pre>agreed 65.6 % of pairs</pre></div><span class="math">\\(z\\)</span>'
        '<img src="missing.png" alt="gone"><img src="ok.png"><a href="nowhere.html">x</a>'
        '<a href="good.html#gone">y</a>'
        '<div style="overflow-x: auto; width: 200px"><table><caption>Too wide</caption><tr>'
        + '<td style="white-space: nowrap">a long cell that does not wrap</td>' * 4 + '</tr></table></div>'
        '<div class="cell_output" style="width: 200px"><pre style="overflow-x: auto">Judge: a printed sentence '
        'that runs past the edge of its box</pre></div></main></body></html>')
    with Chromium(CHROMIUM) as browser:
        good = browser.open((tmp_path / "good.html").as_uri())
        assert good["typeset"] == 1
        assert check_page(good, tmp_path / "good.html", tmp_path, 1, {}) == []
        bad = check_page(browser.open((tmp_path / "bad.html").as_uri()), tmp_path / "bad.html", tmp_path, 1, {})
    text = "\n".join(bad)
    for expected in ("broken link to nowhere.html", "missing anchor good.html#gone", "image does not load",
                     "without alt text", "MathJax did not load", "not typeset", "raw TeX '$$'", "'??' left",
                     "'{glue' left", "1 number(s) a line can separate from their '%'", "a table wider than its box, its right-hand columns hidden: 'Too wide'",
                     "printed output wider than its box, its line ends hidden (book/_static/study.css): 'Judge: a printed"):
        assert expected in text, (expected, bad)


def _one_pixel_png() -> bytes:
    import base64

    return base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_repeated_scripts_are_dropped_and_pasted_figures_get_their_cells_alt(tmp_path):
    import base64
    import hashlib

    import nbformat
    from sphinx.builders.html._assets import _JavaScript

    from empathy_utils.sphinx_fixes import drop_repeated_scripts, notebook_image_alts

    inline = 'const THEBE_JS_URL = "x"'
    context = {"script_files": [_JavaScript(None, body=inline), _JavaScript("a.js"),
                                _JavaScript("", body=inline), _JavaScript("a.js"), _JavaScript("b.js")]}
    drop_repeated_scripts(None, "page", "page.html", context, None)
    assert [str(s.filename or s.attributes.get("body")) for s in context["script_files"]] == [inline, "a.js", "b.js"]

    png = _one_pixel_png()
    cell = nbformat.v4.new_code_cell("glue('fig', fig)", metadata={"mystnb": {"image": {"alt": "A dot."}}})
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(png).decode()})]
    bare = nbformat.v4.new_code_cell("fig")
    bare.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(png[:-1]).decode()})]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell, bare]), tmp_path / "n.ipynb")
    assert notebook_image_alts([tmp_path / "n.ipynb"]) == {hashlib.sha256(png).hexdigest() + ".png": "A dot."}


def test_numbers_keep_their_percent_sign_except_in_code_and_math():
    """The book's text, printed outputs and HTML tables get a no-break space before "%"; code, inline
    code and TeX (where "%" is an operator or a comment) keep what was written."""
    from docutils import nodes
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    from empathy_utils.sphinx_fixes import keep_numbers_with_percent

    document = new_document("page", get_default_settings(Parser))
    prose = nodes.paragraph("", "", nodes.Text("It agreed 65.6 % of the time, ties ½ % and "),
                            nodes.literal("", "x = 7 % 3"), nodes.Text(" the rest 34.4 %."))
    printed = nodes.literal_block("", "the orders agreed 25 % of pairs", classes=["output", "stream"])
    source = nodes.literal_block("", "print(7 % 3)", classes=["code"])
    table = nodes.raw("", "<td>report 95 % CI</td>", format="html", classes=["output", "text_html"])
    tex = nodes.math_block("", "p = 5 % 2")
    document += [prose, printed, source, table, tex]
    assert keep_numbers_with_percent(document) == 4
    assert prose.astext() == "It agreed 65.6\u00a0% of the time, ties ½\u00a0% and x = 7 % 3 the rest 34.4\u00a0%."
    assert printed.astext() == "the orders agreed 25\u00a0% of pairs"
    assert table.astext() == "<td>report 95\u00a0% CI</td>"
    assert (source.astext(), tex.astext()) == ("print(7 % 3)", "p = 5 % 2")
    assert keep_numbers_with_percent(document) == 0
