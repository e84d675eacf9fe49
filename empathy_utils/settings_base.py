"""What every params section is built from: ``param`` (a field with its help text) and the two
shapes several sections share, how a model is reached (:class:`BackendSettings`: teacher, judge,
judge candidates) and how a student is trained (:class:`TrainingSettings`: SFT, DPO, PRIDE), with
the check of a training section's ``trainer:`` pass-through.

It imports nothing of the package, so the config and every method's own settings module
(``pride/settings.py``, ``judge_validation/settings.py``, ``dbt/settings.py``) can build on it
without a cycle.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


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
    bf16: Literal["auto", True, False] = param(
        "auto",
        "Mixed-precision bf16 training: auto = where the hardware has bf16 units (a GPU with them, a CPU with "
        "AVX512-BF16 or AMX), fp32 elsewhere (emulated bf16 is slower than fp32); true or false force it. "
        "train_log.json records what ran (mixed_precision).",
    )
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, more time.")
    trainer: dict = param(
        {},
        "Any other field of the trainer's config (TRL's SFTConfig for sft, DPOConfig for dpo, transformers' "
        "TrainingArguments for pride; e.g. weight_decay, optim, adam_beta2, max_grad_norm, torch_compile), "
        "passed as given, as the alignment handbook's recipes do; checked against those fields before "
        "anything runs. The fields above stay the way to set what they name.",
    )


# The fields every study training section sets itself (training.trainer_arguments): a trainer: entry
# may not set them a second time.
STUDY_TRAINER_FIELDS = ("output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                        "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_steps", "logging_steps", "seed",
                        "use_cpu", "bf16", "activation_checkpointing", "gradient_checkpointing", "max_length")


def trainer_checks(section: str, settings: TrainingSettings, cls_path: str) -> list[str]:
    """A training section's ``trainer:`` pass-through names real fields of the trainer's config class
    ``cls_path`` (imported only when one is set) and none that the section sets itself."""
    import difflib
    import importlib

    errors = []
    if 0 < settings.max_steps < settings.logging_steps:
        errors.append(f"{section}.logging_steps: {settings.logging_steps} is more than max_steps "
                      f"({settings.max_steps}), so the training log would hold no loss and the stage page no "
                      f"training curve; set {section}.logging_steps to at most {settings.max_steps}")
    extra = settings.trainer
    if not extra:
        return errors
    module, name = cls_path.rsplit(".", 1)
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
