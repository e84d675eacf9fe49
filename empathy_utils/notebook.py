"""Small helpers for the stage notebooks: glue computed values so book pages can cite them."""

from __future__ import annotations

import warnings

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
    """Glue each comparison's numbers as ``<candidate>_vs_<opponent>_<field>`` plus ``judge_name``."""
    confidence = results["confidence"].iloc[0] if len(results) else 0.95
    keys = glue_values({"judge_name": judge_name, "confidence_pct": int(round(100 * confidence))})
    fields = ("win_rate", "ci_low", "ci_high", "paper_win_rate", "wins", "ties", "losses", "unparsed", "pairs",
              "position_consistency")
    for _, row in results.iterrows():
        prefix = f"{row['candidate']}_vs_{row['opponent']}_"
        keys += glue_values({f: row[f] for f in fields if row[f] is not None}, prefix)
    return keys


def show(frame: pd.DataFrame | None, caption: str | None = None):
    """Display a table (nothing when there is nothing to show, e.g. rows of research data)."""
    from IPython.display import display

    if frame is None:
        return None
    display(frame.style.set_caption(caption) if caption else frame)
    return None
