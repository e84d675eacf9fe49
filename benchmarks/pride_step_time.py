"""Seconds per training step and peak memory: PRIDE against plain SFT, on the embedded model.

    python benchmarks/pride_step_time.py [--steps 6] [--batch-size 4] [--model embedded:smollm2-135m-instruct]
                                         [--precisions fp32 bf16]

Each configuration runs in its own process (so peak memory is its own), on the same examples: the
embedded corpus's dialogues with their reference replies as targets, and a teacher context shaped like
the empathy-reasoning chain (PI + two one-sentence notes), so sequence lengths are realistic without
generating anything first. Configurations:

- ``sft-trl``     plain SFT: TRL's SFTTrainer with LoRA on prompt/completion (the black-box baseline);
- ``ce-only``     the PRIDE trainer with only its cross-entropy term (no teacher pass, no module);
- ``pride-no-pi`` CE + reverse KL + MMD (a teacher forward pass per step), no attention module;
- ``pride``       the full method: also the PI encoding and the multi-source attention;
- ``sdft-trl``    the SDFT baseline as TRL runs it: replies sampled by ``generate``, every row's prompt run
                  in full (``pride.sdft_rollouts=transformers``, ``pride.sdft_share_prompt_prefix=false``);
- ``sdft``        the SDFT baseline as the study runs it: the study's rollouts and each prompt run once for
                  its ``num_generations`` copies (the defaults; the ``pride`` profile's 2 copies, 48 tokens).

Reports the median wall time of the steps after the first (warm-up) and the process's peak resident
memory. ``--packings plain packed`` runs every mode with LoRA's frozen base layers plain and packed for
oneDNN (``empathy_utils.packed_linear``; packed is the study's way in fp32 on a CPU). ``--precisions fp32 bf16`` runs every mode in both (``pride.bf16`` false, then true: mixed bf16,
the losses in fp32) and prints the ratio; the default, ``auto``, is what the study picks on this host.
It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

MODES = ("sft-trl", "ce-only", "pride-no-pi", "pride", "sdft-trl", "sdft")
PRECISIONS = {"auto": "auto", "fp32": False, "bf16": True}  # -> pride.bf16


def _examples(n: int):
    from empathy_utils.data import load_embedded_corpus
    from empathy_utils.pride.data import TeacherOutput, _from_frame, pi_block
    from empathy_utils.prompts import load_prompt

    frame = load_embedded_corpus()
    rows = _from_frame(frame[frame["split"] == "train"].head(n), ["situation", "emotion"])
    prompt = load_prompt("empathy-reasoning-steps")
    teachers = []
    for r in rows:
        turns = prompt.render(private=pi_block(r), dialogue=r["dialogue"])
        notes = [f"The speaker feels {r['emotion']}, and quite strongly so.", f"What happened: {r['judge_context']}"]
        messages = [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": notes[0]},
                    {"role": "user", "content": turns[1]}, {"role": "assistant", "content": notes[1]},
                    {"role": "user", "content": turns[2]}]
        teachers.append(TeacherOutput(r["reference"], [], notes, messages))
    return rows, teachers


def run_one(mode: str, args) -> dict:
    import torch
    from transformers import TrainerCallback

    from empathy_utils.config import StudyConfig
    from empathy_utils.models import load_tokenizer
    from empathy_utils.packed_linear import packed_count
    from empathy_utils.pride.data import build_features
    from empathy_utils.pride.train import make_pride_trainer
    from empathy_utils.training import pack_frozen_weights, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg = StudyConfig.from_dict({
        "model": {"name_or_path": args.model},
        "lora": {"r": 8, "alpha": 16},
        "pride": {"batch_size": args.batch_size, "max_steps": args.steps, "logging_steps": 1, "max_length": 384,
                  "pi_dropout": 0.0, "variants": ["pride"], "bf16": PRECISIONS[args.precision]},
    })
    rows, teachers = _examples(args.batch_size * args.steps)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    out = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    sharing = nullcontext()
    if mode.startswith("sdft"):
        from empathy_utils.prefix_sharing import shared_prompt_prefix
        from empathy_utils.pride.data import pi_block
        from empathy_utils.pride.train import make_sdft_trainer

        cfg.pride.variants = ["pride", "sdft"]
        cfg.pride.sdft_num_generations, cfg.pride.sdft_max_completion_length = 2, 48
        if mode == "sdft-trl":
            cfg.pride.sdft_rollouts, cfg.pride.sdft_share_prompt_prefix = "transformers", False
        trainer, _ = make_sdft_trainer(cfg, rows, [pi_block(r) for r in rows], out)
        sharing = shared_prompt_prefix(trainer.model, cfg.pride.sdft_share_prompt_prefix)
        tokens = None
    elif mode == "sft-trl":
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from empathy_utils.models import load_model
        from empathy_utils.pride.data import student_messages
        from empathy_utils.training import lora_config, trainer_arguments

        data = Dataset.from_list([{"prompt": student_messages(r), "completion": [{"role": "assistant", "content": t.reply}]}
                                  for r, t in zip(rows, teachers)])
        sft_args = SFTConfig(**trainer_arguments(cfg.pride, out, 0), max_length=384)  # pride.bf16, as the baseline
        trainer = SFTTrainer(model=load_model(args.model), args=sft_args, train_dataset=data,
                             processing_class=load_tokenizer(args.model, padding_side="right"), peft_config=lora_config(cfg))
        pack_frozen_weights(trainer)  # as the study's black-box SFT does
        tokens = None
    else:
        if mode == "ce-only":
            cfg.pride.lambda_rkl = cfg.pride.lambda_mmd = 0.0
        tokenizer = load_tokenizer(args.model, padding_side="right")
        features = [build_features(tokenizer, r, t.reply, t, 384, 64) for r, t in zip(rows, teachers)]
        tokens = {"student": statistics.mean(len(f["student_ids"]) for f in features),
                  "teacher": statistics.mean(len(f["teacher_ids"]) for f in features)}
        trainer, _ = make_pride_trainer(cfg, "pride-no-pi" if mode in ("ce-only", "pride-no-pi") else "pride", features, out)
    trainer.add_callback(Clock())
    with sharing:
        trainer.train()
    steady = times[1:] or times
    # SDFT samples its replies, so its steps differ in length: report the replies' mean length too
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"mode": mode, "precision": "bf16" if trainer.args.bf16 else "fp32",
            "packing": "packed" if packed_count(trainer.model) else "plain", "steps": len(times), "seconds_per_step": round(statistics.median(steady), 2),
            "first_step_seconds": round(times[0], 2), "total_seconds": round(sum(times), 1),
            "mean_reply_tokens": round(statistics.mean(lengths), 1) if lengths else None, "batch_size": args.batch_size,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "mean_tokens_per_example": tokens, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=list(PRECISIONS))
    parser.add_argument("--packings", nargs="+", default=["packed"], choices=("plain", "packed"),
                        help="frozen base layers on plain nn.Linear (EMPATHY_PACKED_LINEAR=0) and/or packed for oneDNN "
                             "(the study's way in fp32 on a CPU)")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS), help=argparse.SUPPRESS)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from empathy_utils.allocator import keep_freed_memory

    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return
    results = []
    for mode, precision, packing in ((m, p, k) for m in args.modes for p in args.precisions for k in args.packings):
        cmd = [sys.executable, __file__, "--one", mode, "--model", args.model, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--precision", precision]
        env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "EMPATHY_PACKED_LINEAR": "1" if packing == "packed" else "0"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{mode}: failed\n{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(line[len("RESULT "):]))
        r = results[-1]
        replies = f"  replies {r['mean_reply_tokens']} tokens" if r["mean_reply_tokens"] else ""
        print(f"{mode:<12} {r['precision']} {r['packing']:<6} {r['seconds_per_step']:6.2f} s/step (first {r['first_step_seconds']:.1f} s, "
              f"all {r['total_seconds']:.0f} s)  peak RSS {r['peak_rss_mb']:5d} MB{replies}", flush=True)
    for mode in args.modes:
        by = {r["packing"]: r for r in results if r["mode"] == mode and r["precision"] == "fp32"}
        if {"plain", "packed"} <= set(by):
            print(f"{mode:<12} packed against plain (fp32): x{by['plain']['seconds_per_step'] / by['packed']['seconds_per_step']:.2f} "
                  f"faster per step, peak RSS {by['packed']['peak_rss_mb'] - by['plain']['peak_rss_mb']:+d} MB")
    for mode in args.modes:
        by = {r["precision"]: r for r in results if r["mode"] == mode}
        if {"fp32", "bf16"} <= set(by):
            print(f"{mode:<12} bf16 against fp32: x{by['fp32']['seconds_per_step'] / by['bf16']['seconds_per_step']:.2f} "
                  f"faster per step, peak RSS {by['bf16']['peak_rss_mb'] - by['fp32']['peak_rss_mb']:+d} MB")
    bases = {r["precision"]: r for r in results if r["mode"] == "sft-trl"}
    if bases:
        print(f"\nbatch {args.batch_size}, model {args.model}: cost relative to plain SFT (TRL) in the same precision")
        for r in (r for r in results if r["precision"] in bases):
            base = bases[r["precision"]]
            print(f"  {r['mode']:<12} {r['precision']} x{r['seconds_per_step'] / base['seconds_per_step']:.2f} time, "
                  f"{r['peak_rss_mb'] - base['peak_rss_mb']:+d} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
