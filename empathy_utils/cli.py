"""``empathy-study``: the command line of the study.

    empathy-study run --profile default [--set sft.epochs=1 ...] [--stages sft dpo] [--force] [--book]
    empathy-study book --run default
    empathy-study validate --profile llms-vs-humans
    empathy-study data stats --data-dir ../shared/data

Problems a user can fix (bad params, missing or malformed data) print one short message and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import STAGES, load_config, profile_path
from .errors import StudyError
from .paths import DATA_ENV


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=f"research data folder (default: ${DATA_ENV})")


def _apply_data_dir(args) -> None:
    # Through the environment, so params files stay machine-independent and notebooks inherit it.
    if getattr(args, "data_dir", None):
        os.environ[DATA_ENV] = str(Path(args.data_dir).expanduser().resolve())


def cmd_run(args) -> int:
    from .runner import build_book, run_study

    path = profile_path(args.profile)
    cfg = load_config(path, args.set)
    if args.run_name:
        cfg.run.name = args.run_name
    run_dir = run_study(cfg, params_source=str(path), stages=args.stages, force=args.force)
    print(f"run folder: {run_dir}")
    if args.book:
        build_book(run_dir)
    return 0


def cmd_book(args) -> int:
    from .paths import repo_root
    from .runner import build_book

    run = Path(args.run)
    if not run.exists():
        run = repo_root() / "runs" / args.run
    if not run.exists():
        raise StudyError(f"no run folder {args.run!r} (looked in runs/); run `empathy-study run --profile {args.run}` first")
    build_book(run, root=args.root, strict=not args.no_strict)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="empathy-study", description="Run the empathy-distillation study.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute a profile's stage notebooks into runs/<name>/")
    p.add_argument("--profile", required=True, help="a name in notebooks/params/ (tiny, default, …) or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one parameter (repeatable), e.g. --set sft.learning_rate=1e-4")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="run only these stages (default: all)")
    p.add_argument("--force", action="store_true", help="re-run stages even if their params are unchanged")
    p.add_argument("--run-name", help="write to runs/<run-name> instead of the profile's run.name")
    p.add_argument("--book", action="store_true", help="build the book from this run afterwards")
    _add_data_dir(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("book", help="render the Jupyter Book from an executed run")
    p.add_argument("--run", default="default", help="run name (under runs/) or run folder")
    p.add_argument("--root", help="book source root (default: the repository)")
    p.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("validate", help="check a params file (and its data) without running anything")
    p.add_argument("--profile", required=True)
    p.add_argument("--set", action="append", default=[])
    _add_data_dir(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("data", help="inspect the research data")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="split sizes and dataset counts of every method on LLMs-vs-Humans")
    _add_data_dir(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _apply_data_dir(args)
    try:
        return args.func(args)
    except StudyError as exc:
        print(f"empathy-study: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("empathy-study: interrupted; finished stages and cached teacher answers are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
