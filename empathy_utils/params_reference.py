"""The reference of every run parameter, generated from the config dataclasses: section, type,
schema default, the ``default`` profile's value, allowed values, help text and the stages that read
it. ``book/parameters.md`` is this module's output (``empathy-study params --write-page``); a test
fails when the committed page is out of date or a field has no help."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any, Literal

from .config import StudyConfig
from .config_loader import load_config, profile_path, type_name

PAGE = Path("book") / "parameters.md"
# Sections the runner itself reads (not a stage notebook).
RUNNER_SECTIONS = {
    "run": "every stage (run.seed); the runner (name, stages, output_root)",
    "grid": "the runner: one run per point",
    "book": "empathy-study run and book: the other runs this file's book holds",
}


@dataclasses.dataclass
class Parameter:
    key: str  # section.field ("grid" for the top-level list)
    section: str
    type: str
    default: Any
    profile_default: Any
    allowed: list | None
    help: str
    stages: str


def _type_label(tp: Any) -> str:
    """A type as the page names it (a Literal's values are in the Allowed column)."""
    if typing.get_origin(tp) is Literal:
        return "choice"
    if typing.get_origin(tp) is list:
        return f"list of {_type_label(typing.get_args(tp)[0])}"
    return {"str": "text", "int": "integer", "float": "number", "bool": "true or false", "dict": "mapping"}.get(
        type_name(tp), type_name(tp))


def _allowed(tp: Any, f: dataclasses.Field) -> list | None:
    choices = f.metadata.get("choices")
    if choices is not None:
        return list(choices() if callable(choices) else choices)
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return None


def _stages_reading(section: str) -> str:
    from .runner import STAGE_SECTIONS

    if section in RUNNER_SECTIONS:
        return RUNNER_SECTIONS[section]
    readers = [stage for stage, sections in STAGE_SECTIONS.items() if section in sections]
    return ", ".join(readers) if readers else "none"


def parameters() -> list[Parameter]:
    """Every field of every section, in the order of the dataclasses."""
    schema = StudyConfig()
    profile = load_config(profile_path("default"))
    out = []
    hints = typing.get_type_hints(StudyConfig)
    for top in dataclasses.fields(StudyConfig):
        section_type = hints[top.name]
        if not dataclasses.is_dataclass(section_type):
            out.append(Parameter(top.name, top.name, _type_label(section_type), getattr(schema, top.name),
                                 getattr(profile, top.name), None, top.metadata.get("help", ""),
                                 _stages_reading(top.name)))
            continue
        section_hints = typing.get_type_hints(section_type)
        for f in dataclasses.fields(section_type):
            out.append(Parameter(
                f"{top.name}.{f.name}", top.name, _type_label(section_hints[f.name]),
                getattr(getattr(schema, top.name), f.name), getattr(getattr(profile, top.name), f.name),
                _allowed(section_hints[f.name], f), f.metadata.get("help", ""), _stages_reading(top.name)))
    return out


def section_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(StudyConfig)}


def _code(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("`", "'") + "`"


# Literal values in prose (numbers, M1, model specs, <placeholders>) are set as code, so the page's
# prose carries no bare digits and no text a Markdown parser would take for HTML.
_EDGES = re.compile(r"^([(\"']*)(.*?)([)\"'.,;:?]*)$")


def _prose(text: str) -> str:
    words = []
    for word in text.split(" "):
        lead, core, trail = _EDGES.match(word).groups()
        if core and "`" not in core and (any(c.isdigit() for c in core) or any(c in core for c in "<>${}")):
            word = f"{lead}`{core}`{trail}"
        words.append(word)
    return " ".join(words)


def parameters_markdown() -> str:
    """book/parameters.md: one definition list per section, each parameter a term with its type, its
    help, then its defaults and allowed values. (A six-column table per section ran past the page's
    right edge in the built book and hid the help column, the one a reader came for.)"""
    rows = parameters()
    lines = [
        "# Parameters",
        "",
        "Every parameter of a run, generated from the dataclasses of its sections (`empathy_utils/config.py`,",
        "and each method's own `settings.py` beside it) by `empathy-study params --write-page` (do not edit",
        "this page by hand; a test checks it is up to date).",
        "A params file in `notebooks/params/` sets any of them; `--set section.key=value` on the command line",
        "and the `overrides` parameter of a stage notebook change one of them for one run.",
        "",
        "*Schema default* is the value a field takes when no file sets it: the paper's setting where the paper",
        "is specific. The `default` profile (`notebooks/params/default.yaml`) is the run a stage notebook makes",
        "when it is opened with no parameters, and the run `empathy-study run --profile default` makes: its",
        "value is given where it departs from the schema. Both come from one place: the",
        "notebook and the command line read the same file through the same loader.",
        "",
        "*Read by* names the stages whose notebooks read the section; a stage also depends on everything",
        "the stages before it read, so changing a parameter re-runs the first stage that reads it and every",
        "stage after it. `empathy-study params KEY` prints one entry.",
        "",
    ]
    helps = section_help()
    for section in dict.fromkeys(r.section for r in rows):
        entries = [r for r in rows if r.section == section]
        lines += [f"## `{section}`", "", _prose(helps.get(section, "")) + f" Read by: {entries[0].stages}.", ""]
        for r in entries:
            facts = [f"Schema default {_code(r.default)}"]
            if r.profile_default != r.default:
                facts.append(f"`default` profile {_code(r.profile_default)}")
            if r.allowed:
                facts.append("allowed: " + ", ".join(_code(a) for a in r.allowed))
            lines += [f"`{r.key}` · {_prose(r.type)}", f": {_prose(r.help)}", "", "  " + "; ".join(facts) + ".", ""]
    return "\n".join(lines)


def write_page(root: Path | None = None) -> Path:
    from .paths import repo_root

    path = (root or repo_root()) / PAGE
    path.write_text(parameters_markdown(), encoding="utf-8")
    return path


def describe(key: str) -> str:
    """One parameter as text (``empathy-study params sft.epochs``); a section lists its fields."""
    from .config_loader import did_you_mean
    from .errors import ConfigError

    rows = parameters()
    chosen = [r for r in rows if r.key == key or r.section == key]
    if not chosen:
        raise ConfigError(f"no parameter {key!r}{did_you_mean(key, [r.key for r in rows] + list(section_help()))}")
    out = []
    for r in chosen:
        allowed = f"; allowed: {', '.join(map(str, r.allowed))}" if r.allowed else ""
        profile = f"; default profile: {json.dumps(r.profile_default)}" if r.profile_default != r.default else ""
        out.append(f"{r.key} ({r.type}; default {json.dumps(r.default)}{profile}{allowed})\n    {r.help}"
                   f"\n    read by: {r.stages}")
    return "\n".join(out)
