"""Where things live: the repository, the cache, the research data.

The research data is never part of the repository. It is found, in this order, from an explicit
argument (``--data-dir`` or ``data.data_dir``), then the ``EMPATHY_DATA_DIR`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError, StudyError

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


# ------------------------------------------------------------------------------ the model hub
# The study never waits on a model hub it may not reach: it uses the models it finds on this machine
# (the embedded model, tiny-random, local folders, the Hugging Face cache) and says how to fetch any
# other one. Set HF_HUB_OFFLINE=0 yourself to let it download instead.
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_offline_by_default() -> bool:
    """Turn the hub off unless the user chose (HF_HUB_OFFLINE set either way); returns whether it is off.

    Called by the entry points (command line, runner, stage notebooks) before anything imports
    huggingface_hub, which reads the variable once, at import."""
    for var in HUB_OFFLINE_VARS:
        os.environ.setdefault(var, "1")
    return hub_is_off()


def hub_is_off() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def require_local_model(spec: str) -> None:
    """With the hub off, a Hugging Face id must already be in the local cache: otherwise one line
    naming the model and the command that fetches it (instead of a retry loop or a long traceback)."""
    if os.path.isdir(os.path.expanduser(spec)) or not hub_is_off():
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(spec, "config.json")
    except HFValidationError:
        raise StudyError(f"model {spec!r}: neither a local folder nor a Hugging Face id (org/name); "
                        "use embedded:smollm2-135m-instruct, tiny-random, a folder or an id") from None
    if not isinstance(found, str):
        raise StudyError(f"model {spec!r} is not on this machine and the study does not download by itself: "
                        f"fetch it once with `hf download {spec}` (or set HF_HUB_OFFLINE=0 to allow downloads)")
