"""Training PRIDE's students: the PRIDE variants with a transformers ``Trainer`` whose loss is PRIDE's,
the black-box baseline with TRL's ``SFTTrainer``, and TRL's experimental ``SDFTTrainer``.

Loss of a PRIDE step, over the reply tokens of the batch (the teacher is frozen and read white-box):

    lambda_ce * CE(student, reply) + lambda_rkl * KL(p_student || p_teacher) + lambda_mmd * MMD^2(student features,
    teacher features)

where the student sees the dialogue only (and, for rows drawn to keep it, the PI through the
multi-source attention) and the teacher sees the dialogue, the PI and its own reasoning. Variants:
``pride`` (all of it), ``pride-no-pi`` (no module: the student never sees PI), ``pride-no-rkl``
(lambda_rkl = 0), ``pride-no-mmd`` (lambda_mmd = 0).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from ..config import StudyConfig
from ..errors import StudyError
from ..prefix_sharing import shared_prompt_prefix
from ..packed_linear import packed_count
from ..training import (mixed_precision, pack_frozen_weights, quiet_trainer, sharing_prefix,
                        sharing_summary, train_sft_trainer, trainer_arguments)
from .losses import mmd2, reverse_kl
from .module import base_of, build_student, hidden_and_heads, relative_layer, save_student
from .settings import PI_FIELDS, PrideSettings

PRIDE_FAMILY = ("pride", "pride-no-pi", "pride-no-rkl", "pride-no-mmd")


def variant_settings(variant: str, p: PrideSettings) -> tuple[PrideSettings, bool]:
    """The settings a PRIDE-family variant trains with, and whether it has the PI module."""
    if variant == "pride-no-rkl":
        return dataclasses.replace(p, lambda_rkl=0.0), True
    if variant == "pride-no-mmd":
        return dataclasses.replace(p, lambda_mmd=0.0), True
    if variant == "pride-no-pi":
        return p, False
    if variant == "pride":
        return p, True
    raise ValueError(f"{variant!r} is not a PRIDE-family variant ({', '.join(PRIDE_FAMILY)})")


# ----------------------------------------------------------------------------------- teacher
class Teacher:
    """The white-box teacher: a separate frozen model, or the student's own base weights (adapter off)
    when the teacher is the student's model — one copy in memory, and exactly the base model."""

    def __init__(self, model=None, shared_with=None, label: str = ""):
        self.model = model
        self.shared_with = shared_with
        self.label = label

    @property
    def width(self) -> int:
        return base_of(self.model if self.model is not None else self.shared_with).config.hidden_size

    def layers_of(self):
        return self.model if self.model is not None else self.shared_with

    @torch.no_grad()
    def read(self, student, input_ids, attention_mask, rows, positions, layer: int):
        if self.model is not None:
            return hidden_and_heads(self.model, input_ids, attention_mask, rows, positions, layer)
        with student.lm.disable_adapter():
            return hidden_and_heads(student.lm, input_ids, attention_mask, rows, positions, layer)


def check_same_tokenizer(student_tok, teacher_tok, teacher_spec: str) -> None:
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise StudyError(f"teacher {teacher_spec!r}: its tokenizer differs from the student's; PRIDE reads the "
                         "teacher's logits token by token, so the teacher must share the student's vocabulary "
                         "(use a model of the same family)")


