"""Open a built book in headless Chromium and report, page by page, what a reader would see broken.

Chromium is driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte on file descriptors 3 and 4), so nothing beyond the standard library
and Debian's ``chromium`` package is needed, and no port is opened.

    python tests/browser.py _build/html figures/book-screenshots   # screenshots of every page
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]

# Runs in the page once it has loaded: waits for MathJax's typesetting and every image, then reports.
PAGE_REPORT = r"""
(async () => {
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  for (let i = 0; i < 100 && !(window.MathJax && MathJax.startup && MathJax.startup.promise)
       && document.querySelector('.math'); i++) await wait(50);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await Promise.all([...document.images].map((img) => img.complete ? null :
    new Promise((r) => { img.onload = img.onerror = r; setTimeout(r, 5000); })));
  const main = document.querySelector('main') || document.body || document.documentElement;
  return {
    title: document.title,
    text: main.innerText,
    images: [...document.images].map((img) => ({src: img.currentSrc || img.src, alt: img.getAttribute('alt'),
                                                 loaded: img.complete && img.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map((a) => a.href),
    assets: [...document.querySelectorAll('script[src], link[href][rel="stylesheet"]')]
              .map((e) => e.src || e.href),
    mathjax: !!window.MathJax,
    typeset: document.querySelectorAll('mjx-container').length,
    untypeset: [...document.querySelectorAll('.math')].filter((e) => !e.querySelector('mjx-container')).length,
    // tables wider than the box that holds them: the columns past its right edge are hidden (a scroll box)
    // or run off the page; named by caption, else by their first cells
    clipped_tables: [...main.querySelectorAll('table')].filter((t) => {
      for (let box = t.parentElement; box && box !== document.body; box = box.parentElement) {
        const overflow = getComputedStyle(box).overflowX;
        if (overflow !== 'visible') return box.scrollWidth > box.clientWidth + 2;
      }
      return t.getBoundingClientRect().right > main.getBoundingClientRect().right + 2;
    }).map((t) => (t.caption ? t.caption.innerText : t.innerText).replace(/\s+/g, ' ').slice(0, 80)),
    // a notebook's printed output wider than its box: the ends of its lines are hidden behind a scroll bar
    // (one inside a closed dropdown is not laid out, so it cannot be measured)
    clipped_outputs: [...main.querySelectorAll('.cell_output pre')]
      .filter((p) => p.clientWidth > 0 && p.scrollWidth > p.clientWidth + 2)
      .map((p) => p.textContent.replace(/\s+/g, ' ').slice(0, 80)),
    // a number and its "%" with an ordinary space between them, where a line can break (not in code)
    split_percent: (() => {
      const found = [], walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
      for (let node; (node = walker.nextNode());) {
        const box = node.parentElement;
        if (!/[0-9\u00bd] %/.test(node.data) || box.closest('code, .cell_input, .math, mjx-container, script, style')
            || (box.closest('pre') && !box.closest('.output, .cell_output'))) continue;
        const at = node.data.search(/[0-9\u00bd] %/);
        found.push(node.data.slice(Math.max(0, at - 30), at + 10));
      }
      return found;
    })(),
    // glued text set in a heavier weight than the sentence around it (myst-nb's default is bold)
    heavy_glue: [...document.querySelectorAll('span.pasted-text')].filter((e) =>
      parseInt(getComputedStyle(e).fontWeight) > parseInt(getComputedStyle(e.parentElement).fontWeight)).length,
  };
})()
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


class Chromium:
    """One headless browser and one tab, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900):
        self._profile = tempfile.mkdtemp(prefix="book-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # the child reads commands on fd 3 and writes replies on fd 4
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=wire_pipes)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.time() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it start?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        for i, seen in enumerate(self.events):
            if seen.get("method") == event:
                return self.events.pop(i)
        while True:
            message = self._read_message(deadline)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def open(self, url: str) -> dict:
        """Load ``url``, wait for its load event, MathJax and its images; return the page report."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        result = self.call("Runtime.evaluate", session=True, expression=PAGE_REPORT, awaitPromise=True,
                           returnByValue=True, timeout=60)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{url}: {result['exceptionDetails']}")
        report = result["result"]["value"]
        report["errors"] = [e["params"]["entry"]["text"] for e in self.events
                            if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
        report["errors"] += [e["params"]["exceptionDetails"].get("exception", {}).get("description", "exception")
                             for e in self.events if e.get("method") == "Runtime.exceptionThrown"]
        return report

    def screenshot(self, path: Path, full_page: bool = True, width: int = 1280, height: int = 900) -> None:
        """A PNG of the page; ``full_page`` grows the viewport to the page's height (at most 8,000 px)."""
        if full_page:
            content = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                      height=min(8000, max(height, int(content["height"]))), deviceScaleFactor=1, mobile=False)
        result = self.call("Page.captureScreenshot", session=True, format="png")
        Path(path).write_bytes(base64.b64decode(result["data"]))
        if full_page:
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # already gone
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class PageProblems:
    page: str
    problems: list[str] = field(default_factory=list)


def _ids(html_file: Path, cache: dict) -> set[str]:
    if html_file not in cache:
        cache[html_file] = set(re.findall(r'\bid="([^"]+)"', html_file.read_text(errors="replace")))
    return cache[html_file]


def check_page(report: dict, page: Path, html_root: Path, static_math: int, ids_cache: dict) -> list[str]:
    """What is broken on one page, in words (an empty list: nothing)."""
    problems = []
    for href in report["links"] + report["assets"]:
        url = urlsplit(href)
        if url.scheme != "file":
            continue  # external links are not followed offline
        target = Path(unquote(url.path))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"broken link to {target.relative_to(html_root) if html_root in target.parents else target}")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _ids(target, ids_cache):
            problems.append(f"link to a missing anchor {target.name}#{url.fragment}")
    for image in report["images"]:
        if not image["loaded"]:
            problems.append(f"image does not load: {image['src']}")
        alt = (image["alt"] or "").strip()
        if not alt or re.search(r"\.(png|svg|jpe?g|gif)$", alt):  # Sphinx falls back to the file's path
            problems.append(f"image without alt text: {image['src']}")
    text = report["text"]
    if static_math:
        if not report["mathjax"]:
            problems.append("MathJax did not load")
        if not report["typeset"] or report["untypeset"]:
            problems.append(f"{report['untypeset']} of {static_math} formulas not typeset by MathJax")
    for raw in ("$$", "\\(", "\\[", "\\begin{"):
        if raw in text:
            problems.append(f"raw TeX {raw!r} left in the text")
    for leftover in ("??", "{glue", "glue:text", "glue:figure", "Traceback (most recent call last)"):
        if leftover in text:
            at = text.index(leftover)
            problems.append(f"{leftover!r} left in the page: …{text[max(0, at - 60):at + 40]!r}…")
    for table in report.get("clipped_tables", []):
        problems.append(f"a table wider than its box, its right-hand columns hidden: {table!r}")
    for output in report.get("clipped_outputs", []):
        problems.append(f"printed output wider than its box, its line ends hidden (book/_static/study.css): {output!r}")
    if report.get("split_percent"):
        problems.append(f"{len(report['split_percent'])} number(s) a line can separate from their '%' "
                        f"(empathy_utils.sphinx_fixes): {report['split_percent'][0]!r}")
    if report.get("heavy_glue"):
        problems.append(f"{report['heavy_glue']} glued text(s) set heavier than the prose around them (book/_static/study.css)")
    problems += [f"console error: {e}" for e in report["errors"]]
    return problems


def check_book(html_root: Path, executable: str, screenshots: Path | None = None) -> list[PageProblems]:
    """Open every page of the built book; return the problems found on each page that has any."""
    html_root = Path(html_root).resolve()
    pages = sorted(p for p in html_root.rglob("*.html")
                   if not {"_static", "_sources", "_images", "mathjax"} & set(p.relative_to(html_root).parts)
                   and p.name not in {"search.html", "genindex.html"})
    found, ids_cache = [], {}
    with Chromium(executable) as browser:
        for page in pages:
            source = page.read_text(errors="replace")
            redirect = re.search(r'http-equiv="refresh"[^>]*url=([^"]+)"', source, re.I)
            if redirect:  # a redirect stub (index.html): its target must exist
                if not (page.parent / redirect.group(1)).exists():
                    found.append(PageProblems(str(page.relative_to(html_root)),
                                              [f"redirects to a missing page {redirect.group(1)}"]))
                continue
            static_math = len(re.findall(r'class="math[ "]', source))
            report = browser.open(page.as_uri())
            problems = check_page(report, page, html_root, static_math, ids_cache)
            if screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                name = "_".join(page.relative_to(html_root).with_suffix(".png").parts)
                browser.screenshot(screenshots / name)
            if problems:
                found.append(PageProblems(str(page.relative_to(html_root)), problems))
    return found, pages


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    shots = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    chromium = find_chromium()
    if not chromium:
        sys.exit("chromium not found (Debian: apt-get install chromium)")
    broken, opened = check_book(root, chromium, shots)
    for entry in broken:
        print(entry.page)
        for problem in entry.problems:
            print("   ", problem)
    print(f"{len(opened)} pages opened, {len(broken)} with problems")
    sys.exit(1 if broken else 0)
