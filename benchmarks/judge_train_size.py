"""What learning from fewer train-split dialogues costs the learned judges, and what it saves.

    EMPATHY_DATA_DIR=... python benchmarks/judge_train_size.py [--profile default] [--dialogues 0 350]

Needs the research data. For each value of ``judge_validation.train_dialogues`` (0 = all 1,750) it runs
the profile's whole validate-judges stage from an empty embedding and judge cache (a fresh
``EMPATHY_CACHE_DIR`` each, so every reply is embedded anew, as on a fresh machine), one after the
other in one process, and prints the stage's wall time and, for every candidate, its training size and
its selection and report accuracy; then which judge each run selected. Nothing is written to the
profile's own run folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from empathy_utils.allocator import keep_freed_memory
from empathy_utils.config import load_config, profile_path
from empathy_utils.judge_validation import load_validation_data, run_validation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--dialogues", type=int, nargs="+", default=[0, 350])
    args = parser.parse_args(argv)
    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)

    results = []
    for n in args.dialogues:
        cfg = load_config(profile_path(args.profile), [f"judge_validation.train_dialogues={n}"])
        if load_validation_data(cfg) is None:
            print("needs the research data: set EMPATHY_DATA_DIR", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="judge-train-size-") as scratch:
            os.environ["EMPATHY_CACHE_DIR"] = os.path.join(scratch, "cache")
            start = time.time()
            report = run_validation(cfg, os.path.join(scratch, "run"), log=lambda m: print(m, flush=True))
            seconds = time.time() - start
        results.append((n, seconds, report))
        print(f"\ntrain_dialogues={n or 'all'}: validate-judges {seconds:.1f} s from empty caches", flush=True)
        for j in report["judges"]:
            t = j.get("training") or {}
            size = f"{t['dialogues']} dialogues" if "dialogues" in t else "-"
            print(f"  {j['kind']:<15} {size:<15} selection {100 * j['selection']['accuracy']:.1f} % "
                  f"({j['selection']['pairs']} pairs)  report {100 * j['accuracy']:.1f} % "
                  f"[{100 * j['ci_low']:.1f}-{100 * j['ci_high']:.1f}] ({j['pairs']} pairs)")
    print()
    first = results[0][1]
    for n, seconds, report in results:
        chosen = report.get("selected") or {}
        print(f"train_dialogues={n or 'all'}: {seconds:.1f} s ({first / seconds:.2f}x the first), selected "
              f"{chosen.get('kind')}, report {100 * chosen.get('accuracy', float('nan')):.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
