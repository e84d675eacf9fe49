"""Book prose cannot drift from the runs: a digit typed into a chapter is a number nobody recomputes.

Numbers a run produces are glued from its notebooks; facts from the papers are glued from
``empathy_utils.paper_facts``. What is left for digits is code, citations, cross-references,
formulas, and the names in ``ALLOWED`` (models, methods, metrics), each of which is a name rather
than a quantity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "book").glob("*.md"))

# Names that contain digits. Keep this short: a quantity never belongs here, however stable.
ALLOWED = [
    r"SFT→DPO",
    r"\bM[123]\b", r"\bM1–M3\b", r"\bP0\b",                      # the paper's methods; the base prompt
    r"\bLLaMA-3\.1-8B\b", r"\bMistral-7B\b", r"\bLLaMA-2-70B-Chat\b", r"\bMixtral-8x7B\b",
    r"\bGPT-4o?\b", r"\bGemini-1\.0-Pro\b", r"\bGemini-2\.0-flash\b",
    r"\bSmolLM2(-[0-9.]+[BM]-Instruct)?\b", r"\ball-MiniLM-L6-v2\b", r"\bGemma 3 270M\b",
    r"\bBLEU-4\b", r"\bDistinct-1/2\b", r"\bDistinct-[12]\b", r"\bSHA-256\b", r"\bbf16\b", r"\bfp32\b",
]
# Directives whose body is prose (checked); any other fenced block is code or configuration.
PROSE_DIRECTIVES = {"figure", "note", "important", "warning", "admonition", "tip", "caution", "seealso",
                    "glue:figure", "table", "list-table"}
ROLE = re.compile(r"\{[a-zA-Z:_-]+\}`[^`]*`")            # {glue:text}`…`, {cite}`…`, {ref}`…`, {doc}`…`
CODE_SPAN = re.compile(r"`[^`]*`")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
URL = re.compile(r"https?://\S+|\]\([^)]*\)")
LABEL = re.compile(r"^\([A-Za-z0-9_:-]+\)=\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})\s*(\{([^}]+)\})?")


def prose_lines(text: str):
    """(line number, text) of what a reader reads as prose, with code, roles, math and URLs removed."""
    lines = text.splitlines()
    start = 0
    if lines and lines[0].strip() == "---":  # front matter
        start = next(i for i in range(1, len(lines)) if lines[i].strip() == "---") + 1
    fences: list[tuple[str, bool]] = []  # (fence marker, body is prose)
    body = []
    in_math = False
    for number, line in enumerate(lines[start:], start + 1):
        if line.strip() == "$$" or (in_math and line.rstrip().endswith("$$")):  # display math
            in_math = not in_math
            continue
        if in_math:
            continue
        match = FENCE.match(line)
        if match and fences and line.strip() == fences[-1][0]:
            fences.pop()
            continue
        if match and match.group(2)[0] != ":" or (match and match.group(4)):
            directive = (match.group(4) or "").strip()
            prose = (not fences or fences[-1][1]) and directive in PROSE_DIRECTIVES
            fences.append((match.group(2), prose))
            continue
        if match:  # a bare ::: fence closing a colon directive
            if fences:
                fences.pop()
            continue
        if fences and not fences[-1][1]:
            continue
        option = re.match(r"^\s*:([a-z-]+):(.*)$", line)
        if option:  # directive options: only alt text is prose
            if option.group(1) != "alt":
                continue
            line = option.group(2)
        if LABEL.match(line):
            continue
        line = MATH.sub(" ", URL.sub(" ", CODE_SPAN.sub(" ", ROLE.sub(" ", line))))
        body.append((number, line))
    return body


def stray_digits(text: str) -> list[str]:
    found = []
    for number, line in prose_lines(text):
        for pattern in ALLOWED:
            line = re.sub(pattern, " ", line)
        for match in re.finditer(r"\S*\d\S*", line):
            found.append(f"line {number}: {match.group(0)!r} in {line.strip()[:100]!r}")
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_no_typed_numbers_in_book_prose(chapter):
    strays = stray_digits(chapter.read_text())
    assert not strays, (f"{chapter.relative_to(REPO)}: digits typed into prose (glue them from the run, or "
                        "from empathy_utils.paper_facts for a paper's figure):\n  " + "\n  ".join(strays))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_percentages_in_prose_come_formatted_from_the_package(chapter):
    """A glue format spec (``:.1%``) prints "29.7%", the package "29.7 %": one sentence of the results
    chapter had both. The chapters glue the package's text (``..._win_rate_text:s``, ``..._ci_text:s``)."""
    specs = [m.group(0) for m in re.finditer(r"\{glue:text\}`[^`]*:\.?\d*%`", chapter.read_text())]
    assert not specs, f"{chapter.relative_to(REPO)}: percentages formatted by glue: {specs}"


def test_the_check_sees_digits_in_prose_and_nowhere_else():
    text = """---
jupytext: 1
---
(sec-a1)=
# Title

The student wins 62 % of pairs.
The win rate is {glue:text}`run/06_judge.ipynb::dpo_vs_base_win_rate:.1%` by {cite}`xie2025distilling`, see
`sft.max_length: 384` and $\\lambda = 0$ and https://example.org/v2 with M1 and SFT→DPO and GPT-4o.
$$
x^2 = 1
$$

```{figure} run/figures/winrates.png
:name: fig-1
:alt: Bars for 3 students.

Caption with 50 % line.
```

```console
$ make study --set sft.epochs=2
```

:::{important}
A 135 M teacher.
:::
"""
    strays = stray_digits(text)
    assert [s.split(":")[0] for s in strays] == ["line 7", "line 16", "line 18", "line 26"], strays
    assert "'62'" in strays[0] and "'3'" in strays[1] and "'50'" in strays[2] and "'135'" in strays[3]


