"""``empathy-study``: the command line of the study.

    empathy-study run --profile default [--set sft.epochs=1 ...] [--stages sft dpo] [--force] [--book]
    empathy-study book --run default [--run pride ...]   (or a profile with a book: list)
    empathy-study validate --profile llms-vs-humans
    empathy-study data stats --data-dir ../shared/data
    empathy-study judge --pairs IN.jsonl --out OUT.jsonl [--judge NAME]
    empathy-study plan --profile paper
    empathy-study params sft.epochs

Problems a user can fix (bad params, missing or malformed data) print one short message and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .allocator import keep_freed_memory
from .config import STAGES, load_config, profile_path
from .errors import StudyError
from .plugins import load_plugins
from .paths import DATA_ENV, hub_offline_by_default


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=f"research data folder (default: ${DATA_ENV})")


def _apply_data_dir(args) -> None:
    # Through the environment, so params files stay machine-independent and notebooks inherit it.
    if getattr(args, "data_dir", None):
        os.environ[DATA_ENV] = str(Path(args.data_dir).expanduser().resolve())


def cmd_run(args) -> int:
    from .config import grid_configs
    from .runner import build_book, run_study

    path = profile_path(args.profile)
    cfg = load_config(path, args.set)
    runs = [(run, str(path)) for run in grid_configs(cfg)]  # all validated before the first one starts
    if cfg.book:  # and the runs its book holds (each profile's own settings, in its own folder)
        from .book import book_entry_runs

        runs += [(run, str(profile_path(entry["profile"]))) for entry, run in book_entry_runs(cfg)]
    if args.run_name:
        if len(runs) > 1:
            raise StudyError("--run-name names one run; this params file is a grid of several (or has a book: list)")
        runs[0][0].run.name = args.run_name
    for run, source in runs:
        run_dir = run_study(run, params_source=source, stages=args.stages, force=args.force)
        print(f"run folder: {run_dir}")
        if args.book:
            build_book(run_dir)
    return 0


def cmd_plan(args) -> int:
    from .plan import distinct_teacher_calls, plan_file, plan_tables

    path = profile_path(args.profile)
    cfg = load_config(path, args.set)
    plans = plan_file(cfg)
    runs, datasets = plan_tables(plans)
    distinct = distinct_teacher_calls(plans)
    if args.json:
        print(json.dumps({"runs": runs.to_dict("records"), "datasets": datasets.to_dict("records"),
                          "teacher_distinct": vars(distinct)}, indent=2))
        return 0
    print(f"Plan for {path}: nothing is called. Tokens are estimates (see empathy_utils/plan.py); "
          "teacher calls exclude the one retry of an unusable answer.\n")
    with pd_options():
        print("Datasets per run:")
        print(datasets.to_string(index=False))
        print("\nRuns:")
        print(runs.T.to_string(header=False))
        total = runs.select_dtypes("number").sum()
        print("\nTotal over all runs:")
        print(total.to_string())
        print(f"\nTeacher work once the response cache shares identical questions between runs: "
              f"{distinct.calls} calls, {distinct.prompt_tokens} prompt tokens, "
              f"{distinct.completion_expected} completion tokens expected ({distinct.completion_max} at most)")
    return 0


def pd_options():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 60)


def cmd_book(args) -> int:
    from .book import build_book, resolve_book_runs

    runs = resolve_book_runs(args.run or ["default"])
    build_book(runs[0] if len(runs) == 1 else runs, root=args.root, strict=not args.no_strict)
    return 0


def cmd_validate(args) -> int:
    from .runner import preflight

    path = profile_path(args.profile)
    cfg = load_config(path, args.set)
    files = preflight(cfg)
    print(f"{path}: valid (params hash {cfg.params_hash()}); data: {', '.join(files)}")
    return 0


def cmd_data_stats(args) -> int:
    from .data import load_llms_vs_humans, split_counts
    from .distillation import selection_counts

    frame = load_llms_vs_humans(args.data_dir)
    split = split_counts(frame)
    counts = selection_counts(frame[frame["split"] == "train"])
    if args.json:
        print(json.dumps({"split": split, **counts}, indent=2))
        return 0
    print(f"LLMs-vs-Humans: {frame.attrs['source_file']} (sha256 {frame.attrs['sha256'][:16]}…)")
    print(f"split (test = fewer than 2 of 5 replies rated Good): train {split['train']}, test {split['test']}")
    print("\nM1 direct distillation, per source LLM (train rows):")
    print(f"  {'source':<8} {'SFT rows':>9} {'SFT examples':>13} {'DPO pairs':>10} {'DPO pairs':>10}")
    print(f"  {'':<8} {'':>9} {'':>13} {'corrected':>10} {'faithful':>10}")
    for src in ("gpt4", "llama2", "gemini", "mixtral", "all"):
        c, f = counts["M1"]["corrected"][src], counts["M1"]["faithful"][src]
        print(f"  {src:<8} {c['sft_rows']:>9} {c['sft_examples']:>13} {c['dpo_pairs']:>10} {f['dpo_pairs']:>10}")
    for m, label in (("M2", "M2 improve human replies"), ("M3", "M3 improve the teacher's initial replies")):
        c = counts[m]
        print(f"\n{label}: SFT rows {c['sft_rows']} ({c['sft_examples']} examples), DPO pairs {c['dpo_pairs']}")
    return 0


def cmd_judge(args) -> int:
    from .judge_registry import build_registered_judge, registered
    from .judges import InstructionStrippingJudge, judge_file
    from .paths import repo_root
    from .stages import make_judge

    cfg = load_config(profile_path(args.profile), args.set)
    if args.judge == "default":
        judge = make_judge(cfg, repo_root() / cfg.run_dir)
        print(f"judge: {judge.name} ({judge.validity['how_chosen']}; profile {args.profile})\n"
              f"  {judge.validity['statement']}", file=sys.stderr)
    else:
        entry = registered(args.judge)  # an unknown name: one line with the nearest registered names
        judge = build_registered_judge(args.judge, cfg, "judge", log=lambda m: print(m, file=sys.stderr))
        if cfg.judge.strip_instructions and not entry.baseline:
            judge = InstructionStrippingJudge(judge)
        print(f"judge: {judge.name}", file=sys.stderr)
    counts = judge_file(judge, args.pairs, args.out, chunk_size=args.chunk_size,
                        log=lambda m: print(m, file=sys.stderr))
    print(f"{args.out}: {counts['pairs']} pairs ({counts['already_judged']} already judged, {counts['judged_now']} now); "
          f"a {counts['a']}, b {counts['b']}, tie {counts['tie']}, unparsed {counts['unparsed']}")
    return 0


def cmd_params(args) -> int:
    from .params_reference import describe, write_page

    if args.write_page:
        print(f"wrote {write_page()}")
        return 0
    for key in args.keys or ["run"]:
        print(describe(key))
    return 0


def cmd_prepare(args) -> int:
    """Convert the embedded models once (part of set-up: ``make install`` runs it), so that the first
    stage of the first run does not; a later call finds them converted and returns at once."""
    import time

    from .models import EMBEDDED_MODELS, resolve_model_path

    for key in EMBEDDED_MODELS:
        start = time.time()
        path = resolve_model_path(f"embedded:{key}")
        print(f"embedded:{key}: {path} ({time.time() - start:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="empathy-study", description="Run the empathy-distillation study.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute a profile's stage notebooks into runs/<name>/")
    p.add_argument("--profile", required=True, help="a name in notebooks/params/ (tiny, default, …) or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one parameter (repeatable), e.g. --set sft.learning_rate=1e-4; "
                        "`empathy-study params SECTION` lists a section's parameters with their help")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="run only these stages (default: all)")
    p.add_argument("--force", action="store_true", help="re-run stages even if their params are unchanged")
    p.add_argument("--run-name", help="write to runs/<run-name> instead of the profile's run.name")
    p.add_argument("--book", action="store_true", help="build the book from this run afterwards")
    _add_data_dir(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", help="count the runs, trainings, teacher and judge calls and tokens of a params file")
    p.add_argument("--profile", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("judge", help="judge pairs of replies from a JSONL file (resumes from --out)",
                       description="Each input line: id, context, utterance, response_a, response_b (other fields are "
                                   "ignored). Each output line: id, verdict (a, b, tie; unparsed only for a text-mode "
                                   "LLM judge whose answer cannot be read), p_a where the judge gives a probability, "
                                   "and judge. Pairs already in --out are not judged again.")
    p.add_argument("--pairs", required=True, help="input JSONL file")
    p.add_argument("--out", required=True, help="output JSONL file (appended to; a re-run resumes)")
    p.add_argument("--judge", default="default",
                   help="default: the judge the profile's judge stage would use (the best-validated one of "
                        "runs/<profile> when it has a validation, else judge.fallback); or a registered judge "
                        "(empathy_utils.judge_registry): pairwise-llm, likelihood, embedding-head, reward-model, "
                        "writer-style, cross-encoder, longer (the baseline), and any judge added with register_judge")
    p.add_argument("--profile", default="default", help="params whose judge settings apply (default: default)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--chunk-size", type=int, default=64, help="pairs judged between two writes to --out")
    _add_data_dir(p)
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("params", help="describe run parameters (type, default, allowed values, help, stages)",
                       description="Print the reference of one parameter (sft.epochs) or of a whole section (sft); "
                                   "the same text as book/parameters.md, read from the config dataclasses.")
    p.add_argument("keys", nargs="*", metavar="KEY", help="section.field or section (default: run)")
    p.add_argument("--write-page", action="store_true", help="regenerate book/parameters.md")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("book", help="render the Jupyter Book from an executed run")
    p.add_argument("--run", action="append", metavar="RUN",
                   help="run name (under runs/), run folder or profile (default: default); repeat it for a book "
                        "of several runs, each under a part of its own; a profile with a book: list brings "
                        "every run it lists")
    p.add_argument("--root", help="book source root (default: the repository)")
    p.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("validate", help="check a params file (and its data) without running anything")
    p.add_argument("--profile", required=True)
    p.add_argument("--set", action="append", default=[])
    _add_data_dir(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("prepare", help="convert the embedded models into the cache once (make install runs it)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("data", help="inspect the research data")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="split sizes and dataset counts of every method on LLMs-vs-Humans")
    _add_data_dir(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    hub_offline_by_default()  # before anything imports huggingface_hub (it reads the variable once)
    keep_freed_memory()  # glibc keeps freed memory for its next use, here and in the kernels (allocator)
    args = build_parser().parse_args(argv)
    _apply_data_dir(args)
    try:
        load_plugins()  # judges and data sources of $EMPATHY_PLUGINS
        return args.func(args)
    except StudyError as exc:
        print(f"empathy-study: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("empathy-study: interrupted; finished stages and cached teacher answers are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
