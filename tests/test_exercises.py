"""The course layer: every study chapter opens with what the reader will learn, closes with a summary,
and has exercises whose solutions run. Each solution's code is taken from the chapter itself and run in
a scratch copy of the study (see empathy_utils/course.py): blocks marked ``% test: fast`` here in the
default suite, blocks marked ``% test: slow`` after the lab's set-up command (``make lab``), as slow tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from empathy_utils.course import (
    TIMES_FILE,
    chapter_paths,
    directives,
    exercise_times,
    glue_key,
    lab_commands,
    make_classroom,
    read_times,
    run_block,
    run_code,
    solution_blocks,
)
from empathy_utils.errors import StudyError

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = chapter_paths(REPO)
BLOCKS = [b for path in CHAPTERS for b in solution_blocks(path)]


def test_every_study_chapter_is_a_lesson():
    assert {p.stem for p in CHAPTERS} >= {"results", "judges", "methods", "prompts", "pride"}
    for path in CHAPTERS:
        text = path.read_text(encoding="utf-8")
        opening = text.find(":::{admonition} What you will learn")
        first_section = text.find("\n## ")
        assert 0 < opening < first_section, f"{path.name}: 'What you will learn' must open the chapter"
        headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
        assert headings[-3:] == ["Exercises", "Discussion questions", "Summary"], \
            f"{path.name}: must close with Exercises, Discussion questions and a Summary (has {headings[-3:]})"
        discussion = text.split("## Discussion questions", 1)[1].split("## Summary", 1)[0]
        assert len(re.findall(r"^- ", discussion, flags=re.MULTILINE)) >= 3, f"{path.name}: too few questions"
        summary = text.split("## Summary", 1)[1]
        assert len(summary.split()) >= 30, f"{path.name}: the summary is missing or too short"


def test_every_exercise_has_a_collapsed_solution_with_code_the_suite_runs():
    for path in CHAPTERS:
        found = directives(path)
        exercises = [d for d in found if d.kind == "exercise"]
        solutions = {d.label: d for d in found if d.kind == "solution"}
        assert len(exercises) >= 2, f"{path.name}: needs at least two exercises"
        for ex in exercises:
            assert ex.label.startswith(f"ex-{path.stem}-"), f"{path.name}:{ex.line}: label ex-{path.stem}-…"
            assert ex.label in solutions, f"{path.name}:{ex.line}: {ex.label} has no solution"
            assert f"teaching.md::{glue_key(ex.label)}:s`" in ex.body, \
                f"{path.name}:{ex.line}: {ex.label} must state its measured CPU time (glued from the teaching page)"
            assert ":class: dropdown" in solutions[ex.label].body, f"{ex.label}: the solution must be collapsed"
            assert any(b.exercise == ex.label for b in BLOCKS), f"{ex.label}: the solution has no tested code block"
        assert set(solutions) <= {e.label for e in exercises}, f"{path.name}: a solution solves no exercise"


def test_the_block_reader_refuses_unmarked_or_misplaced_markers(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(":::{solution} ex-results-x\n:class: dropdown\n\n% test: fast\nprint('no fence')\n:::\n")
    with pytest.raises(StudyError, match=r"results.md:4: '% test:' must sit right above"):
        solution_blocks(page)
    page.write_text(":::{solution} ex-results-x\n% test: sometimes\n```python\npass\n```\n:::\n")
    with pytest.raises(StudyError, match="unknown test tier 'sometimes'"):
        solution_blocks(page)
    page.write_text(":::{exercise}\nno label\n:::\n")
    with pytest.raises(StudyError, match="needs a label"):
        directives(page)


def test_a_failing_solution_is_reported_as_failing(tmp_path):
    # The harness must not turn a broken solution into a pass.
    result = run_code("python", "assert 1 + 1 == 3, 'arithmetic'", tmp_path, python=str(REPO / ".venv/bin/python"))
    assert result.returncode != 0 and "arithmetic" in result.output
    result = run_code("bash", "false\necho never", tmp_path)
    assert result.returncode != 0 and "never" not in result.output


def test_every_exercise_has_a_measured_time_and_the_lab_command_is_the_makefiles():
    times = read_times(REPO)
    measured = exercise_times(times)
    for b in BLOCKS:
        assert b.exercise in measured, f"{b.where}: no measured time in {TIMES_FILE}; run benchmarks/course_times.py"
        assert measured[b.exercise]["wall_s"] < 300, f"{b.exercise}: a solution must run in under five minutes"
    assert times["lab"]["commands"] == lab_commands(REPO), "the lab's time was measured for other commands"
    assert "empathy-study run --profile tiny" in lab_commands(REPO)[0]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    return make_classroom(REPO, tmp_path_factory.mktemp("classroom") / "study")


def _check(result):
    assert result.returncode == 0, f"{result.block.where} failed:\n{result.output[-3000:]}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tier == "fast"], ids=lambda b: f"{b.exercise}-{b.index}")
def test_fast_solution_runs(block, classroom):
    _check(run_block(block, classroom, timeout=300))


@pytest.fixture(scope="module")
def lab(classroom):
    """The lab's set-up, exactly the commands of `make lab` (without re-installing the environment)."""
    result = run_code("bash", "\n".join(lab_commands(REPO)), classroom, timeout=600)
    assert result.returncode == 0, result.output[-3000:]
    assert (classroom / "runs" / "tiny" / "results" / "winrates.json").exists()
    return classroom


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tier == "slow"], ids=lambda b: f"{b.exercise}-{b.index}")
def test_slow_solution_runs_after_the_lab_setup(block, lab):
    _check(run_block(block, lab, timeout=300))
