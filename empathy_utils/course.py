"""The course layer: exercises whose solutions are code blocks in the book's chapters.

One module finds those blocks, runs them in a scratch copy of the study (a *classroom*, so a
solution that writes a prompt file or a run folder never touches the reader's checkout), and reads
the times measured for them. The test suite (``tests/test_exercises.py``), the timing script
(``benchmarks/course_times.py``) and the teaching page all go through it, so what the book says a
solution costs is what running that very code cost.

In a chapter, a solution's runnable code is a fenced ``python`` or ``bash`` block preceded by a MyST
comment line naming its tier::

    % test: fast     (no run needed: runs in the default test suite)
    % test: slow     (trains, or needs the lab's tiny run in runs/tiny: marked slow, run after
                      the commands of `make lab`, and in CI)
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StudyError

# Study chapters that carry exercises (dbt joins when its chapter exists).
CHAPTERS = ("results", "judges", "methods", "prompts", "pride", "dbt")
TIERS = ("fast", "slow")
TIMES_FILE = Path("book") / "course_times.json"

_TIER = re.compile(r"^%\s*test:\s*(\w+)\s*$")
_FENCE_OPEN = re.compile(r"^```(\w+)\s*$")
_DIRECTIVE = re.compile(r"^(:{3,})\{(exercise|solution)\}\s*(\S*)\s*$")
_LABEL = re.compile(r"^:label:\s*(\S+)\s*$")


@dataclass(frozen=True)
class SolutionBlock:
    """One runnable code block of a solution."""

    chapter: str
    exercise: str  # the label of the exercise it solves
    index: int  # position among that solution's blocks
    language: str  # python or bash
    tier: str  # fast or slow
    code: str
    line: int  # 1-based line of the opening fence in the chapter

    @property
    def where(self) -> str:
        return f"book/{self.chapter}.md:{self.line} ({self.exercise} #{self.index})"


@dataclass(frozen=True)
class Directive:
    kind: str  # exercise or solution
    label: str  # the exercise's label (a solution names the exercise it solves)
    body: str
    line: int


def directives(path: str | os.PathLike) -> list[Directive]:
    """The ``{exercise}`` and ``{solution}`` directives of a chapter, in order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out: list[Directive] = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, kind, arg = m.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise StudyError(f"{path}:{start + 1}: the {kind} directive is never closed with {fence}")
        label = arg
        if kind == "exercise":
            label = next((lm.group(1) for b in body if (lm := _LABEL.match(b.strip()))), "")
        if not label:
            raise StudyError(f"{path}:{start + 1}: an {kind} needs a label (exercise: ':label:', solution: its argument)")
        out.append(Directive(kind, label, "\n".join(body), start + 1))
        i += 1
    return out


def solution_blocks(path: str | os.PathLike) -> list[SolutionBlock]:
    """Every tier-marked code block inside the solutions of a chapter."""
    path = Path(path)
    blocks: list[SolutionBlock] = []
    for d in directives(path):
        if d.kind != "solution":
            continue
        lines = d.body.splitlines()
        index = 0
        for j, text in enumerate(lines):
            tier = _TIER.match(text.strip())
            if not tier:
                continue
            if tier.group(1) not in TIERS:
                raise StudyError(f"{path}:{d.line + 1 + j}: unknown test tier {tier.group(1)!r}; use one of {TIERS}")
            opening = _FENCE_OPEN.match(lines[j + 1]) if j + 1 < len(lines) else None
            if not opening or opening.group(1) not in ("python", "bash"):
                raise StudyError(f"{path}:{d.line + 1 + j}: '% test:' must sit right above a ```python or ```bash block")
            end = next((k for k in range(j + 2, len(lines)) if lines[k].strip() == "```"), None)
            if end is None:
                raise StudyError(f"{path}:{d.line + 2 + j}: unclosed code block")
            blocks.append(SolutionBlock(path.stem, d.label, index, opening.group(1), tier.group(1),
                                        "\n".join(lines[j + 2:end]) + "\n", d.line + 2 + j))
            index += 1
    return blocks


def chapter_paths(repo: str | os.PathLike) -> list[Path]:
    """The study chapters present in this checkout."""
    return [p for p in (Path(repo) / "book" / f"{c}.md" for c in CHAPTERS) if p.exists()]


# ------------------------------------------------------------------------------ the classroom
_COPIED = ("empathy_utils", "notebooks", "book", "_config.yml", "Makefile", "pyproject.toml")


