"""Where things live: the repository, the cache, the research data.

The research data is never part of the repository. It is found, in this order, from an explicit
argument (``--data-dir`` or ``data.data_dir``), then the ``EMPATHY_DATA_DIR`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_ENV = "EMPATHY_DATA_DIR"
CACHE_ENV = "EMPATHY_CACHE_DIR"


def repo_root() -> Path:
    """The checkout this package sits in (the book, notebooks and params live there)."""
    root = PACKAGE_DIR.parent
    if (root / "notebooks").is_dir():
        return root
    cwd = Path.cwd()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "notebooks").is_dir() and (candidate / "_config.yml").exists():
            return candidate
    raise FileNotFoundError(
        "cannot find the study's checkout (a folder with notebooks/ and _config.yml); run from inside it"
    )


def params_dir() -> Path:
    return repo_root() / "notebooks" / "params"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def cache_dir() -> Path:
    """Converted models, tiny models and API response caches: ``$EMPATHY_CACHE_DIR`` or ~/.cache."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "empathy-study"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resources_dir() -> Path:
    return PACKAGE_DIR / "resources"


def resolve_data_dir(explicit: str | os.PathLike | None = None, need: str | None = None) -> Path:
    """Find the research data folder; ``need`` names a sub-folder that must exist in it."""
    chosen = str(explicit) if explicit else os.environ.get(DATA_ENV, "")
    how = "given" if explicit else f"${DATA_ENV}"
    if not chosen:
        raise DataError(
            "no research data directory: this run reads data that is not shipped with the project.\n"
            f"  Set {DATA_ENV}=/path/to/data (or pass --data-dir / data.data_dir). The folder must hold "
            f"{need or 'llms-vs-humans'}/; see book/reproduce.md for where to obtain each dataset."
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: research data directory ({how}) does not exist; fix the path or set {DATA_ENV}")
    if need and not (path / need).is_dir():
        raise DataError(
            f"{path}: has no {need}/ folder (data directory {how}); download the dataset into {path / need}"
        )
    return path
