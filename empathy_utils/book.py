"""The book: executed runs -> the pages Jupyter Book 1 renders (nothing is executed here except the
small conclusions notebook, which reads the runs' result files).

One run (``empathy-study book --run default``): its stage pages are copied to ``book/run/`` and the
study chapters (``book/*.md``) glue from ``run/NN_stage.ipynb``, as they are written.

Several runs (``--run A --run B``, or a profile's ``book:`` list): each run's pages go to
``book/run/<run-name>/`` under a part named after the run, and the chapters are copied to
``book/run/`` with every ``run/NN_stage`` reference pointed at the first run of the book that holds
all the stages the chapter cites, so each number is glued from the run that produced it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from .artifacts import RunPaths, read_manifest
from .config import STAGES
from .errors import StudyError
from .paths import notebooks_dir, repo_root
from .runner import BOOK_RUN_FOLDER, CHAPTER_NEEDS, STAGE_NOTEBOOKS, execute_notebook

# The conclusions notebook: executed at every book build from the runs it is given.
CONCLUSIONS_NOTEBOOK = "conclusions.ipynb"
ANSWERS_PAGE = "answers.ipynb"  # its executed copy in book/run/, the page the conclusions chapter glues from
STAGE_STEMS = {Path(nb).stem: stage for stage, nb in STAGE_NOTEBOOKS.items()}
_STAGE_REF = re.compile(r"\brun/(" + "|".join(map(re.escape, STAGE_STEMS)) + r")\b")


@dataclass
class BookRun:
    """A finished run as the book sees it: its name (the part's caption), folder, stages, manifest."""

    name: str
    run_dir: Path
    stages: list[str]
    params_hash: str
    manifest: dict


def book_run(run_dir: str | os.PathLike) -> BookRun:
    """Check that a run folder holds every stage it planned, finished and with its executed notebook."""
    run_dir = Path(run_dir)
    if not run_dir.is_absolute():
        run_dir = repo_root() / run_dir
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise StudyError(f"run {run_dir.name!r}: no manifest in {run_dir}; run it first "
                         f"(`empathy-study run --profile ...`)")
    manifest = read_manifest(run_dir)
    planned = manifest.get("params", {}).get("run", {}).get("stages") or list(STAGES)
    done = {s for s, rec in manifest.get("stages", {}).items() if rec.get("status") == "ok"}
    missing = [s for s in planned if s not in done]
    if missing:
        raise StudyError(f"{run_dir}: stage(s) {', '.join(missing)} have not finished; run them before building the book")
    unsaved = [str(paths.notebooks / STAGE_NOTEBOOKS[s]) for s in planned
               if s in STAGE_NOTEBOOKS and not (paths.notebooks / STAGE_NOTEBOOKS[s]).exists()]
    if unsaved:
        raise StudyError(f"{run_dir}: the executed notebook(s) {', '.join(unsaved)} are missing; a stage run with "
                         "papermill by hand must write its output notebook there")
    name = manifest.get("params", {}).get("run", {}).get("name") or run_dir.name
    return BookRun(name=name, run_dir=run_dir, stages=[s for s in STAGES if s in planned and s in STAGE_NOTEBOOKS],
                   params_hash=manifest.get("params_hash", "?"), manifest=manifest)


def run_header(run: BookRun, stage: str) -> str:
    """The line under a stage page's title: which run it belongs to and with which parameters."""
    record = run.manifest.get("stages", {}).get(stage, {})
    return (f"*From the run **{run.name}** (params hash `{run.params_hash}`; this stage's params hash "
            f"`{record.get('params_hash', '?')}`), executed {record.get('finished', '?')}.*")


def _with_header(src: Path, dst: Path, header: str) -> None:
    """Copy an executed notebook, with ``header`` as a markdown cell after its title cell."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    cell = nbformat.v4.new_markdown_cell(header)
    cell["metadata"]["tags"] = ["run-header"]
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("#") else 0
    nb.cells.insert(at, cell)
    nbformat.write(nb, dst)


def copy_run_pages(run: BookRun, target: Path, root: Path) -> None:
    """A run's executed notebooks (each with its run header), figures and manifest -> ``target``."""
    paths = RunPaths(run.run_dir)
    target.mkdir(parents=True, exist_ok=True)
    for stage in run.stages:
        _with_header(paths.notebooks / STAGE_NOTEBOOKS[stage], target / STAGE_NOTEBOOKS[stage], run_header(run, stage))
    if paths.figures.exists():
        shutil.copytree(paths.figures, target / "figures")
        shared = root / "figures" / run.run_dir.name
        if shared.exists():
            shutil.rmtree(shared)
        shutil.copytree(paths.figures, shared)
    for src in (paths.manifest, paths.card):
        if src.exists():
            shutil.copy2(src, target / src.name)


def stage_book_run(run_dir: Path, root: Path) -> Path:
    """One run: its pages to ``book/run/`` and the table of contents for the stages it has."""
    run = book_run(run_dir)
    target = _fresh(root / BOOK_RUN_FOLDER)
    copy_run_pages(run, target, root)
    write_toc(root, run.stages)
    return target


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def write_toc(root: Path, stages: list[str]) -> Path:
    """book/_toc.yml without the pages of stages this run did not have -> book/run/_toc.yml."""
    toc = yaml.safe_load((root / "book" / "_toc.yml").read_text())
    absent = {f"book/run/{Path(nb).stem}" for s, nb in STAGE_NOTEBOOKS.items() if s not in stages}
    absent |= {page for page, stage in CHAPTER_NEEDS.items() if stage not in stages}
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part["chapters"] if c.get("file") not in absent]
    toc["parts"] = [p for p in toc.get("parts", []) if p["chapters"]]
    out = root / BOOK_RUN_FOLDER / "_toc.yml"
    out.write_text(yaml.safe_dump(toc, sort_keys=False))
    return out