def make_classroom(repo: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A scratch copy of the study (package, notebooks, book, config) that shares the checkout's
    ``.venv``; solutions run here, as a student would run them in a fresh clone."""
    repo, dest = Path(repo), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns("run", "_build", "__pycache__", "*.pyc")
    for name in _COPIED:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=skip, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    venv = repo / ".venv"
    if venv.exists() and not (dest / ".venv").exists():
        (dest / ".venv").symlink_to(venv.resolve(), target_is_directory=True)
    return dest


def classroom_env(classroom: str | os.PathLike) -> dict[str, str]:
    """The environment a solution runs in: the classroom's package first, no network."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(classroom).resolve())
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["MPLBACKEND"] = "Agg"  # solutions that draw save their figures to files
    return env


@dataclass
class BlockResult:
    block: SolutionBlock | None
    returncode: int
    output: str
    cpu_s: float
    wall_s: float


def run_code(language: str, code: str, classroom: str | os.PathLike, timeout: float = 600,
             python: str | None = None) -> BlockResult:
    """Run one block (python or bash) in the classroom; CPU time counts every process it started."""
    classroom = Path(classroom)
    interpreter = python or str(classroom / ".venv" / "bin" / "python")
    cmd = [interpreter, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=classroom, env=classroom_env(classroom), capture_output=True, text=True,
                              timeout=timeout)
        code_, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code_, output = 124, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}{exc.stderr or ''}"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return BlockResult(None, code_, output, cpu, wall)


def run_block(block: SolutionBlock, classroom: str | os.PathLike, timeout: float = 600) -> BlockResult:
    result = run_code(block.language, block.code, classroom, timeout)
    result.block = block
    return result


def lab_commands(repo: str | os.PathLike, target: str = "lab") -> list[str]:
    """The shell commands of a Makefile target (``$(BIN)`` spelled out), so a test can run what
    ``make lab`` runs without re-installing the environment."""
    lines = (Path(repo) / "Makefile").read_text(encoding="utf-8").splitlines()
    head = next((i for i, t in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", t)), None)
    if head is None:
        raise StudyError(f"Makefile has no target {target!r}")
    out = []
    for text in lines[head + 1:]:
        if not text.startswith("\t"):
            break
        out.append(text.strip().replace("$(BIN)", ".venv/bin").replace("$(PROFILE)", "default"))
    if not out:
        raise StudyError(f"Makefile target {target!r} has no commands")
    return out


# ----------------------------------------------------------------------------- measured times
def read_times(repo: str | os.PathLike) -> dict:
    """The measurements ``benchmarks/course_times.py`` wrote (``book/course_times.json``)."""
    path = Path(repo) / TIMES_FILE
    if not path.exists():
        raise StudyError(f"{path}: no measured course times; run `python benchmarks/course_times.py`")
    return json.loads(path.read_text(encoding="utf-8"))


def glue_key(exercise: str) -> str:
    """The glue name of an exercise's measured CPU time (``ex-results-ci`` -> ``cpu_ex_results_ci``)."""
    return "cpu_" + re.sub(r"\W", "_", exercise)


def describe_seconds(seconds: float) -> str:
    """A duration the way a lab plan states it."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def exercise_times(times: dict) -> dict[str, dict]:
    """CPU and wall seconds per exercise (its blocks summed)."""
    out: dict[str, dict] = {}
    for rec in times["blocks"]:
        e = out.setdefault(rec["exercise"], {"chapter": rec["chapter"], "tier": rec["tier"], "cpu_s": 0.0,
                                             "wall_s": 0.0})
        e["cpu_s"] += rec["cpu_s"]
        e["wall_s"] += rec["wall_s"]
        if rec["tier"] == "slow":
            e["tier"] = "slow"
    return out


def times_table(times: dict):
    """The teaching page's table: one row per exercise, as measured."""
    import pandas as pd

    rows = [{"chapter": e["chapter"], "exercise": name, "tested": "slow, after make lab" if e["tier"] == "slow" else "default suite",
             "CPU time": describe_seconds(e["cpu_s"]), "wall time": describe_seconds(e["wall_s"])}
            for name, e in exercise_times(times).items()]
    return pd.DataFrame(rows)


def glue_times(times: dict) -> dict[str, str]:
    """Glue values: each exercise's CPU time, the lab set-up's times, and when/where they were measured."""
    out = {glue_key(name): describe_seconds(e["cpu_s"])
           for name, e in exercise_times(times).items()}
    lab = times["lab"]
    out["lab_setup_wall"] = describe_seconds(lab["wall_s"])
    out["lab_setup_cpu"] = describe_seconds(lab["cpu_s"])
    out["times_measured_on"] = times["measured_on"]
    out["times_machine"] = times["machine"]
    load = times.get("load_average")
    out["times_load"] = (f"load average {load['start']:g} at the start, {load['end_15min']:g} over the last quarter "
                         "hour" if load else "load not recorded")
    return out
