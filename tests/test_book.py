"""One book from several runs: each run's pages under a part of its own, the chapters glued from the
run that holds each number, and a clear error for a missing run or stage."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from empathy_utils import book
from empathy_utils.artifacts import write_manifest
from empathy_utils.errors import StudyError

REPO = Path(__file__).resolve().parents[1]


def _run(name, stages):
    return book.BookRun(name=name, run_dir=Path(name), stages=stages, params_hash="h", manifest={})


def test_a_chapter_is_glued_from_the_first_run_that_has_all_its_stages():
    text = "{glue:text}`run/01_datasets.ipynb::run_name:s` {glue:text}`run/08_pride.ipynb::x:s`"
    runs = [_run("core", ["datasets", "judge"]), _run("pride", ["datasets", "judge", "pride"])]
    assert book.chapter_holder(text, runs, "book/pride").name == "pride"
    assert book.chapter_holder("no run here", runs, "book/intro") is None


def test_a_chapter_whose_stages_no_run_holds_is_an_error_naming_them():
    runs = [_run("core", ["datasets", "judge"])]
    with pytest.raises(StudyError, match=r"book/x: cites the stage\(s\) datasets, pride"):
        book.chapter_holder("`run/01_datasets.ipynb::a` `run/08_pride.ipynb::b`", runs, "book/x")


def test_retargeting_points_notebooks_figures_answers_and_images_at_their_places():
    text = ("{glue:text}`run/06_judge.ipynb::k:s`\n:doc: run/06_judge.ipynb\n{doc}`run/08_pride`\n"
            "```{figure} run/figures/winrates.png\n```{figure} images/pipeline.svg\n"
            "{glue:text}`run/answers.ipynb::q:s` {doc}`run/answers`")
    out = book.retarget_chapter(text, _run("study", ["judge", "pride"]))
    assert "`study/06_judge.ipynb::k:s`" in out
    assert ":doc: study/06_judge.ipynb" in out
    assert "{doc}`study/08_pride`" in out
    assert "{figure} study/figures/winrates.png" in out
    assert "{figure} ../images/pipeline.svg" in out
    assert "`answers.ipynb::q:s`" in out and "{doc}`answers`" in out
    assert "run/" not in out


def test_a_run_without_a_manifest_is_an_error_naming_it(tmp_path):
    with pytest.raises(StudyError, match="run 'ghost': no manifest"):
        book.book_run(tmp_path / "ghost")


def test_an_unfinished_stage_is_an_error_naming_it(tmp_path):
    write_manifest(tmp_path, {"params": {"run": {"name": "r", "stages": ["datasets", "sft"]}},
                              "stages": {"datasets": {"status": "ok"}, "sft": {"status": "failed"}}})
    with pytest.raises(StudyError, match=r"stage\(s\) sft have not finished"):
        book.book_run(tmp_path)


def test_a_missing_run_of_a_books_list_is_an_error_and_an_optional_one_a_line(tmp_path, monkeypatch):
    params = tmp_path / "params"
    params.mkdir()
    for name in ("tiny", "default"):
        shutil.copy2(REPO / "notebooks" / "params" / f"{name}.yaml", params / f"{name}.yaml")
    (params / "two.yaml").write_text(yaml.safe_dump({"extends": "tiny", "run": {"name": "two"},
                                                     "book": [{"profile": "default"},
                                                              {"profile": "absent", "optional": True}]}))
    monkeypatch.setattr("empathy_utils.paths.params_dir", lambda: params)
    monkeypatch.setattr(book, "repo_root", lambda: tmp_path)
    (tmp_path / "runs" / "two").mkdir(parents=True)
    lines = []
    with pytest.raises(StudyError, match="lists 'default' in its book, and its run 'default' has no folder"):
        book.resolve_book_runs(["two"], log=lines.append)
    assert any("optional profile 'absent'" in line for line in lines)
    (tmp_path / "runs" / "default").mkdir()
    assert book.resolve_book_runs(["two"], log=lines.append) == [tmp_path / "runs" / "two",
                                                                 tmp_path / "runs" / "default"]


def test_the_study_profile_holds_the_grid_pride_dbt_and_the_research_data_part():
    from empathy_utils.config import load_config, profile_path

    cfg = load_config(profile_path("study"))
    strategies = {v["set"]["dataset.strategy"] for v in cfg.variants.runs}
    assert strategies | {cfg.dataset.strategy} == {"naive", "all-three", "identify-lacking", "cognitive",
                                                   "affective", "compassionate", "sequential", "combined"}
    assert "variants" in cfg.run.stages
    assert [e["profile"] for e in cfg.book] == ["pride", "dbt", "llms-vs-humans-full", "study-llms-vs-humans"]
    # the paper's headline run comes before the grid, so the conclusions quote it on the paper's data
    full = load_config(profile_path("llms-vs-humans-full"))
    assert full.data.test_rows == 0 and full.run_dir != load_config(profile_path("llms-vs-humans")).run_dir
    research = load_config(profile_path("study-llms-vs-humans"))
    methods = {(v["set"].get("dataset.method"), v["set"].get("dataset.strategy")) for v in research.variants.runs}
    assert len(methods) == 17  # M1 faithful, M2 x 8, M3 x 8
    assert research.run_dir == load_config(profile_path("llms-vs-humans")).run_dir


def test_the_reproduce_page_lists_every_profile_and_the_command_of_the_whole_book():
    """The page said how to build the default run's book only, and listed six of the eleven profiles."""
    page = (REPO / "book" / "reproduce.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", page, re.M))
    shipped = {p.stem for p in (REPO / "notebooks" / "params").glob("*.yaml")}
    assert listed == shipped, f"profiles missing from the page: {shipped - listed}; not shipped: {listed - shipped}"
    assert "make study PROFILE=study" in page


