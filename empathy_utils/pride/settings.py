"""The ``pride`` section of a params file: PRIDE's settings and their checks (book/pride.md).

Kept beside the method, as the DBT settings are (``dbt/settings.py``); the config imports the
dataclass and :func:`pride_checks`. Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..settings_base import TrainingSettings, param

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

    bf16: Literal["auto", True, False] = param(
        "auto",
        "Mixed-precision bf16 training of PRIDE's students (auto = where the hardware has bf16 units); the "
        "model's forward and backward passes only: the CE, reverse-KL and MMD losses are computed in fp32.",
    )

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
    sdft_rollouts: Literal["study", "transformers"] = param(
        "study",
        "SDFT: how its on-policy replies are sampled without vLLM. study = the study's decoding loop (each "
        "prompt run once for its num_generations copies, a finished reply leaves the batch, keys and values "
        "written in place); transformers = TRL's call to generate. Same sampling distribution, other draws.",
    )
    sdft_share_prompt_prefix: bool = param(
        True,
        "SDFT: run a prompt once for its num_generations sampled replies, in the student's and the teacher's "
        "forward passes (empathy_utils.prefix_sharing; as sft.share_prompt_prefix; off with LoRA dropout).",
    )
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


def pride_checks(p: PrideSettings) -> list[str]:
    """Problems with a ``pride`` section, each naming its dotted field."""
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
