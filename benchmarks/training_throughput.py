"""LoRA SFT and DPO throughput against this CPU's limit, on a finished run's own training data.

    python benchmarks/training_throughput.py [--run runs/default] [--steps 8] [--set sft.bf16=false ...]

Trains a few steps of each (the run's own settings and data, in a scratch copy of the run folder, so
the run's adapters are untouched) and reports non-padding tokens per second, from the trainer's own
count (``train_log.json``: ``tokens``), beside the limit this machine allows:

- the limit is measured here, as matrix-multiply GFLOP/s in the precision each step trains in (fp32,
  or bf16 where the run's ``bf16`` setting, ``auto`` by default, trains in mixed bf16: on a CPU with
  bf16 units its multiplies run in bf16), divided by the FLOPs a token costs: about 4 x the parameters
  for LoRA training
  (forward, and a backward pass through frozen weights that skips their weight gradients);
- DPO also runs its reference model forward over the same tokens (2 x the parameters more), so its
  own limit is 6 x the parameters per token; both ratios are printed.

The time is the trainer's whole ``train()`` call, first step included, as the study's own stages see
it. With ``--old-path`` each step is also trained as TRL does by default on a CPU (its LM head scoring
every position, prompt and padding included; see ``empathy_utils.training.labelled_positions_only``),
in the same process, and the ratio is printed. With ``--dpo-reference`` it instead trains the run's
whole DPO step (its own epochs, from the run's SFT adapter) twice in one process, the reference
scored inside every step (TRL's default) and once before training (``dpo.precompute_reference``),
and prints both times and their ratio. With ``--prefix-sharing`` it trains the run's whole SFT and DPO
steps (their own epochs; DPO from the run's SFT adapter) with and without running each batch's shared
prompt prefix once (``sft/dpo.share_prompt_prefix``, ``empathy_utils.prefix_sharing``), in one process,
and prints the times, the tokens the model ran and the losses side by side. With ``--precision`` it
trains the run's whole SFT and DPO steps in fp32 and in mixed bf16, alternating. With ``--packing`` it
trains them with LoRA's frozen base layers on plain ``nn.Linear`` and on weights packed for oneDNN
(``empathy_utils.packed_linear``; ``EMPATHY_PACKED_LINEAR=0`` is the old path), alternating. With
``--lm-head`` it trains them with TRL's chunked LM head (``EMPATHY_LM_HEAD=trl``, the old path) and with
``empathy_utils.lm_head``'s whole-vocabulary one, alternating. With ``--attention`` it trains them with
transformers' SDPA attention (``EMPATHY_ATTENTION=sdpa``, the old path) and with
``empathy_utils.grouped_attention``'s grouped products, alternating. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from limits import matmul_gflops, tokens_per_second_limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/default", help="a run folder whose datasets stage has finished")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--old-path", action="store_true",
                        help="also train each step with TRL's default every-position LM head, for the ratio")
    parser.add_argument("--dpo-reference", action="store_true",
                        help="time the run's whole DPO step with the reference scored every step and once")
    parser.add_argument("--dpo-epochs", type=float, default=None,
                        help="with --dpo-reference: epochs instead of the run's own (the paper: 3)")
    parser.add_argument("--prefix-sharing", action="store_true",
                        help="time the run's whole SFT and DPO steps with and without the shared prompt prefix")
    parser.add_argument("--only", choices=("sft", "dpo"),
                        help="with --prefix-sharing, --precision or --packing: this step alone")
    parser.add_argument("--precision", action="store_true",
                        help="train the run's whole SFT and DPO steps in fp32 and in mixed bf16 (sft/dpo.bf16), "
                             "alternating, two of each, in one process")
    parser.add_argument("--packing", action="store_true",
                        help="train the run's whole SFT and DPO steps on plain and on packed frozen weights, "
                             "alternating (--repeats of each), in one process")
    parser.add_argument("--lm-head", action="store_true",
                        help="train the run's whole SFT and DPO steps with TRL's chunked LM head "
                             "(EMPATHY_LM_HEAD=trl) and the study's whole-vocabulary one, alternating")
    parser.add_argument("--attention", action="store_true",
                        help="train the run's whole SFT and DPO steps with transformers' SDPA attention "
                             "(EMPATHY_ATTENTION=sdpa) and the study's grouped products, alternating")
    parser.add_argument("--repeats", type=int, default=2,
                        help="with --packing, --lm-head or --attention: runs of each path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="change a setting of the run's params for the plain measurement, as "
                             "`empathy-study run --set` takes it (e.g. sft.bf16=false: fp32 on any CPU)")
    args = parser.parse_args()
    from empathy_utils.allocator import keep_freed_memory

    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    if args.packing:
        return compare_packing(Path(args.run), args.only, args.repeats)
    if args.attention:
        return compare_attention(Path(args.run), args.only, args.repeats, args.overrides)
    if args.lm_head:
        return compare_lm_head(Path(args.run), args.only, args.repeats, args.overrides)
    if args.prefix_sharing:
        return compare_prefix_sharing(Path(args.run), args.only)
    if args.precision:
        return compare_precision(Path(args.run), args.only)
    if args.dpo_reference:
        return compare_dpo_reference(Path(args.run), args.dpo_epochs)

    import contextlib

    import torch

    from empathy_utils import training
    from empathy_utils.config import load_config
    from empathy_utils.models import load_model
    from empathy_utils.training import train_dpo, train_sft

    run = Path(args.run)
    overrides = [f"{s}.{k}={v}" for s in ("sft", "dpo") for k, v in (("max_steps", args.steps), ("logging_steps", 1))]
    overrides += args.overrides
    cfg = load_config(run / "params.yaml", overrides)
    params = sum(p.numel() for p in load_model(cfg.model.name_or_path).parameters())
    precision = {step: "bfloat16" if training.train_in_bf16(getattr(cfg, step).bf16) else "float32"
                 for step in ("sft", "dpo")}
    gflops_by_dtype = {dtype: matmul_gflops(dtype=dtype) for dtype in sorted(set(precision.values()))}
    print(f"{cfg.model.name_or_path}: {params / 1e6:.0f} M parameters; matmul "
          + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in gflops_by_dtype.items())
          + f" on {torch.get_num_threads()} threads; {args.steps} steps each of SFT and DPO on {run}'s data; "
          f"SFT trains in {precision['sft']}, DPO in {precision['dpo']}")
    results = {"gflops": {d: round(g, 1) for d, g in gflops_by_dtype.items()}, "parameters": params}
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(run / "data", Path(scratch) / "data")
        for step, train, flops_per_token in (("sft", train_sft, 4), ("dpo", train_dpo, 6)):
            if args.old_path:
                switch = training.labelled_positions_only
                training.labelled_positions_only = contextlib.nullcontext
                try:
                    old = train(cfg, scratch)
                finally:
                    training.labelled_positions_only = switch
                shutil.rmtree(Path(scratch) / "models" / step)
                print(f"  {step.upper()}, TRL's every-position LM head: {old['tokens_per_second']} tok/s, "
                      f"peak RSS {old['peak_rss_gb']} GB, last loss {old['last_loss']}")
                results[f"{step}_old_path"] = {k: old[k] for k in ("seconds", "tokens", "tokens_per_second", "last_loss")}
            summary = train(cfg, scratch)
            if args.old_path:
                print(f"  {step.upper()}, labelled positions only: {summary['tokens_per_second']} tok/s, last loss "
                      f"{summary['last_loss']}: {summary['tokens_per_second'] / old['tokens_per_second']:.2f}x")
            rate = summary["tokens_per_second"]
            gflops = gflops_by_dtype[precision[step]]
            limit_lora = tokens_per_second_limit(gflops, params, 4)
            limit_own = tokens_per_second_limit(gflops, params, flops_per_token)
            results[step] = {"precision": precision[step], "steps": summary["steps"], "tokens": summary["tokens"], "seconds": summary["seconds"],
                             "tokens_per_second": rate, "limit_lora_training": round(limit_lora, 1),
                             "ratio_to_lora_limit": round(rate / limit_lora, 2),
                             "limit_with_its_own_passes": round(limit_own, 1),
                             "ratio_to_own_limit": round(rate / limit_own, 2), "peak_rss_gb": summary["peak_rss_gb"]}
            print(f"  {step.upper()}: {summary['tokens']} tokens in {summary['seconds']} s = {rate} tok/s; "
                  f"{rate / limit_lora:.0%} of the LoRA-training limit in {precision[step]} ({limit_lora:.0f} tok/s), "
                  f"{rate / limit_own:.0%} of its own ({limit_own:.0f} tok/s, {flops_per_token} x parameters "
                  f"per token); process peak RSS {summary['peak_rss_gb']} GB")
    print(json.dumps(results))


def train_step_in_scratch(run: Path, step: str, cfg):
    """One of the run's training steps as the study trains it, in a scratch copy of its inputs (DPO
    continues the run's own SFT adapter), so the run's adapters are untouched."""
    from empathy_utils.training import train_dpo, train_sft

    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(run / "data", Path(scratch) / "data")
        if step == "dpo":
            shutil.copytree(run / "models" / "sft", Path(scratch) / "models" / "sft")
        return (train_sft if step == "sft" else train_dpo)(cfg, scratch)


def alternate_two_paths(run: Path, paths: tuple[str, str], configure, only: str | None = None,
                        repeats: int = 2) -> None:
    """Train the run's whole SFT and DPO steps on two paths in the order A, B, B, A, ... (so both see the
    same hours on a shared machine) and print each time and the ratio of A's total to B's.
    ``configure(step, second_path)`` returns the config to train with (and may set the environment)."""
    order = [i % 2 != (i // 2) % 2 for i in range(2 * repeats)]
    results = {}
    for step in ("sft", "dpo"):
        if only and step != only:
            continue
        for second in order:
            summary = train_step_in_scratch(run, step, configure(step, second))
            path = paths[second]
            results.setdefault(f"{step}_{path}", []).append(
                {k: summary.get(k) for k in ("seconds", "tokens", "last_loss", "peak_rss_gb", "packed_layers",
                                             "mixed_precision", "lm_head", "attention_implementation")})
            print(f"  {step.upper()} {path}: {summary['steps']} steps, {summary['seconds']} s, "
                  f"{summary['tokens_per_second']} tok/s, last loss {summary['last_loss']}, "
                  f"{summary.get('packed_layers')} layers packed, precision {summary.get('mixed_precision')}, "
                  f"attention {summary.get('attention_implementation')}, "
                  f"peak RSS {summary['peak_rss_gb']} GB", flush=True)
        first, then = (sum(r["seconds"] for r in results[f"{step}_{path}"]) for path in paths)
        results[f"{step}_speed-up"] = round(first / then, 2)
        print(f"  {step.upper()}: {paths[0]} {first:.1f} s against {paths[1]} {then:.1f} s over {repeats} runs each: "
              f"{first / then:.2f}x")
    print(json.dumps(results))


def compare_precision(run: Path, only: str | None = None) -> None:
    """The run's SFT and DPO steps in fp32 and in mixed bf16 (what ``bf16: auto`` picks on hardware with
    bf16 units)."""
    from empathy_utils.config import load_config

    alternate_two_paths(run, ("fp32", "bf16"), only=only, configure=lambda step, bf16: load_config(
        run / "params.yaml", [f"{step}.bf16={'true' if bf16 else 'false'}"]))


def compare_switch(run: Path, variable: str, values: tuple[str, str], paths: tuple[str, str],
                   only: str | None = None, repeats: int = 2, overrides: list[str] = ()) -> None:
    """The run's SFT and DPO steps with the environment switch ``variable`` at each of ``values`` (the old
    path first), alternating; ``paths`` name them in the report."""
    import os

    from empathy_utils.config import load_config

    def configure(step: str, second: bool):
        os.environ[variable] = values[second]
        return load_config(run / "params.yaml", list(overrides))

    try:
        alternate_two_paths(run, paths, configure, only=only, repeats=repeats)
    finally:
        os.environ.pop(variable, None)


def compare_packing(run: Path, only: str | None = None, repeats: int = 2) -> None:
    """The run's SFT and DPO steps (fp32 here) with LoRA's frozen base layers plain and packed for oneDNN."""
    compare_switch(run, "EMPATHY_PACKED_LINEAR", ("0", "1"), ("plain", "packed"), only, repeats)


def compare_lm_head(run: Path, only: str | None = None, repeats: int = 2, overrides: list[str] = ()) -> None:
    """The run's SFT and DPO steps with TRL's chunked LM head and with ``empathy_utils.lm_head``'s."""
    compare_switch(run, "EMPATHY_LM_HEAD", ("trl", "whole-vocabulary"), ("TRL-head", "whole-vocabulary-head"),
                   only, repeats, overrides)


