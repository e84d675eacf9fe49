"""A Sphinx extension for the book's HTML (listed in _config.yml under sphinx.extra_extensions).
Each fix was found by opening the built book in a browser (tests/test_browser.py).

- sphinx-thebe registers its inline configuration script each time Sphinx reads the sources, and
  Jupyter Book reads them more than once, so every page declared ``const THEBE_JS_URL`` twice and
  the browser reported a SyntaxError on every page. Each page now gets every script once.
- A figure glued from another page (``{glue:}`` with ``:doc:``) was pasted without alt text, since
  myst-nb's cross-document paste drops the notebook cell's image options. It now takes the alt text
  of the notebook cell that drew it (cell metadata ``mystnb.image.alt``).
- A chapter that needs a stage (``runner.CHAPTER_NEEDS``: PRIDE, DBT, ...) is left out of a book whose
  run lacks that stage, and a ``{doc}`` link to it from a chapter every book has broke the build under
  ``-W`` (the default book and the limitations chapter's link to PRIDE). Such a link now becomes its
  plain text; a link to any other missing document still warns.
- The package writes a percentage as "65.6 %" (a space before the sign), and a browser may break a
  line at that space: a printed sentence on the PRIDE page ended one line with "65.6" and began the
  next with "%". Every such space in the book's text, printed outputs and HTML tables becomes a
  no-break space; code, inline code and mathematics are left as written (in Python or TeX a "%" is
  an operator or a comment)."""

from __future__ import annotations

import hashlib
import re
from base64 import b64decode
from pathlib import Path

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

# The space between a number (or a half) and its "%", where a browser would break a line.
SPACE_BEFORE_PERCENT = re.compile(r"(?<=[0-9\u00bd]) (?=%)")
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpeg", "image/gif": ".gif"}


def _script_key(script) -> tuple:
    """The same script whether registered with filename None or "" (inline scripts)."""
    attributes = getattr(script, "attributes", {})
    return (getattr(script, "filename", script) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def notebook_image_alts(notebooks) -> dict[str, str]:
    """Image file name as myst-nb writes it (sha256 of the bytes + extension) -> the alt text of the
    notebook cell whose output it is."""
    import nbformat

    alts = {}
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            alt = cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt")
            if cell.cell_type != "code" or not alt:
                continue
            for output in cell.get("outputs", []):
                for mime, extension in IMAGE_TYPES.items():
                    if mime in output.get("data", {}):
                        digest = hashlib.sha256(b64decode(output["data"][mime])).hexdigest()
                        alts[digest + extension] = alt
    return alts


class AltTextForPastedFigures(SphinxPostTransform):
    default_priority = 6  # right after myst-nb pastes cross-document glue (priority 5)

    def apply(self, **kwargs) -> None:
        images = [i for i in self.document.findall(nodes.image) if not i.get("alt")]
        if not images:
            return
        if not hasattr(self.env, "_empathy_image_alts"):
            notebooks = [Path(self.env.doc2path(d)) for d in self.env.found_docs]
            self.env._empathy_image_alts = notebook_image_alts(p for p in notebooks if p.suffix == ".ipynb")
        for image in images:
            alt = self.env._empathy_image_alts.get(Path(image["uri"]).name)
            if alt:
                image["alt"] = alt


def _ancestors(node):
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _left_as_written(text: nodes.Text) -> bool:
    """Inside code, inline code, mathematics or a comment, or in raw markup other than an HTML output
    without scripts."""
    for node in _ancestors(text):
        if isinstance(node, (nodes.literal, nodes.math, nodes.math_block, nodes.comment)):
            return True
        if isinstance(node, nodes.literal_block):
            return "output" not in node.get("classes", [])
        if isinstance(node, nodes.raw):
            return node.get("format") != "html" or "<script" in node.astext()
    return False


def keep_numbers_with_percent(document) -> int:
    """Put a no-break space between each number and its "%" in every text the book shows as prose, a
    table or a printed output; returns how many texts changed."""
    changed = 0
    for text in list(document.findall(nodes.Text)):
        if " %" not in text or _left_as_written(text):
            continue
        fixed = SPACE_BEFORE_PERCENT.sub("\u00a0", str(text))
        if fixed != str(text):
            text.parent.replace(text, nodes.Text(fixed))
            changed += 1
    return changed


class NoBreakBeforePercent(SphinxPostTransform):
    default_priority = 7  # after myst-nb has pasted glued text (priority 5)

    def apply(self, **kwargs) -> None:
        keep_numbers_with_percent(self.document)


def _forget_image_alts(app, env, docnames) -> None:
    """Notebooks change between builds: read their alt texts afresh each time."""
    if hasattr(env, "_empathy_image_alts"):
        del env._empathy_image_alts


def chapters_a_run_may_leave_out() -> set[str]:
    from .runner import CHAPTER_NEEDS

    return {Path(chapter).name for chapter in CHAPTER_NEEDS}


def unlink_left_out_chapters(app, env, node, contnode):
    """``missing-reference``: a {doc} link to a chapter this book left out -> its text, emphasised."""
    if node.get("reftype") != "doc" or Path(node.get("reftarget", "")).name not in chapters_a_run_may_leave_out():
        return None
    return nodes.emphasis("", contnode.astext())


def setup(app):
    # Early: a handler that returns a template name ends the event for the handlers after it.
    app.connect("html-page-context", drop_repeated_scripts, priority=100)
    app.add_post_transform(AltTextForPastedFigures)
    app.add_post_transform(NoBreakBeforePercent)
    app.connect("env-before-read-docs", _forget_image_alts)
    app.connect("missing-reference", unlink_left_out_chapters)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
