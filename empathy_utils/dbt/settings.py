"""The ``dbt`` section of a params file: the DBT-grounded SFT -> DPO method (Son & So; methods.md C).

Kept apart from :mod:`empathy_utils.config` so the method's parameters sit beside the method; the
config imports this dataclass and its checks. Every field carries its help text in its metadata
(``field(metadata={"help": ...})``), so a CLI or a docs page can list them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..settings_base import param


@dataclass
class DBTSettings:
    """DBT-grounded preference data and the paper's four rows (base, +SFT, +DPO, +SFT+DPO)."""

    # --- data
    source: Literal["embedded", "esconv"] = param(
        "embedded", "embedded: the project's 50 multi-turn support conversations; esconv: ESConv (research data, "
        "EMPATHY_DATA_DIR/esconv, its release's train/valid/test split)")
    valid_share: float = param(0.15, "embedded source only: share of conversations held out as valid (seeded split)")
    test_share: float = param(0.2, "embedded source only: share of conversations held out as test (seeded split)")
    train_dialogues: int = param(0, "conversations of the train split used (0 = all; seeded subsample)")
    test_dialogues: int = param(0, "conversations of the test split used (0 = all; seeded subsample)")
    history_turns: int = param(6, "turns of conversation kept before each supporter turn (the oldest are cut)")
    train_examples_per_dialogue: int = param(
        0, "supporter turns per train conversation used as examples (0 = all; else a seeded choice)")
    # --- preference data
    dpo_contexts: int = param(0, "train examples the teacher writes candidates for (0 = all; seeded subsample)")
    candidates_per_prompt: int = param(
        1, "candidates per prompt (with the DBT prompt and without it); the first is greedy, the rest sampled")
    candidate_temperature: float = param(0.8, "sampling temperature of the candidates after the first")
    candidate_max_new_tokens: int = param(80, "token limit of a teacher candidate")
    labeller: Literal["llm", "rules"] = param(
        "llm", "which labeller decides chosen/rejected and computes the DBT-adherence metric: llm (the dbt-adherence "
        "prompt through the teacher section's backend) or rules (the lexical scorer); the other is the second "
        "labeller whose agreement is reported")
    label_max_new_tokens: int = param(40, "token limit of the LLM labeller's answer (four 'Stage: yes/no' lines)")
    min_margin: int = param(1, "chosen must meet at least this many more stages than rejected; closer pairs are ties "
                               "and are dropped (and counted)")
    # --- training (the run's lora section and model; these replace the sft/dpo sections for this stage)
    sft_learning_rate: float = param(2e-4, "SFT learning rate (LoRA)")
    sft_epochs: float = param(1.0, "SFT epochs")
    sft_max_steps: int = param(-1, "SFT steps (> 0 overrides epochs)")
    sft_batch_size: int = param(4, "SFT batch size")
    dpo_learning_rate: float = param(5e-5, "DPO learning rate (LoRA)")
    dpo_epochs: float = param(1.0, "DPO epochs")
    dpo_max_steps: int = param(-1, "DPO steps (> 0 overrides epochs)")
    dpo_batch_size: int = param(2, "DPO batch size")
    dpo_beta: float = param(0.1, "DPO beta (sigmoid loss)")
    max_length: int = param(512, "token limit of a training example (prompt + reply)")
    # --- evaluation
    bootstrap_resamples: int = param(1000, "bootstrap resamples of the win rates' confidence intervals")


DBT_POSITIVE = ("history_turns", "candidates_per_prompt", "candidate_max_new_tokens", "label_max_new_tokens",
                "min_margin", "sft_learning_rate", "sft_batch_size", "dpo_learning_rate", "dpo_batch_size",
                "dpo_beta", "max_length", "bootstrap_resamples")
DBT_NONNEGATIVE = ("train_dialogues", "test_dialogues", "train_examples_per_dialogue", "dpo_contexts",
                   "candidate_temperature")


def dbt_checks(d: DBTSettings) -> list[str]:
    """Problems with a ``dbt`` section, each naming its dotted field."""
    errors = [f"dbt.{k}: must be > 0 (got {getattr(d, k)})" for k in DBT_POSITIVE if getattr(d, k) <= 0]
    errors += [f"dbt.{k}: must be >= 0 (got {getattr(d, k)})" for k in DBT_NONNEGATIVE if getattr(d, k) < 0]
    for k in ("valid_share", "test_share"):
        if not 0 <= getattr(d, k) < 1:
            errors.append(f"dbt.{k}: must be in [0, 1) (got {getattr(d, k)})")
    if d.test_share <= 0:
        errors.append("dbt.test_share: must be > 0 (the rows are compared on the test conversations)")
    if d.valid_share + d.test_share >= 0.9:
        errors.append(f"dbt.valid_share + dbt.test_share: leave at least 10 % for training "
                      f"(got {d.valid_share + d.test_share:.2f})")
    if d.sft_epochs <= 0 and d.sft_max_steps <= 0:
        errors.append("dbt.sft_epochs: must be > 0 unless dbt.sft_max_steps is set")
    if d.dpo_epochs <= 0 and d.dpo_max_steps <= 0:
        errors.append("dbt.dpo_epochs: must be > 0 unless dbt.dpo_max_steps is set")
    return errors
