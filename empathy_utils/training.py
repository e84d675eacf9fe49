"""Two-step fine-tuning: LoRA SFT with TRL's SFTTrainer, then DPO with TRL's DPOTrainer.

Choices the paper leaves open (book/methods.md, Two-step fine-tuning), made here and documented in the book:
- SFT trains on the reply only (TRL's prompt/completion format), not on the prompt.
- DPO *continues the SFT adapter* (loaded trainable); TRL keeps a frozen copy of that adapter as
  the reference policy, so the reference is the SFT model and no second model sits in memory.
- mixed bf16 where the hardware has bf16 units (a GPU, or a CPU with AVX512-BF16/AMX), fp32 elsewhere
  (``bf16: auto``); no gradient checkpointing (it costs 25 % speed for memory we have). Both are parameters.
  In mixed bf16 on a CPU, attention runs as plain products per key/value head
  (:mod:`empathy_utils.grouped_attention`), not SDPA's flash kernel, whose CPU backward is slow there.

Each function takes the run's :class:`StudyConfig` and a run folder and writes an adapter folder
plus ``train_log.json``; the same functions run under ``accelerate launch`` through :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from .artifacts import JsonStamp, RunPaths, digest, files_digest, reuse_or_build
from .config import StudyConfig, load_config
from .errors import StudyError
from .grouped_attention import grouped_products_attention
from .lm_head import head_summary, whole_vocabulary_lm_head
from .prefix_sharing import shared_prompt_prefix


def trainer_arguments(settings, output_dir: Path, seed: int) -> dict:
    """The TrainingArguments every trainer of the study shares (SFT, DPO and PRIDE's students), from
    any settings section with batch_size, learning_rate, epochs, max_steps, warmup, logging_steps, bf16,
    gradient_checkpointing and ``trainer`` (any other field of TRL's config, passed through): CPU unless a
    GPU is present, no checkpoints, no progress bars in the executed notebooks."""
    import torch

    on_gpu = torch.cuda.is_available()
    warmup = settings.warmup if settings.warmup < 1 else int(settings.warmup)
    return dict(
        output_dir=str(output_dir / "trainer"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=warmup,
        logging_steps=settings.logging_steps,
        seed=seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=train_in_bf16(settings.bf16),
        # transformers 5's name for gradient checkpointing
        activation_checkpointing=settings.gradient_checkpointing,
        # Count the tokens trained on (not padding): train_log.json reports the rate (a trainer: entry may
        # override this, as any other field below).
        include_num_input_tokens_seen="non_padding",
    ) | settings.trainer  # any other field of the trainer's config, as the params file gives it (checked by config)


def train_in_bf16(setting) -> bool:
    """A training section's ``bf16`` (auto, true, false) resolved here: auto trains in mixed bf16 where
    the hardware has bf16 units (1.45x on this CPU's SFT, benchmarks/README.md), else in fp32."""
    from .models import bf16_units_here

    return bf16_units_here() if setting == "auto" else bool(setting)


def mixed_precision(trainer) -> str:
    """What a finished trainer ran in, in accelerate's words ("bf16" or "no"), for its train_log.json."""
    return "bf16" if trainer.args.bf16 else "no"


def pack_frozen_weights(trainer) -> int:
    """Before ``trainer.train()``: in fp32 on a CPU, the frozen base layers get weights packed once for
    oneDNN (:func:`packed_linear.pack_frozen_layers`; SFT and DPO steps measured in
    benchmarks/README.md); under mixed bf16 they stay as they are. Returns how many layers were packed."""
    from .packed_linear import pack_frozen_layers

    return 0 if trainer.args.bf16 else pack_frozen_layers(trainer.model)


def peak_rss_gb() -> float:
    """The largest resident memory this process has held so far, in GB (Linux reports kB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)


def quiet_libraries() -> None:
    """Keep executed notebooks readable: no per-file progress bars, no per-step log dicts
    (the losses are kept in train_log.json and plotted instead)."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


@contextmanager
def no_tqdm_bars():
    """No plain tqdm bars inside the block (TQDM_DISABLE, which TRL's own loops read)."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def quiet_trainer(trainer):
    """No per-step printing: the executed notebook shows a table of the training log instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def lora_config(cfg: StudyConfig):
    from peft import LoraConfig

    targets = cfg.lora.target_modules
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        task_type="CAUSAL_LM",
    )


@contextmanager
def labelled_positions_only():
    """Score only the positions that carry a label while TRL's trainers run on a CPU.

    TRL's SFT and DPO trainers compute each token's log-probability with a chunked LM head; off CUDA
    and XPU they score every position of the batch (prompt and padding included, to keep tile shapes
    fixed for compilers we do not use) and drop the unlabelled ones afterwards. Here 86 % of an SFT
    example's tokens are prompt, so that head was a third of each training step (torch.profiler, in
    benchmarks/README.md). Inside this block TRL takes its own compact path (the one it uses on GPUs):
    the same loss and gradients from the labelled rows alone. A TRL without that switch is an error,
    so an upgrade cannot silently undo this."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        raise StudyError("this TRL has no trl.trainer.utils._use_triton: the labelled-positions-only switch of "
                         "empathy_utils.training needs revisiting for it (pinned TRL: see environment.yml)")
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


# ------------------------------------------------------------------------ reusing a finished training
def adapter_stamp(folder: Path) -> JsonStamp:
    """Where an adapter records the fingerprint it was trained with: ``train_log.json``'s summary. This
    is how an adapter trained under ``accelerate launch`` is picked up by the runner's stage without
    training it again, and how a re-run with the same settings and data skips the training."""
    return JsonStamp(Path(folder) / "train_log.json", "summary", "fingerprint")


def reuse_or_train(folder: Path, fingerprint: str, train) -> dict:
    """``train(folder)`` unless ``folder`` holds an adapter trained with ``fingerprint``; returns the
    training summary, with ``reused`` saying which."""
    def saved_summary(path: Path) -> dict:
        return json.loads((path / "train_log.json").read_text())["summary"]

    summary, reused = reuse_or_build(folder, fingerprint, train, stamp=adapter_stamp(folder), load=saved_summary)
    if not reused:
        from .models import release_memory

        release_memory()  # the trainer holds its model in reference cycles; free it before the next student
    return {**summary, "fingerprint": fingerprint, "reused": reused}


def _fingerprint(cfg: StudyConfig, step: str, data: Path, start_adapter: Path | None = None) -> str:
    """What an SFT or DPO adapter depends on: model, LoRA, seed, the step's settings, the training
    data (its Arrow data files, not the caches training writes beside them) and, for DPO, the SFT
    adapter it continues."""
    settings = cfg.to_dict()
    # bf16 as it resolves here (auto is fp32 where there are no bf16 units: those fingerprints are unchanged)
    resolved = dict(settings[step], bf16=train_in_bf16(settings[step]["bf16"]))
    return digest({"step": step, "model": cfg.model.name_or_path, "lora": settings["lora"], "seed": cfg.run.seed,
                   "settings": unset_dropped(resolved, ADDED_SETTINGS), "data": files_digest(data, "data-*.arrow"),
                   "start": files_digest(start_adapter, "adapter_model*") if start_adapter else None})


# Settings added after adapters were first trained, with their defaults: at the default they leave an
# adapter's fingerprint as it was (precompute_reference: auto trains a one-epoch DPO exactly as before,
# and a longer one to the same losses within 1e-7, benchmarks/README.md).
ADDED_SETTINGS = {"trainer": {}, "precompute_reference": "auto"}


def unset_dropped(section: dict, added: dict) -> dict:
    """``section`` without the fields in ``added`` that still hold their default: a field added to a
    settings section after adapters were trained changes no fingerprint until someone sets it."""
    return {k: v for k, v in section.items() if not (k in added and v == added[k])}


def sharing_prefix(cfg: StudyConfig, step) -> bool:
    """Whether ``step`` (cfg.sft, cfg.dpo, or cfg.pride for its SDFT baseline) runs a batch's shared prompt
    prefix once: as set, except with LoRA dropout, which would then draw one dropout mask for the prefix
    of every row."""
    wanted = step.sdft_share_prompt_prefix if hasattr(step, "sdft_share_prompt_prefix") else step.share_prompt_prefix
    return wanted and cfg.lora.dropout == 0


def sharing_summary(stats) -> dict:
    """The training log's record of prefix sharing: its counts, and a sentence for the methods table."""
    if stats is None:
        return {"prefix_sharing": None, "prefix_sharing_text": "off"}
    counts = stats.to_json()
    return {"prefix_sharing": counts,
            "prefix_sharing_text": f"on: {counts['shared_batches']} of {counts['batches']} batches shared a prefix; "
                                   f"{counts['tokens_run']:,} of {counts['tokens_in_batches']:,} token positions "
                                   f"run ({100 * counts['share_saved']:.0f} % fewer)"}


def to_prompt_completion(example: dict) -> dict:
    """Chat ``messages`` -> conversational prompt/completion, so the loss covers the reply only."""
    return {"prompt": example["messages"][:-1], "completion": example["messages"][-1:]}


def _save(trainer, tokenizer, out: Path, seconds: float, extra: dict) -> dict:
    """Write the adapter, tokenizer and train_log.json. Under ``accelerate launch`` every process
    returns the summary but only the first writes, so the files are never written twice at once."""
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    summary = {
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
        # Non-padding tokens through the trained model (DPO: chosen and rejected rows together).
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds > 0 else None,  # before rounding
        "peak_rss_gb": peak_rss_gb(),
        "mixed_precision": mixed_precision(trainer),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
        "processes": trainer.args.world_size,
        **extra,
    }
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        (out / "train_log.json").write_text(json.dumps({"summary": summary, "history": history}, indent=2))
    return summary


def train_sft(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Step 1: LoRA SFT on the run's SFT examples; writes ``models/sft``."""
    quiet_libraries()
    paths = RunPaths(run_dir)
    if not paths.sft_data.exists():
        raise StudyError(f"{paths.sft_data}: no SFT data; run the datasets stage first")
    return reuse_or_train(paths.sft_model, _fingerprint(cfg, "sft", paths.sft_data), lambda out: _train_sft(cfg, paths, out))


def _train_sft(cfg: StudyConfig, paths: RunPaths, out: Path) -> dict:
    from datasets import load_from_disk
    from trl import SFTConfig, SFTTrainer

    from .models import load_model, load_tokenizer

    data = load_from_disk(str(paths.sft_data))
    data = data.map(to_prompt_completion, remove_columns=data.column_names)
    model = load_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="right")
    args = SFTConfig(**trainer_arguments(cfg.sft, out, cfg.run.seed), max_length=cfg.sft.max_length)
    trainer = quiet_trainer(SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                peft_config=lora_config(cfg)))
    seconds, speedups = train_sft_trainer(trainer, model, cfg)
    return _save(trainer, tokenizer, out, seconds, {"examples": len(data)} | speedups)


def train_sft_trainer(trainer, model, cfg: StudyConfig) -> tuple[float, dict]:
    """``trainer.train()`` for an SFTTrainer with the study's CPU paths (packed frozen weights, labelled
    positions only, the whole-vocabulary head, grouped attention, the shared prompt prefix of
    ``cfg.sft``); returns the seconds it took and what each path did, for the training log."""
    start = time.time()
    packed = pack_frozen_weights(trainer)
    with labelled_positions_only(), whole_vocabulary_lm_head() as head, \
            grouped_products_attention(model, trainer.args.bf16) as attention, \
            shared_prompt_prefix(model, sharing_prefix(cfg, cfg.sft)) as sharing:
        trainer.train()
    return time.time() - start, ({"packed_layers": packed, "attention_implementation": attention}
                                 | sharing_summary(sharing) | head_summary(head))


def train_dpo(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Step 2: DPO continuing the SFT adapter, the frozen SFT adapter as reference; writes ``models/dpo``."""
    quiet_libraries()
    paths = RunPaths(run_dir)
    for needed, stage in ((paths.dpo_data, "datasets"), (paths.sft_model, "sft")):
        if not needed.exists():
            raise StudyError(f"{needed}: missing; run the {stage} stage first")
    fingerprint = _fingerprint(cfg, "dpo", paths.dpo_data, start_adapter=paths.sft_model)
    return reuse_or_train(paths.dpo_model, fingerprint, lambda out: _train_dpo(cfg, paths, out))


def precompute_reference(dpo, pairs: int, processes: int | None = None) -> bool:
    """Whether DPO scores the reference once before training (``dpo.precompute_reference``): on auto,
    when training passes over the pairs more than once. With a single pass the reference is scored
    once per pair either way, and precomputing only adds a pass over the data (measured in
    benchmarks/README.md)."""
    if dpo.precompute_reference != "auto":
        return dpo.precompute_reference == "always"
    if dpo.max_steps <= 0:
        return dpo.epochs > 1
    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    per_step = dpo.batch_size * dpo.gradient_accumulation_steps * processes
    return dpo.max_steps * per_step > pairs


def _train_dpo(cfg: StudyConfig, paths: RunPaths, out: Path) -> dict:
    from datasets import load_from_disk
    from trl import DPOConfig, DPOTrainer

    from .models import load_model, load_tokenizer

    data = load_from_disk(str(paths.dpo_data)).select_columns(["prompt", "chosen", "rejected"])
    model = load_model(cfg.model.name_or_path, adapter=paths.sft_model, trainable_adapter=True)
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="right")
    # The reference pass, when precomputed, runs inside the trainer's constructor: timed with training.
    args = DPOConfig(**({"precompute_ref_log_probs": precompute_reference(cfg.dpo, len(data))}
                        | trainer_arguments(cfg.dpo, out, cfg.run.seed)),
                     max_length=cfg.dpo.max_length, beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type])
    start = time.time()
    with labelled_positions_only(), whole_vocabulary_lm_head() as head, \
            grouped_products_attention(model, args.bf16) as attention, \
            shared_prompt_prefix(model, sharing_prefix(cfg, cfg.dpo)) as sharing:
        with no_tqdm_bars():  # TRL's bar over the reference pass
            trainer = quiet_trainer(DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                                               processing_class=tokenizer))
        packed = pack_frozen_weights(trainer)
        trainer.train()
    history = trainer.state.log_history
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    accuracies = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
    extra = {"pairs": len(data), "packed_layers": packed, "attention_implementation": attention,
             "last_reward_margin": margins[-1] if margins else None,
             "last_reward_accuracy": accuracies[-1] if accuracies else None} | sharing_summary(sharing) | head_summary(head)
    return _save(trainer, tokenizer, out, time.time() - start, extra)


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``accelerate launch [--multi_gpu --num_processes N] -m empathy_utils.training
    sft|dpo --params FILE --run-dir DIR``; the first process prints the summary."""
    parser = argparse.ArgumentParser(prog="python -m empathy_utils.training")
    parser.add_argument("step", choices=["sft", "dpo"])
    parser.add_argument("--params", required=True, help="the run's params file (e.g. <run_dir>/params.yaml)")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    summary = (train_sft if args.step == "sft" else train_dpo)(cfg, args.run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
