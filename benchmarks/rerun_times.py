"""What a re-run costs after a small change: a judge setting, then a generation setting.

    python benchmarks/rerun_times.py [--profile default] [--judge-set judge.confidence=0.9] \
        [--generation-set generation.max_new_tokens=72]

Needs a finished run of the profile (``empathy-study run --profile default``). Copies its run folder
to ``runs/bench-rerun-<name>`` (the original is never touched) and, in the copy, re-runs the study
three times: unchanged, with one judge setting changed, then with one generation setting changed
as well. For each it prints the wall time, its ratio to the first run's stage time (the sum of the
stage times in the original manifest), and which stages executed. A judge-only change should
execute the judge stage and what follows it, nothing before; a generation change should not train.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from empathy_utils.artifacts import read_manifest
from empathy_utils.config import load_config, profile_path
from empathy_utils.runner import run_folder, run_study


def _rerun(profile: str, overrides: list[str]) -> dict:
    cfg = load_config(profile_path(profile), overrides)
    executed: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        if ": running " in message:
            executed.append(message.split("] ", 1)[1].split(":", 1)[0])

    start = time.time()
    run_study(cfg, params_source=profile, log=log)
    return {"overrides": overrides, "seconds": round(time.time() - start, 1), "executed": executed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--judge-set", default="judge.confidence=0.9")
    parser.add_argument("--generation-set", default="generation.max_new_tokens=72")
    args = parser.parse_args(argv)

    original_cfg = load_config(profile_path(args.profile))
    _, original = run_folder(original_cfg)
    manifest = read_manifest(original)
    stages = manifest.get("stages", {})
    if not stages or any(stages.get(s, {}).get("status") != "ok" for s in original_cfg.run.stages):
        print(f"{original}: no finished run of {args.profile}; run `empathy-study run --profile {args.profile}` first",
              file=sys.stderr)
        return 2
    first = sum(stages[s]["seconds"] for s in original_cfg.run.stages)
    name = f"bench-rerun-{original_cfg.run.name}"
    copy = original.parent / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(original, copy)
    base = [f"run.name={name}"]
    rows = [_rerun(args.profile, base),
            _rerun(args.profile, base + [args.judge_set]),
            _rerun(args.profile, base + [args.judge_set, args.generation_set])]
    print(f"\nprofile {args.profile}: first run {first:.0f} s of stages ({original})")
    for label, row in zip(("unchanged", "judge setting changed", "generation setting changed"), rows):
        ran = ", ".join(row["executed"]) or "nothing"
        print(f"  {label:<28} {row['seconds']:7.1f} s  = {100 * row['seconds'] / first:5.1f} % of the first run;"
              f" executed: {ran}")
    trained = [s for s in ("sft", "dpo") if s in rows[2]["executed"]]
    print(f"  after the generation change, training stages executed: {trained or 'none'}")
    print(json.dumps({"profile": args.profile, "first_run_seconds": round(first, 1), "reruns": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