# ------------------------------------------------------------------------------- several runs
def chapter_holder(text: str, runs: list[BookRun], chapter: str) -> BookRun | None:
    """The first run of the book holding every stage the chapter cites; None when the chapter cites
    no stage. A chapter that needs a stage (CHAPTER_NEEDS) no run has is dropped by the caller; any
    other chapter whose stages no single run holds is an error naming them."""
    cited = {STAGE_STEMS[m] for m in _STAGE_REF.findall(text)}
    if not cited:
        return None
    for run in runs:
        if cited <= set(run.stages):
            return run
    raise StudyError(f"{chapter}: cites the stage(s) {', '.join(s for s in STAGES if s in cited)} of one run, "
                     f"and no run of this book has them all (runs: "
                     + "; ".join(f"{r.name}: {', '.join(r.stages)}" for r in runs) + ")")


def retarget_chapter(text: str, holder: BookRun | None) -> str:
    """A chapter's text as it reads from ``book/run/``: stage notebooks and figures of ``holder``,
    the answers page beside it, the book's images one folder up."""
    if holder is not None:
        text = _STAGE_REF.sub(lambda m: f"{holder.name}/{m.group(1)}", text)
        text = re.sub(r"\brun/figures/", f"{holder.name}/figures/", text)
    text = text.replace(f"run/{ANSWERS_PAGE}", ANSWERS_PAGE).replace(f"run/{Path(ANSWERS_PAGE).stem}",
                                                                      Path(ANSWERS_PAGE).stem)
    return re.sub(r"(\{figure\}\s+)images/", r"\1../images/", text)


def stage_book_runs(run_dirs: list[Path], root: Path, log=print) -> Path:
    """Several runs: each one's pages under ``book/run/<run-name>/`` in a part named after it, the
    chapters copied beside them and pointed at the runs that hold their numbers."""
    runs = [book_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise StudyError(f"the book's runs must have different names (got {names})")
    target = _fresh(root / BOOK_RUN_FOLDER)
    for run in runs:
        copy_run_pages(run, target / run.name, root)
    toc = yaml.safe_load((root / "book" / "_toc.yml").read_text())
    held = {s for r in runs for s in r.stages}
    parts = []
    for part in toc.get("parts", []):
        if all(c["file"].startswith(f"{BOOK_RUN_FOLDER.as_posix()}/") for c in part["chapters"]):
            parts += [{"caption": f"Run: {r.name}",
                       "chapters": [{"file": f"{BOOK_RUN_FOLDER.as_posix()}/{r.name}/{Path(STAGE_NOTEBOOKS[s]).stem}"}
                                    for s in r.stages]} for r in runs]
            continue
        chapters = []
        for chapter in part["chapters"]:
            entry = _copy_chapter(chapter, runs, held, root, log)
            if entry is not None:
                chapters.append(entry)
        if chapters:
            parts.append({**part, "chapters": chapters})
    root_page = _copy_chapter({"file": toc["root"]}, runs, held, root, log)
    out = {**toc, "root": root_page["file"], "parts": parts}
    (target / "_toc.yml").write_text(yaml.safe_dump(out, sort_keys=False))
    return target


def _copy_chapter(entry: dict, runs: list[BookRun], held: set, root: Path, log) -> dict | None:
    """One toc entry (and its sections) of book/_toc.yml, copied to book/run/; None when dropped."""
    file = entry["file"]
    if file.startswith(f"{BOOK_RUN_FOLDER.as_posix()}/"):  # a generated page (the answers): already there
        return dict(entry)
    need = CHAPTER_NEEDS.get(file)
    if need is not None and need not in held:
        log(f"book: no run of this book has the {need} stage; chapter {file} left out")
        return None
    text = (root / f"{file}.md").read_text()
    name = Path(file).name
    (root / BOOK_RUN_FOLDER / f"{name}.md").write_text(retarget_chapter(text, chapter_holder(text, runs, file)))
    out = {**entry, "file": f"{BOOK_RUN_FOLDER.as_posix()}/{name}"}
    if "sections" in entry:
        out["sections"] = [s for s in (_copy_chapter(s, runs, held, root, log) for s in entry["sections"]) if s]
    return out


# ------------------------------------------------------------------------------------ building
def execute_conclusions(run_dirs: list[Path], root: Path) -> Path:
    """Execute the conclusions notebook on the book's runs -> book/run/answers.ipynb."""
    import papermill as pm

    out = root / BOOK_RUN_FOLDER / ANSWERS_PAGE
    try:
        execute_notebook(notebooks_dir() / CONCLUSIONS_NOTEBOOK, out, {"runs": [_shown(d) for d in run_dirs]})
    except pm.PapermillExecutionError as exc:
        raise StudyError(f"the conclusions notebook failed: {exc.ename}: {exc.evalue} (see {out})") from None
    return out


def _shown(run_dir: Path) -> str:
    """A run folder as the answers page prints it: relative to the repository when inside it."""
    return str(run_dir.relative_to(repo_root())) if run_dir.is_relative_to(repo_root()) else str(run_dir)


def _absolute(run_dir) -> Path:
    run_dir = Path(run_dir)
    return run_dir if run_dir.is_absolute() else repo_root() / run_dir


def build_book(run_dirs, root: str | os.PathLike | None = None, strict: bool = True, log=print) -> Path:
    """Render the book from one executed run (a path) or several (a list) with Jupyter Book 1."""
    import subprocess
    import sys

    root = Path(root) if root else repo_root()
    several = isinstance(run_dirs, (list, tuple))
    run_dirs = [_absolute(d) for d in (run_dirs if several else [run_dirs])]
    if not run_dirs:
        raise StudyError("no run to build the book from")
    if len(run_dirs) == 1:
        stage_book_run(run_dirs[0], root)
    else:
        stage_book_runs(run_dirs, root, log=log)
    execute_conclusions(run_dirs, root)
    html = root / "_build" / "html"
    if html.exists():  # no page of an earlier book (another run, another set of runs) is left behind
        shutil.rmtree(html)
    jupyter_book = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]
    # --all: a fresh build every time; pages cite notebooks that change from run to run.
    cmd = jupyter_book + ["build", str(root), "--all", "--toc", str(root / BOOK_RUN_FOLDER / "_toc.yml")]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    log(f"building the book from {', '.join(str(d) for d in run_dirs)} ...")
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise StudyError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    log(f"book: {html / 'index.html'}")
    return html