def compare_attention(run: Path, only: str | None = None, repeats: int = 2, overrides: list[str] = ()) -> None:
    """The run's SFT and DPO steps with transformers' SDPA attention and with ``empathy_utils.grouped_attention``."""
    compare_switch(run, "EMPATHY_ATTENTION", ("sdpa", "grouped-products"), ("SDPA", "grouped-products"),
                   only, repeats, overrides)


def compare_dpo_reference(run: Path, epochs: float | None = None) -> None:
    """The run's DPO step as the study trains it, reference inside each step vs. precomputed once."""
    from empathy_utils.config import load_config
    from empathy_utils.training import train_dpo

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(run / "data", Path(scratch) / "data")
        shutil.copytree(run / "models" / "sft", Path(scratch) / "models" / "sft")
        for precompute in (False, True):
            overrides = [f"dpo.precompute_reference={'always' if precompute else 'never'}"]
            cfg = load_config(run / "params.yaml", overrides + ([f"dpo.epochs={epochs}"] if epochs else []))
            summary = train_dpo(cfg, scratch)
            shutil.rmtree(Path(scratch) / "models" / "dpo")
            key = "reference_once" if precompute else "reference_every_step"
            results[key] = {k: summary[k] for k in ("steps", "seconds", "tokens", "last_loss", "peak_rss_gb")}
            print(f"  DPO, {key.replace('_', ' ')}: {summary['steps']} steps in {summary['seconds']} s, "
                  f"last loss {summary['last_loss']}, peak RSS {summary['peak_rss_gb']} GB")
    ratio = results["reference_every_step"]["seconds"] / results["reference_once"]["seconds"]
    results["speed-up"] = round(ratio, 2)
    print(f"  reference once / every step: {ratio:.2f}x faster")
    print(json.dumps(results))


