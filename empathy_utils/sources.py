"""Dialogue sources by name: ``data.source`` names one, and ``data.load_dialogues`` loads it from here.
A new source is one ``register_dialogue_source`` call with a loader that returns the study's table:

    register_dialogue_source("my-dialogues", load_my_dialogues)   # load_my_dialogues(data_dir) -> DataFrame

The table has one row per dialogue with the columns in ``DIALOGUE_COLUMNS`` (``split`` is ``train`` or
``test``), and ``frame.attrs`` records ``source_file`` and ``sha256`` (the manifest keeps them). Only
improve-initial (M3) applies to a source without rated LLM replies, as for the embedded corpus.
"""

from __future__ import annotations

from typing import Callable

from .config_loader import did_you_mean
from .errors import DataError, StudyError

DIALOGUE_COLUMNS = ("dialogue_id", "emotion", "situation", "utterance", "reference_reply", "split")
DialogueLoader = Callable[..., object]  # (data_dir or None) -> pandas.DataFrame

_SOURCES: dict[str, DialogueLoader] = {}


def register_dialogue_source(name: str, loader: DialogueLoader, replace: bool = False) -> None:
    """Make ``name`` a valid ``data.source``."""
    if name in _SOURCES and not replace:
        raise StudyError(f"a dialogue source named {name!r} is registered already (pass replace=True to change it)")
    _SOURCES[name] = loader


def unregister_dialogue_source(name: str) -> None:
    _SOURCES.pop(name, None)


def dialogue_source_names() -> list[str]:
    return list(_SOURCES)


def load_source(name: str, data_dir=None):
    """The dialogues of source ``name``, checked for the columns and attributes the study reads."""
    if name not in _SOURCES:
        raise DataError(f"unknown data source {name!r}{did_you_mean(name, dialogue_source_names())}")
    frame = _SOURCES[name](data_dir)
    missing = [c for c in DIALOGUE_COLUMNS if c not in getattr(frame, "columns", [])]
    if missing:
        raise DataError(f"data source {name!r}: the loader's table lacks column(s) {missing}; "
                        f"a source gives {list(DIALOGUE_COLUMNS)}")
    bad_split = sorted(set(frame["split"]) - {"train", "test"})
    if bad_split:
        raise DataError(f"data source {name!r}, column split: {bad_split} (expected train or test)")
    for key in ("source_file", "sha256"):
        if not frame.attrs.get(key):
            raise DataError(f"data source {name!r}: the loader must set frame.attrs[{key!r}] (the manifest records it)")
    return frame


def _embedded(data_dir=None):
    from .data import load_embedded_corpus

    return load_embedded_corpus()


def _llms_vs_humans(data_dir=None):
    from .data import load_llms_vs_humans

    return load_llms_vs_humans(data_dir)


register_dialogue_source("embedded-corpus", _embedded)
register_dialogue_source("llms-vs-humans", _llms_vs_humans)
