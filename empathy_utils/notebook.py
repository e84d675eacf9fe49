"""Small helpers for the stage notebooks: read the notebook's parameters through the same loader as
the command line, record the stage in the run's manifest, and glue computed values so book pages can
cite them."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pandas as pd

from .presentation import plain


def setup_notebook() -> None:
    """Called once at the top of every stage notebook (never on import). Executed pages are read as a
    book: keep dependency notices and progress bars out of them — tqdm's hint to install ipywidgets (a
    static page cannot show widgets anyway), the deprecation notices that TRL and PEFT trigger inside
    transformers 5, the libraries' per-file progress bars — and show whole table cells (judge names
    are long and must not be cut)."""
    from .training import quiet_libraries

    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", message=r".*(gradient|activation)_checkpointing.* is deprecated",
                            category=FutureWarning)
    pd.set_option("display.max_colwidth", None)
    quiet_libraries()


def glue_values(values: dict, prefix: str = "") -> list[str]:
    """Glue every scalar of ``values`` under ``prefix + key``; returns the keys glued."""
    from myst_nb import glue

    keys = []
    for key, value in values.items():
        value = plain(value)
        if isinstance(value, (int, float, str, bool)):
            glue(f"{prefix}{key}", value, display=False)
            keys.append(f"{prefix}{key}")
    return keys


def glue_winrates(results: pd.DataFrame, judge_name: str) -> list[str]:
    """Glue each comparison's numbers as ``<candidate>_vs_<opponent>_<field>`` and its rates as the book
    prints them (``..._win_rate_text``, ``..._ci_text``: :func:`presentation.winrate_texts`), plus
    ``judge_name`` (short, for sentences) and ``judge_description`` (the judge's full name)."""
    from .presentation import short_judge_name, winrate_texts

    confidence = results["confidence"].iloc[0] if len(results) else 0.95
    keys = glue_values({"judge_name": short_judge_name(judge_name), "judge_description": judge_name,
                        "confidence_pct": int(round(100 * confidence))})
    fields = ("win_rate", "ci_low", "ci_high", "paper_win_rate", "wins", "ties", "losses", "unparsed", "pairs",
              "position_consistency")
    for _, row in results.iterrows():
        prefix = f"{row['candidate']}_vs_{row['opponent']}_"
        keys += glue_values({f: row[f] for f in fields if row[f] is not None}, prefix)
        keys += glue_values(winrate_texts(row), prefix)
    return keys


def show(frame: pd.DataFrame | None, caption: str | None = None, *, empty: str | None = None,
         fold_constant_columns: bool = False):
    """Display a table (nothing when there is nothing to show, e.g. rows of research data).

    ``empty``: the sentence a reader sees when the table has no rows (instead of an empty grid).
    ``fold_constant_columns``: a column with one value in every row (of two or more) leaves the
    table and is said once in the caption, so the columns that differ fit the page's width."""
    from IPython.display import Markdown, display

    if frame is None:
        return None
    if frame.empty:
        display(Markdown(f"*{empty or 'Nothing to show in this run.'}*"))
        return None
    if fold_constant_columns:
        frame, same = split_constant_columns(frame)
        if same:
            caption = " ".join(part for part in (caption, f"Every row: {same}.") if part)
    display(frame.style.set_caption(caption) if caption else frame)
    return None


def split_constant_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(the frame without its columns that hold one value in every row, "column value; ..." for
    them). A frame of one row keeps every column: there nothing repeats."""
    if len(frame) < 2:
        return frame, ""
    constant = [c for c in frame.columns if frame[c].astype(str).nunique() == 1]
    same = "; ".join(f"{c} {frame[c].iloc[0]}" for c in constant)
    return frame.drop(columns=constant), same


# ------------------------------------------------------------------------------- stage parameters
# The parameters cell of every stage notebook: these names, nothing else.
NOTEBOOK_PARAMETERS = {
    "profile": "a profile in notebooks/params/ (tiny, default, ...) or a params YAML file",
    "overrides": "changes to the profile in --set syntax, e.g. [\"sft.epochs=2\"]",
    "run_dir": "the run folder; empty: runs/<run.name>",
}
# papermill writes the values it injects into a cell that starts with exactly this line.
INJECTED_CELL_HEADER = "# Parameters"


def injected_names(namespace: dict) -> list[str]:
    """Names assigned by the cells papermill injected in this kernel (read from IPython's ``In``)."""
    names: list[str] = []
    for source in namespace.get("In", []) or []:
        if not isinstance(source, str) or source.splitlines()[:1] != [INJECTED_CELL_HEADER]:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameters(namespace: dict) -> None:
    """An unknown injected parameter is an error naming it and the nearest valid names (papermill
    itself only logs a warning, and the notebook would silently run something else)."""
    from .config_loader import did_you_mean
    from .errors import ConfigError

    unknown = [n for n in injected_names(namespace) if n not in NOTEBOOK_PARAMETERS]
    if unknown:
        lines = [f"{n!r}{did_you_mean(n, NOTEBOOK_PARAMETERS)}" for n in unknown]
        raise ConfigError(
            "unknown notebook parameter(s): " + "; ".join(lines) + "\n  this notebook takes "
            + "; ".join(f"{k} ({v})" for k, v in NOTEBOOK_PARAMETERS.items())
            + "\n  a setting of the study goes in overrides, e.g. -p overrides '[\"sft.epochs=2\"]'")


def parse_overrides(value) -> list[str]:
    """``overrides`` as a list: papermill's ``-p`` passes text, so a YAML list or one ``key=value`` is read."""
    import yaml

    from .errors import ConfigError

    if value is None or value == "":
        return []
    if isinstance(value, str):
        parsed = yaml.safe_load(value) if value.lstrip().startswith("[") else value
        value = parsed if isinstance(parsed, list) else [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"overrides: expected a list of 'section.key=value' texts, got {value!r}")
    return list(value)


def start_stage(stage: str, namespace: dict):
    """The setup of a stage notebook: check the injected parameters, resolve ``profile`` + ``overrides``
    with the command line's loader (``extends:`` included), and record the stage as started in the
    run's manifest. Returns ``(cfg, run_dir)``. With no parameters injected the notebook runs the
    ``default`` profile, exactly as ``empathy-study run --profile default`` would."""
    from .allocator import keep_freed_memory
    from .config_loader import load_config, profile_path
    from .errors import ConfigError
    from .paths import hub_offline_by_default
    from .runner import begin_stage, run_folder

    hub_offline_by_default()
    keep_freed_memory()  # a kernel not started by the runner (papermill or Jupyter by hand) too
    setup_notebook()
    check_parameters(namespace)
    profile = namespace.get("profile") or "default"
    run_dir = namespace.get("run_dir") or ""
    if not isinstance(profile, str) or not isinstance(run_dir, str):
        raise ConfigError(f"profile and run_dir must be text (got profile={profile!r}, run_dir={run_dir!r})")
    path = profile_path(profile)
    overrides = parse_overrides(namespace.get("overrides"))
    cfg = load_config(path, overrides)
    given, folder = run_folder(cfg, run_dir or None)
    source = str(path) + (f" --set {' '.join(overrides)}" if overrides else "")
    begin_stage(cfg, stage, folder, params_source=source)
    # Stage functions take the folder as the runner names it (relative to the repository, where the
    # kernel runs); a kernel started elsewhere gets the absolute path.
    return cfg, str(given if given.is_absolute() or _cwd_is_repo() else folder)


def _cwd_is_repo() -> bool:
    from .paths import repo_root

    return Path.cwd().resolve() == repo_root().resolve()


def finish_stage(stage: str, run_dir) -> None:
    """The last cell of a stage notebook: record in the manifest that the stage finished."""
    from .runner import finish_stage as record_finish

    folder = Path(run_dir)
    if not folder.is_absolute():
        from .paths import repo_root

        folder = repo_root() / folder
    record_finish(stage, folder)
