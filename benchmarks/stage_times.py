"""Wall time of every stage of a profile, run from scratch, plus the book build.

    python benchmarks/stage_times.py [--profile default] [--set key=value ...]

Runs into runs/bench-<run name> (forced, so nothing is skipped) and builds the book in a temporary
copy of the book sources, so the working tree's book is untouched. Prints a table and JSON. A
profile of several runs (a grid, or a ``book:`` list such as ``study``) runs each of them, in the
order `empathy-study run` would, and builds one book from them all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from empathy_utils.artifacts import read_manifest
from empathy_utils.book import book_entry_runs
from empathy_utils.config import grid_configs, load_config, profile_path
from empathy_utils.paths import repo_root
from empathy_utils.runner import build_book, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    cfg = load_config(profile_path(args.profile), args.set)
    runs = grid_configs(cfg) + [run for _, run in book_entry_runs(cfg)]
    start = time.time()
    run_dirs = []
    for run in runs:
        run.run.name = f"bench-{run.run.name}"
        run_dirs.append(run_study(run, params_source=args.profile, force=True))
    stages_seconds = time.time() - start
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy2(repo_root() / "_config.yml", root / "_config.yml")
        shutil.copytree(repo_root() / "book", root / "book", ignore=shutil.ignore_patterns("run", "_build"))
        t = time.time()
        build_book(run_dirs[0] if len(run_dirs) == 1 else run_dirs, root=root)
        book_seconds = time.time() - t
    rows = []
    for run, run_dir in zip(runs, run_dirs):
        stages = read_manifest(run_dir)["stages"]
        prefix = f"{run.run.name}/" if len(runs) > 1 else ""
        rows += [(f"{prefix}{s}", stages[s]["seconds"]) for s in run.run.stages]
    print(f"\nprofile {args.profile}: wall time per stage (each includes starting its notebook kernel)")
    for name, sec in rows:
        print(f"  {name:<10} {sec:7.1f} s")
    print(f"  {'book':<10} {book_seconds:7.1f} s")
    print(f"  {'total':<10} {stages_seconds + book_seconds:7.1f} s  ({(stages_seconds + book_seconds) / 60:.1f} min)")
    print(json.dumps({"profile": args.profile, "stages": dict(rows), "book": round(book_seconds, 1),
                      "total": round(stages_seconds + book_seconds, 1)}))


if __name__ == "__main__":
    main()
