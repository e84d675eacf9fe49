"""Your own judges and data sources, without editing the package: name the modules (or ``.py`` files)
that register them in ``$EMPATHY_PLUGINS`` (comma-separated). They are imported before a params file
is validated, so the command line, the runner and every stage notebook (a separate process that
inherits the variable) know the same names. book/extending.md shows each recipe."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from .errors import StudyError

PLUGINS_ENV = "EMPATHY_PLUGINS"
_loaded: set[str] = set()


def load_plugins() -> list[str]:
    """Import each plugin named in ``$EMPATHY_PLUGINS`` once; returns the names imported now."""
    now = []
    for item in (p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",")):
        if not item or item in _loaded:
            continue
        try:
            if item.endswith(".py"):
                path = Path(item).expanduser()
                spec = importlib.util.spec_from_file_location(f"empathy_plugin_{path.stem}", path)
                if spec is None or not path.exists():
                    raise FileNotFoundError(f"no file {path}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                importlib.import_module(item)
        except StudyError:
            raise
        except Exception as exc:  # a plugin's own bug: say which plugin, keep the cause
            raise StudyError(f"${PLUGINS_ENV}: cannot import {item!r}: {type(exc).__name__}: {exc}") from exc
        _loaded.add(item)
        now.append(item)
    return now
