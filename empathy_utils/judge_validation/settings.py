"""The ``judge_validation`` section of a params file (stage validate-judges) and its checks.

Kept beside the validation, as the DBT settings are beside DBT (``dbt/settings.py``); the config
imports the dataclass and :func:`validation_checks`. Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..settings_base import BackendSettings, param

JUDGE_CANDIDATES = ("pairwise-llm", "likelihood", "embedding-head", "reward-model", "stacked", "writer-style",
               "cross-encoder")
ATTACK_NAMES = ("ignore-above", "fake-verdict", "quote-break", "persuasion")


@dataclass
class JudgeValidationSettings(BackendSettings):
    """Stage validate-judges: every candidate judge against human ratings on LLMs-vs-Humans test-split
    pairs whose ratings differ, beside the longer-wins and LLM-wins baselines on the same pairs;
    position consistency, length bias, injected instructions. Learned judges train on the train split
    only and are cached by a hash of these settings and the data's checksum. Needs the research data;
    without it the stage says so and validates nothing."""

    candidates: list[Literal["pairwise-llm", "likelihood", "embedding-head", "reward-model", "stacked",
                             "writer-style", "cross-encoder"]] = param(
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
        "Judges that need no language model per reply (embedding-head, writer-style, cross-encoder, stacked on "
        "text or judges+text) and the baselines: test-split pairs judged in each of the selection and report sets "
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
    train_dialogues: int = param(
        0,
        "Train-split dialogues the learned judges learn from (0 = all 1,750; otherwise a seeded subsample "
        "of whole dialogues, five rated replies each). Embedding those replies is most of this stage's "
        "time on a CPU (benchmarks/judge_train_size.py measures what a smaller share costs in accuracy).",
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
        "stacked: train-split pairs its logistic model is fitted on (whole dialogues; 0 = all). On "
        "likelihood+text each needs the likelihood judge's scores of both replies, a few replies a second "
        "on a CPU; on judges+text, pairs of dialogues the cross-encoder trained on are left out.",
    )
    stacked_features: Literal["likelihood+text", "text", "judges+text"] = param(
        "likelihood+text",
        "stacked: the likelihood judge's score plus the text features (length, questions, exclamations, "
        "second person), the text features alone (fast: no model), or the stacked_judges' scores plus the "
        "text features (fitted on those judges' out-of-sample scores of train-split replies).",
    )
    stacked_judges: list[Literal["writer-style", "cross-encoder", "embedding-head"]] = param(
        ["writer-style", "cross-encoder", "embedding-head"],
        "stacked with judges+text: the trained judges whose scores it reads (each is trained, or taken from "
        "the cache, with the settings above).",
    )
    cross_encoder_train_dialogues: int = param(
        300,
        "cross-encoder: train-split dialogues whose rated replies fine-tune it (0 = all 1,750). Each step "
        "reads every reply of a dialogue against the speaker's turn; a full pass over 300 dialogues takes "
        "minutes on two CPU cores.",
    )
    cross_encoder_epochs: float = param(2.0, "cross-encoder: passes over its dialogues.")
    cross_encoder_learning_rate: float = param(
        1e-4,
        "cross-encoder: learning rate of the full fine-tune (chosen on the selection set: 2e-5 for one epoch "
        "left the loss where it began).",
    )
    cross_encoder_batch_size: int = param(4, "cross-encoder: dialogues (each with its five replies) per step.")
    cross_encoder_max_length: int = param(256, "cross-encoder: longest tokenized turn plus reply (longer is cut).")
    bootstrap_resamples: int = param(1000, "Bootstrap resamples behind each agreement's confidence interval.")


def validation_checks(v: JudgeValidationSettings) -> list[str]:
    """Problems with a ``judge_validation`` section, each naming its dotted field."""
    errors = []
    if not v.candidates:
        errors.append(f"judge_validation.candidates: name at least one of {list(JUDGE_CANDIDATES)}")
    if v.stacked_features == "judges+text" and not v.stacked_judges:
        errors.append("judge_validation.stacked_judges: name at least one judge for stacked_features judges+text")
    for name in ("candidates", "attacks", "stacked_judges"):
        values = getattr(v, name)
        if len(set(values)) != len(values):
            errors.append(f"judge_validation.{name}: listed twice: {sorted({x for x in values if values.count(x) > 1})}")
    positive = ("batch_size", "reward_epochs", "reward_learning_rate", "reward_batch_size", "reward_max_length",
                "reward_lora_r", "bootstrap_resamples", "cross_encoder_epochs", "cross_encoder_learning_rate",
                "cross_encoder_batch_size", "cross_encoder_max_length")
    errors += [f"judge_validation.{k}: must be > 0 (got {getattr(v, k)})" for k in positive if getattr(v, k) <= 0]
    for k in ("test_pairs", "adversarial_pairs", "train_dialogues", "embedding_train_pairs", "reward_train_pairs", "reward_lora_layers",
              "cross_encoder_train_dialogues"):
        if getattr(v, k) < 0:
            errors.append(f"judge_validation.{k}: must be >= 0 (0 = " +
                          {"adversarial_pairs": "no attack check)", "reward_lora_layers": "all layers)",
                           "cross_encoder_train_dialogues": "all dialogues)",
                           "train_dialogues": "all dialogues)"}.get(k, "all pairs)"))
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
    return errors