# ----------------------------------------------------------------------------------- trainer
class PrideTrainer(Trainer):
    """A transformers Trainer whose loss is PRIDE's dual alignment (see the module docstring)."""

    def __init__(self, *args, teacher: Teacher, settings: PrideSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.settings = settings
        student = self.model
        self.teacher_layer = relative_layer(student.lm, teacher.layers_of(), settings.mmd_layer)
        self._sums: dict[str, list[float]] = defaultdict(list)
        self.totals: dict[str, list[float]] = defaultdict(list)
        self._mmd_generator = torch.Generator().manual_seed(self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        p = self.settings
        student = self.accelerator.unwrap_model(model)
        rows = inputs["rows"]
        logits, features = student(inputs["input_ids"], inputs["attention_mask"], rows, inputs["student_positions"],
                                   feature_layer=p.mmd_layer, pi_input_ids=inputs.get("pi_input_ids"),
                                   pi_attention_mask=inputs.get("pi_attention_mask"),
                                   pi_present=inputs.get("pi_present"))
        ce = F.cross_entropy(logits.float(), inputs["targets"])
        loss = p.lambda_ce * ce
        record = {"ce": ce.item()}
        if p.lambda_rkl > 0 or p.lambda_mmd > 0:
            t_logits, t_features = self.teacher.read(student, inputs["teacher_input_ids"],
                                                     inputs["teacher_attention_mask"], rows,
                                                     inputs["teacher_positions"], self.teacher_layer)
            if p.lambda_rkl > 0:
                rkl = reverse_kl(logits, t_logits, p.rkl_temperature)
                loss = loss + p.lambda_rkl * rkl
                record["rkl"] = rkl.item()
            if p.lambda_mmd > 0:
                x = student.projection(features) if student.projection is not None else features
                y = t_features
                if len(x) > p.mmd_max_tokens:
                    keep = torch.randperm(len(x), generator=self._mmd_generator)[: p.mmd_max_tokens].to(x.device)
                    x, y = x[keep], y[keep]
                mmd = mmd2(x, y.float(), p.mmd_bandwidths, p.mmd_bandwidth_mode, p.mmd_estimator)
                loss = loss + p.lambda_mmd * mmd
                record["mmd"] = mmd.item()
        if "pi_present" in inputs:
            record["pi_share"] = float(inputs["pi_present"].float().mean())
        if student.fusion is not None:
            record["gate"] = student.fusion.gate_strength()
            mass = student.fusion.last_source_attention
            if mass is not None:
                for name, value in zip(("null", *PI_FIELDS), mass.tolist()):
                    record[f"attention_{name}"] = value
        for k, v in record.items():
            self._sums[k].append(v)
            self.totals[k].append(v)
        return (loss, {"logits": logits}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._sums:
            logs.update({k: round(sum(v) / len(v), 6) for k, v in self._sums.items()})
            self._sums.clear()
        super().log(logs, start_time)


def _optimizer(student, p: PrideSettings):
    lora = [t for n, t in student.lm.named_parameters() if t.requires_grad]
    fresh = [t for m in (student.fusion, student.projection) if m is not None for t in m.parameters()]
    groups = [{"params": lora, "lr": p.learning_rate}]
    if fresh:
        groups.append({"params": fresh, "lr": p.module_learning_rate or p.learning_rate})
    return torch.optim.AdamW(groups, lr=p.learning_rate, weight_decay=0.0)


def make_teacher(cfg: StudyConfig, student_lm, student_tok) -> Teacher:
    from ..models import load_model, load_tokenizer, model_label

    spec = cfg.pride.teacher_model or cfg.model.name_or_path
    if spec == cfg.model.name_or_path:
        return Teacher(shared_with=student_lm, label=model_label(spec))
    check_same_tokenizer(student_tok, load_tokenizer(spec), spec)
    teacher = load_model(spec)
    teacher.requires_grad_(False)
    return Teacher(model=teacher, label=model_label(spec))


def make_pride_trainer(cfg: StudyConfig, variant: str, features: list[dict], out_dir: Path):
    """The student (LoRA + module) and its PrideTrainer, ready to train; returns (trainer, tokenizer)."""
    from peft import get_peft_model

    from ..models import load_model, load_tokenizer
    from ..training import lora_config
    from .data import PrideCollator

    p, use_module = variant_settings(variant, cfg.pride)
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="right")
    torch.manual_seed(cfg.run.seed)
    lm = get_peft_model(load_model(cfg.model.name_or_path), lora_config(cfg))
    teacher = make_teacher(cfg, lm, tokenizer)
    student = build_student(lm, p, len(PI_FIELDS), use_module, teacher.width)
    collator = PrideCollator(tokenizer.pad_token_id, p.pi_dropout, use_module, cfg.run.seed)
    args = TrainingArguments(**trainer_arguments(p, out_dir, cfg.run.seed), remove_unused_columns=False, label_names=[])
    trainer = quiet_trainer(PrideTrainer(model=student, args=args, train_dataset=features, data_collator=collator,
                                  optimizers=(_optimizer(student, p), None), teacher=teacher, settings=p))
    pack_frozen_weights(trainer)  # the frozen base layers, in fp32 on a CPU (the teacher's pass shares them)
    return trainer, tokenizer


def train_pride_variant(cfg: StudyConfig, variant: str, features: list[dict], out_dir: Path) -> dict:
    """Train one PRIDE-family student on prepared features; save it like an adapter (+ its module)."""
    trainer, tokenizer = make_pride_trainer(cfg, variant, features, out_dir)
    student, teacher = trainer.model, trainer.teacher
    p = trainer.settings
    use_module = student.fusion is not None
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    save_student(student, out_dir, tokenizer)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    means = {k: sum(v) / len(v) for k, v in trainer.totals.items()}
    summary = {
        "variant": variant,
        "trainer": "PrideTrainer (transformers Trainer, PRIDE loss)",
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "examples": len(features),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "lambda_rkl": p.lambda_rkl,
        "lambda_mmd": p.lambda_mmd,
        "pi_module": use_module,
        "mean_ce": means.get("ce"),
        "mean_rkl": means.get("rkl"),
        "mean_mmd": means.get("mmd"),
        "gate_strength": student.fusion.gate_strength() if student.fusion is not None else None,
        "attention": {k[len("attention_"):]: v for k, v in means.items() if k.startswith("attention_")} or None,
        "teacher": teacher.label,
        "mixed_precision": mixed_precision(trainer),  # the model's passes; the losses are fp32 (losses.py)
        "packed_layers": packed_count(student),
    }
    (out_dir / "train_log.json").write_text(json.dumps({"summary": summary, "history": history}, indent=2))
    return summary


# --------------------------------------------------------------------------------- baselines
def _save_trl(trainer, tokenizer, out_dir: Path, variant: str, label: str, seconds: float, extra: dict) -> dict:
    trainer.model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    summary = {"variant": variant, "trainer": label, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "mixed_precision": mixed_precision(trainer), **extra}
    (out_dir / "train_log.json").write_text(json.dumps({"summary": summary, "history": history}, indent=2))
    return summary


def train_blackbox_sft(cfg: StudyConfig, examples: list[dict], targets: list[str], out_dir: Path) -> dict:
    """Black-box distillation: LoRA SFT (TRL SFTTrainer) on the teacher's reply text, loss on the reply only.
    TRL's SFT as in the sft stage, so it follows ``sft.share_prompt_prefix`` (part of its fingerprint)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ..models import load_model, load_tokenizer
    from ..training import lora_config
    from .data import student_messages

    p = cfg.pride
    rows = [{"prompt": student_messages(e), "completion": [{"role": "assistant", "content": t}]}
            for e, t in zip(examples, targets)]
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="right")
    args = SFTConfig(**trainer_arguments(p, out_dir, cfg.run.seed), max_length=p.max_length)
    model = load_model(cfg.model.name_or_path)
    trainer = quiet_trainer(SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer, peft_config=lora_config(cfg)))
    seconds, speedups = train_sft_trainer(trainer, model, cfg)
    return _save_trl(trainer, tokenizer, out_dir, "blackbox-sft", "TRL SFTTrainer (teacher's text only)",
                     seconds, {"examples": len(rows)} | speedups)


def make_sdft_trainer(cfg: StudyConfig, examples: list[dict], privileged: list[str], out_dir: Path):
    """TRL's experimental ``SDFTTrainer`` (the study's rollouts unless ``pride.sdft_rollouts`` says
    transformers; :mod:`.sdft`) on the examples, with the tokenizer it uses."""
    from datasets import Dataset
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from ..models import load_model, load_tokenizer
    from ..training import lora_config
    from .data import student_messages
    from .sdft import StudyRolloutSDFTTrainer

    p = cfg.pride
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="left")
    model = load_model(cfg.model.name_or_path)
    rows = [{"prompt": student_messages(e), "privileged_context": c} for e, c in zip(examples, privileged)]
    kwargs = trainer_arguments(p, out_dir, cfg.run.seed)
    args = SDFTConfig(**kwargs, num_generations=p.sdft_num_generations,
                      max_completion_length=p.sdft_max_completion_length, max_prompt_length=p.max_length,
                      distillation_topk=min(p.sdft_distillation_topk, len(tokenizer)), temperature=p.sdft_temperature,
                      teacher_prompt_template=p.sdft_teacher_template, teacher_model_kind="base",
                      )
    trainer_class = StudyRolloutSDFTTrainer if p.sdft_rollouts == "study" else SDFTTrainer
    trainer = quiet_trainer(trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                          processing_class=tokenizer, peft_config=lora_config(cfg)))
    pack_frozen_weights(trainer)
    return trainer, tokenizer


def train_sdft(cfg: StudyConfig, examples: list[dict], privileged: list[str], out_dir: Path) -> dict:
    """TRL's experimental SDFT: on-policy self-distillation where the teacher is the base model shown
    the student's prompt plus a privileged context (here: the PI block). A batch's copies of a prompt
    (``num_generations``) run it once in the student's and the teacher's passes (``pride.sdft_share_prompt_prefix``)."""
    p = cfg.pride
    trainer, tokenizer = make_sdft_trainer(cfg, examples, privileged, out_dir)
    start = time.time()
    with shared_prompt_prefix(trainer.model, sharing_prefix(cfg, p)) as sharing:
        trainer.train()
    return _save_trl(trainer, tokenizer, out_dir, "sdft", "TRL experimental SDFTTrainer (teacher = base model + PI)",
                     time.time() - start, {"examples": len(examples), "packed_layers": packed_count(trainer.model),
                                           "distillation_topk": trainer.args.distillation_topk,
                                           "num_generations": p.sdft_num_generations, "rollouts": p.sdft_rollouts}
                     | sharing_summary(sharing))