# ------------------------------------------------------------------- which runs a book holds
def book_entry_runs(cfg, log=print) -> list[tuple[dict, object]]:
    """(entry, run config) for every run of the profiles a params file's ``book:`` list names that
    apply here: an entry that needs the research data is left out without it, and an optional one
    while its profile is absent or cannot be read here; each is said in one line."""
    from .config import grid_configs, load_config, profile_path
    from .errors import ConfigError
    from .paths import DATA_ENV

    out = []
    for entry in cfg.book:
        name = entry["profile"]
        if entry.get("needs") == "research-data" and not os.environ.get(DATA_ENV):
            log(f"book: {name} needs the research data (${DATA_ENV} is not set); its part is left out")
            continue
        try:
            entry_cfg = load_config(profile_path(name))
        except ConfigError as exc:
            if not entry.get("optional"):
                raise
            log(f"book: the optional profile {name!r} cannot be used here ({str(exc).splitlines()[0]}); "
                "its part is left out")
            continue
        out += [(entry, run) for run in grid_configs(entry_cfg)]
    return out


def resolve_book_runs(names: list[str], log=print) -> list[Path]:
    """The run folders of ``empathy-study book --run A --run B``, in order, each once. A name is a run
    folder, a run under runs/, or a profile; a profile with a ``book:`` list brings its own runs and
    those of the profiles it lists. A missing run is an error naming it (an optional one: a line)."""
    dirs: list[Path] = []
    for name in names:
        for folder in _resolve_one(name, log):
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def _resolve_one(name: str, log) -> list[Path]:
    from .config import grid_configs, load_config, profile_path
    from .errors import ConfigError

    root = repo_root()
    try:
        cfg = load_config(profile_path(name))
    except ConfigError:
        cfg = None
    if cfg is not None and cfg.book:
        folders = []
        for run in grid_configs(cfg):
            folder = root / run.run_dir
            if not folder.exists():
                raise StudyError(f"profile {name!r}: its run {run.run.name!r} has no folder {folder}; "
                                 f"run `empathy-study run --profile {name}` first")
            folders.append(folder)
        for entry, run in book_entry_runs(cfg, log):
            folder = root / run.run_dir
            if folder.exists():
                folders.append(folder)
            elif entry.get("optional"):
                log(f"book: no run {run.run.name!r} ({folder}), so the book has no part for it; "
                    f"`empathy-study run --profile {entry['profile']}` adds it")
            else:
                raise StudyError(f"profile {name!r} lists {entry['profile']!r} in its book, and its run "
                                 f"{run.run.name!r} has no folder {folder}; run `empathy-study run --profile "
                                 f"{entry['profile']}` (or `--profile {name}`, which runs every run of its book)")
        return folders
    folder = Path(name)
    if not folder.exists():
        folder = root / "runs" / name
    if not folder.exists() and cfg is not None:  # a profile's name: its run folder
        folder = root / cfg.run_dir
    if not folder.exists():
        raise StudyError(f"no run folder {name!r} (looked in runs/); run `empathy-study run --profile {name}` first")
    return [folder]
