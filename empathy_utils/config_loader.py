"""Reading run parameters: params files (with ``extends:``), ``--set`` overrides, and the type checks
that turn a nested mapping into the dataclasses of :mod:`empathy_utils.config`.

The command line, the runner and the stage notebooks all go through :func:`load_config`, so a
profile means the same thing whichever way a stage is started. The schemas themselves (sections,
fields, defaults, help) and the cross-field rules live in :mod:`empathy_utils.config` and the
settings modules it gathers (each method's own ``settings.py``, :mod:`empathy_utils.multi_run`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from .errors import ConfigError

if TYPE_CHECKING:  # the schema module imports this one
    from .config import StudyConfig


def nearest(name: str, choices, n: int = 3) -> list[str]:
    """The names in ``choices`` closest to ``name`` (difflib), for "did you mean" hints."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)


def did_you_mean(name: str, choices, n: int = 3) -> str:
    """"; did you mean 'a', 'b'?" or the list of valid names when none is close."""
    close = nearest(name, choices, n)
    if close:
        return "; did you mean " + ", ".join(repr(c) for c in close) + "?"
    return "; valid names: " + ", ".join(str(c) for c in choices)


def _short_help(cls: type, name: str) -> str:
    """The first sentence of a field's help, for error messages."""
    text = field_help(cls, name)
    return text.split(". ")[0].split("; ")[0].rstrip(".")


def field_help(cls: type, name: str) -> str:
    """The help text of a config field (``field(metadata={"help": ...})``); empty if it has none."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    return ""


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list,):
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = nearest(str(value), allowed)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            errors.append(f"{path}: {value!r} is not one of {list(allowed)}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path, errors)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected {type_name(tp)}, got {type(value).__name__} {value!r}")
            return value
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    return value


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    where = prefix or "top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = nearest(str(key), names)
            hint = (f"; did you mean {', '.join(repr(c) for c in close)}? ({close[0]}: {_short_help(cls, close[0])})"
                    if close else f"; known keys: {', '.join(names)}")
            errors.append(f"{prefix + '.' if prefix else ''}{key}: unknown key{hint}")
    kwargs = {}
    for name in names:
        if name in raw:
            path = f"{prefix}.{name}" if prefix else name
            before = len(errors)
            kwargs[name] = _coerce(hints[name], raw[name], path, errors)
            if len(errors) > before and not dataclasses.is_dataclass(hints[name]) and _short_help(cls, name):
                errors[-1] += f" ({name}: {_short_help(cls, name)})"
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - only on a programming error in a dataclass
        errors.append(f"{where}: {exc}")
        return cls()


# ---------------------------------------------------------------------------------------- files
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"sft.learning_rate=1e-4"`` -> (["sft", "learning_rate"], 1e-4); values are read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. sft.learning_rate=1e-4")
    key, _, value = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ConfigError(f"--set {text!r}: the key must name a section and a field, e.g. sft.epochs")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
    # YAML 1.1 reads "5e-5" as a string; accept scientific notation the way people write it.
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(c in parsed for c in "eE.") else parsed
        except ValueError:
            pass
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    out = copy.deepcopy(raw)
    for text in overrides or []:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return out


def read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    # Accept YAML 1.1's string reading of 5e-5 in files too.
    return _numbers_from_strings(raw)


def _numbers_from_strings(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _numbers_from_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers_from_strings(v) for v in node]
    if isinstance(node, str):
        s = node.strip()
        if s and s[0] in "0123456789.-+" and any(c in s for c in "eE") and " " not in s:
            try:
                return float(s)
            except ValueError:
                return node
    return node


def _merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: sections merge key by key; any other value (a list too) replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_params(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A params file as one dict. ``extends: NAME`` (a profile name or a YAML path beside it) starts from
    that file and changes only what this one sets, so a profile that adds a stage to another repeats
    nothing of it."""
    path = Path(path)
    raw = read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = profile_path(str(parent), params_dir=path.parent)
    if parent_path.resolve() in {p.resolve() for p in (*_seen, path)}:
        raise ConfigError(f"{path}: extends: {parent!r} leads back to itself")
    return _merged(read_params(parent_path, (*_seen, path)), raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> "StudyConfig":
    """Read a params file (and the file it extends), apply ``--set`` overrides, and validate the result
    as a whole."""
    path = Path(path)
    raw = apply_overrides(read_params(path), overrides)
    source = str(path) + (f" (with --set {' '.join(overrides)})" if overrides else "")
    from .config import StudyConfig

    return StudyConfig.from_dict(raw, source=source)


def profile_path(profile: str, params_dir: str | Path | None = None) -> Path:
    """``tiny`` -> notebooks/params/tiny.yaml (a path to a YAML file is accepted as is)."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        return p if p.is_absolute() or p.exists() or params_dir is None else Path(params_dir) / p
    from .paths import params_dir as default_params_dir

    folder = Path(params_dir) if params_dir else default_params_dir()
    candidate = folder / f"{profile}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in folder.glob("*.yaml"))
        close = nearest(profile, known)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"profile {profile!r}: no file {candidate}; {hint}known profiles: {', '.join(known)}")
    return candidate