@pytest.mark.slow
def test_two_runs_make_one_book(tiny_run, tmp_path):
    """A second, smaller tiny run (core stages only) and the session's tiny run, built into one book
    with -W: each run's pages under its own part, the results chapter glued from the first run that
    has the judge stage, the PRIDE chapter from the one that has PRIDE."""
    from empathy_utils.config import load_config, profile_path
    from empathy_utils.runner import run_study

    cfg, run_dir, _, _ = tiny_run
    small = load_config(profile_path("tiny"), ["run.name=tiny-core",
                                               "run.stages=[datasets,sft,dpo,generate,validate-judges,judge]"])
    small.run.output_root = cfg.run.output_root
    small_dir = run_study(small, params_source="tiny --set run.name=tiny-core")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("run", "_build"))
    html = book.build_book([small_dir, run_dir], root=root)
    toc = yaml.safe_load((root / "book" / "run" / "_toc.yml").read_text())
    captions = [p["caption"] for p in toc["parts"]]
    assert "Run: tiny-core" in captions and "Run: tiny" in captions
    results = (html / "book" / "run" / "results.html").read_text()
    assert re.search(r"All numbers on this page come from the run <strong><span class=\"pasted-text\">tiny-core<",
                     results)
    pride = (html / "book" / "run" / "pride.html").read_text()
    assert 'In the run <strong><span class="pasted-text">tiny</span>' in pride
    stage = (html / "book" / "run" / "tiny-core" / "06_judge.html").read_text()
    assert "From the run" in stage and "tiny-core" in stage
    assert (html / "book" / "run" / "tiny" / "08_pride.html").exists()
    conclusions = (html / "book" / "run" / "conclusions.html").read_text()
    assert 'pasted-text">tiny-core, tiny<' in conclusions
    # The tiny run has the dbt stage, so the DBT question is answered from it.
    assert "Not answered in this book: none of its runs has the dbt stage" not in conclusions
    assert "the SFT+DPO student against the base student" in conclusions


def test_the_conclusions_notebook_is_thin_and_carries_no_outputs():
    import ast

    import nbformat

    nb = nbformat.read(REPO / "notebooks" / book.CONCLUSIONS_NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    assert {n.target.id for n in ast.parse(params[0].source).body} == {"runs"}
    for c in code:
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(ast.parse(c.source)))