def compare_prefix_sharing(run: Path, only: str | None = None) -> None:
    """The run's SFT and DPO steps as the study trains them, each batch's shared prompt prefix run once
    per row (TRL's forward) and once per batch."""
    from empathy_utils.config import load_config
    from empathy_utils.training import train_dpo, train_sft

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(run / "data", Path(scratch) / "data")
        for step, train in (("sft", train_sft), ("dpo", train_dpo)):
            if only and step != only:
                continue
            if step == "dpo":  # both DPO trainings continue the run's own SFT adapter
                shutil.copytree(run / "models" / "sft", Path(scratch) / "models" / "sft")
            for share in (False, True):
                cfg = load_config(run / "params.yaml", [f"{step}.share_prompt_prefix={str(share).lower()}"])
                summary = train(cfg, scratch)
                shutil.rmtree(Path(scratch) / "models" / step)
                sharing = summary.get("prefix_sharing") or {}
                key = f"{step}_{'shared_prefix' if share else 'per_row'}"
                results[key] = {k: summary[k] for k in ("steps", "seconds", "tokens", "first_loss", "last_loss",
                                                        "peak_rss_gb")} | {
                    "decoder_positions": sharing.get("tokens_in_batches"), "decoder_ran": sharing.get("tokens_run")}
                print(f"  {step.upper()}, prefix {'once per batch' if share else 'once per row'}: {summary['steps']} "
                      f"steps in {summary['seconds']} s, {summary['tokens']} batch tokens"
                      + (f"; the decoder saw {sharing['tokens_in_batches']} positions (padding included; DPO: the "
                         f"reference pass too) and ran {sharing['tokens_run']}, {sharing['share_saved']:.0%} fewer"
                         if sharing else "")
                      + f", losses {summary['first_loss']} -> {summary['last_loss']}, peak RSS {summary['peak_rss_gb']} GB")
            ratio = results[f"{step}_per_row"]["seconds"] / results[f"{step}_shared_prefix"]["seconds"]
            results[f"{step}_speed_up"] = round(ratio, 2)
            print(f"  {step.upper()}: {ratio:.2f}x faster with the prefix run once per batch")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
