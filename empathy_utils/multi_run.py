"""Params files that describe more than one run: the ``variants`` section (other distillation
datasets trained and judged like the run's own), ``grid`` points (each a run of its own) and the
``book`` list (other runs a book holds), with their checks.

The functions take the run's config and build the others through its own class, so this module
needs nothing of :mod:`empathy_utils.config` (which imports it for the section and the checks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config_loader import apply_overrides
from .errors import ConfigError
from .settings_base import param

if TYPE_CHECKING:  # the config imports this module
    from .config import StudyConfig


@dataclass
class VariantsSettings:
    """Other distillation datasets, each trained and judged like the run's own: the grid of
    methods x strategies x constructions. Each entry is ``{name: ..., set: {"dataset.strategy": ...}}``;
    ``set`` may change the dataset, teacher, lora, sft and dpo sections (the data and the judge stay
    the run's, so every variant is judged on the same test dialogues by the same judge)."""

    runs: list[dict] = param([], "Variants, each a mapping with a name and a set of section.key: value changes; "
                                 "set may change the dataset, teacher, lora, sft and dpo sections.")
    students: list[str] = param(
        ["sft", "dpo"],
        "Which of each variant's students are judged, and against which of the run's students.",
    )
    opponent: str = param("base", "The run's student every variant's students are judged against.")


VARIANT_SECTIONS = ("dataset", "teacher", "lora", "sft", "dpo")


def variant_config(cfg: StudyConfig, variant: dict) -> StudyConfig:
    """The config of one variant: the run's, with the variant's ``set`` applied (and no variants)."""
    raw = cfg.to_dict()
    raw["variants"] = {}
    raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in variant.get("set", {}).items()])
    return type(cfg).from_dict(raw, source=f"variant {variant.get('name')!r}")


def _grid_point(cfg: StudyConfig, i: int, point: dict) -> dict:
    """The params of grid point ``i``: the file's, with the point applied (its run named NAME-i+1
    unless it names itself) and no grid."""
    raw = cfg.to_dict()
    raw["grid"] = []
    point = dict(point)
    point.setdefault("run.name", f"{cfg.run.name}-{i + 1}")
    return apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in point.items()])


def grid_configs(cfg: StudyConfig) -> list[StudyConfig]:
    """The runs a grid file describes (the config itself when it has no grid)."""
    if not cfg.grid:
        return [cfg]
    return [type(cfg).from_dict(_grid_point(cfg, i, point), source=f"grid[{i}]") for i, point in enumerate(cfg.grid)]


def grid_errors(cfg: StudyConfig) -> list[str]:
    """Problems with the ``grid`` points: each must make a valid run, and their run names differ."""
    errors, names = [], []
    for i, point in enumerate(cfg.grid):
        if not isinstance(point, dict) or not point:
            errors.append(f"grid[{i}]: expected a mapping of section.key to value, got {point!r}")
            continue
        try:
            names.append(type(cfg).from_dict(_grid_point(cfg, i, point)).run.name)
        except ConfigError as exc:
            errors += [f"grid[{i}]: {line.strip()[2:] if line.strip().startswith('- ') else line.strip()}"
                       for line in str(exc).splitlines()[1:] or [str(exc)]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"grid: run names {dupes} repeat; give each point its own run.name")
    return errors


BOOK_ENTRY_KEYS = {"profile", "optional", "needs"}


def book_errors(cfg: StudyConfig) -> list[str]:
    """Problems with the ``book`` list of other runs."""
    errors = []
    for i, entry in enumerate(cfg.book):
        if not isinstance(entry, dict) or not isinstance(entry.get("profile"), str) or not entry["profile"]:
            errors.append(f"book[{i}]: expected a mapping with a profile name, e.g. {{profile: pride}}; got {entry!r}")
            continue
        unknown = set(entry) - BOOK_ENTRY_KEYS
        if unknown:
            errors.append(f"book[{i}]: unknown key(s) {sorted(unknown)}; the keys are {sorted(BOOK_ENTRY_KEYS)}")
        if entry.get("needs", "research-data") != "research-data":
            errors.append(f"book[{i}].needs: the only need is 'research-data' (got {entry['needs']!r})")
        if not isinstance(entry.get("optional", False), bool):
            errors.append(f"book[{i}].optional: true or false (got {entry['optional']!r})")
    return errors


def variant_errors(cfg: StudyConfig) -> list[str]:
    """Problems with the ``variants`` section: each variant changes only what may vary and makes a valid run."""
    errors = []
    names = []
    for i, v in enumerate(cfg.variants.runs):
        where = f"variants.runs[{i}]"
        if not isinstance(v, dict) or set(v) - {"name", "set"} or "name" not in v:
            errors.append(f"{where}: expected {{name: ..., set: {{section.key: value, ...}}}}, got {v!r}")
            continue
        name = str(v["name"])
        if not name or "/" in name or name in names:
            errors.append(f"{where}.name: must be a unique folder name (got {name!r})")
        names.append(name)
        changes = v.get("set") or {}
        if not isinstance(changes, dict):
            errors.append(f"{where}.set: expected a mapping of section.key to value")
            continue
        bad = [k for k in changes if str(k).split(".")[0] not in VARIANT_SECTIONS]
        if bad:
            errors.append(f"{where}.set: {bad} may not vary; a variant changes only {list(VARIANT_SECTIONS)}")
            continue
        try:
            variant_config(cfg, v)
        except ConfigError as exc:
            errors += [f"{where}: {line.strip()[2:]}" for line in str(exc).splitlines()[1:]]
    for s in cfg.variants.students:
        if s not in ("sft", "dpo"):
            errors.append(f"variants.students: {s!r} is not a trained student (sft or dpo)")
    if cfg.variants.runs and cfg.variants.opponent not in cfg.generation.students:
        errors.append(f"variants.opponent: {cfg.variants.opponent!r} is not in generation.students")
    return errors

