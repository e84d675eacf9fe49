"""Packages whose names live in their submodules, imported on first use (PEP 562).

A method's package (``pride``, ``judge_validation``) keeps its params section in a light
``settings`` module that :mod:`empathy_utils.config` imports; Python runs the package's
``__init__`` first, so an ``__init__`` that imported the method's stage (which imports the config)
would close a cycle. With :func:`lazy_exports` the ``__init__`` imports nothing and the names
notebooks and tests use (``jv.rating_pairs``, ``from empathy_utils.pride import run_pride``) still
work.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``__getattr__`` for ``package``: ``exports`` maps a public name to ``"submodule"`` or
    ``"submodule:attribute"`` (a name exported under another one); any other name is tried as a
    submodule (``jv.pairs``)."""

    def __getattr__(name: str):
        if name in exports:
            module, _, attribute = exports[name].partition(":")
            return getattr(importlib.import_module(f".{module}", package), attribute or name)
        if not name.startswith("__"):
            try:
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise  # the submodule exists but something it imports does not
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