def test_paper_facts_agree_with_the_code_that_uses_them():
    from empathy_utils.book_facts import XIE_2025, paper_facts
    from empathy_utils.config import DatasetSettings, DPOSettings, LoraSettings, SFTSettings
    from empathy_utils.plan import EXPECTED_REPLY_WORDS
    from empathy_utils.quality import WORD_LIMIT

    for step in (SFTSettings(), DPOSettings()):
        assert (step.learning_rate, step.epochs, step.batch_size) == \
            (XIE_2025["learning_rate"], XIE_2025["epochs"], XIE_2025["batch_size"])
    assert LoraSettings().r == XIE_2025["lora_rank"] and DPOSettings().beta == XIE_2025["dpo_beta"]
    assert DatasetSettings().sft_share == XIE_2025["m3_sft_rows"] / XIE_2025["train_dialogues"]
    assert XIE_2025["m3_sft_rows"] + XIE_2025["m3_dpo_rows"] == XIE_2025["train_dialogues"]
    assert XIE_2025["train_dialogues"] + XIE_2025["test_dialogues"] == XIE_2025["lvh_dialogues"]
    assert (WORD_LIMIT, EXPECTED_REPLY_WORDS) == (XIE_2025["reply_max_words"], XIE_2025["reply_words"])
    assert paper_facts()["xie_learning_rate"] == "5e-5"


def test_training_settings_say_what_the_run_used():
    from empathy_utils.book_facts import corpus_facts, training_settings
    from empathy_utils.config import load_config, profile_path
    from empathy_utils.data import load_embedded_corpus

    default = load_config(profile_path("default"))
    sft = training_settings(default, "sft")
    assert sft["learning_rate_text"] == "2e-4" and sft["training_length"] == "1 epoch"
    assert sft["max_length"] == default.sft.max_length and sft["batch_text"] == str(default.sft.batch_size)
    assert sft["lora_targets"] == "all linear layers" and sft["schedule_text"] == "linear, no warmup"
    default.dpo.gradient_accumulation_steps, default.dpo.warmup = 4, 0.1
    dpo = training_settings(default, "dpo")
    assert dpo["batch_text"] == f"{default.dpo.batch_size} × 4 accumulated" and "warmup 10% of the steps" in \
        dpo["schedule_text"] and dpo["beta_text"] == "0.1" and "lora_r" not in dpo
    tiny = load_config(profile_path("tiny"))
    assert training_settings(tiny, "sft")["training_length"] == f"{tiny.sft.max_steps} steps"
    corpus = load_embedded_corpus()
    facts = corpus_facts()
    assert facts["corpus_situations"] == len(corpus) == facts["corpus_test"] + facts["corpus_train"]
    assert facts["corpus_emotions"] * facts["corpus_per_emotion"] == len(corpus)


def test_every_figure_in_the_chapters_has_alt_text():
    figures = 0
    for chapter in CHAPTERS:
        lines = chapter.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r"^\s*(`{3,}|:{3,})\s*\{(figure|glue:figure|image)\}", line):
                figures += 1
                options = []
                for following in lines[number + 1:]:
                    if not re.match(r"^\s*:[a-z-]+:", following):
                        break
                    options.append(following)
                alt = [o.split(":alt:", 1)[1].strip() for o in options if ":alt:" in o]
                assert alt and len(alt[0]) > 30, f"{chapter.name}, line {number + 1}: a figure without alt text"
            pasted = re.match(r"^\s*`{3,}\s*\{glue:?\}\s*(\S*figure\S*)", line)
            if pasted:  # a figure glued from a stage notebook: the cell that glues it carries the alt text
                figures += 1
                doc = re.search(r":doc:\s*run/(\S+\.ipynb)", lines[number + 1])
                assert doc, f"{chapter.name}, line {number + 1}: a pasted figure names its notebook"
                cells = json.loads((REPO / "notebooks" / doc.group(1)).read_text())["cells"]
                (cell,) = [c for c in cells if f'glue("{pasted.group(1)}"' in "".join(c["source"])]
                alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt", "")
                assert len(alt) > 30, f"{doc.group(1)}: the cell gluing {pasted.group(1)} has no alt text"
    assert figures >= 4


def test_the_pipeline_diagram_is_what_the_package_draws(tmp_path):
    from empathy_utils.diagram import write_svg

    fresh = write_svg(tmp_path / "pipeline.svg").read_text()
    committed = (REPO / "book" / "images" / "pipeline.svg").read_text()
    assert fresh == committed, "regenerate it: python -m empathy_utils.diagram book/images/pipeline.svg"
    assert "Distillation data" in committed and "Win rates" in committed  # text kept as text
    assert not re.search(r'href="https?:|url\(https?:|@import', committed), "drawn offline: nothing fetched"


def test_a_link_to_a_chapter_the_book_left_out_becomes_plain_text():
    """The default book has no PRIDE chapter; the limitations chapter links to it. Under -W that was
    an "unknown document" error (make study failed on a fresh clone); now the link is its text, and a
    link to a document that does not exist at all still goes unresolved (and warns)."""
    from docutils import nodes
    from sphinx.addnodes import pending_xref

    from empathy_utils.sphinx_fixes import unlink_left_out_chapters

    def xref(target):
        node = pending_xref("", refdomain="std", reftype="doc", reftarget=target)
        return node, nodes.inline("", "the PRIDE chapter")

    resolved = unlink_left_out_chapters(None, None, *xref("pride"))
    assert isinstance(resolved, nodes.emphasis)
    assert resolved.astext() == "the PRIDE chapter"
    assert unlink_left_out_chapters(None, None, *xref("no-such-page")) is None
    assert unlink_left_out_chapters(None, None, *xref("run/../dbt")) is not None
