"""A profile's stages with glibc's own allocator settings and with the study's, alternating.

    python benchmarks/allocator.py [--profile default] [--repeats 2] [--set key=value ...]

``empathy_utils.allocator`` has glibc keep the memory a stage frees (``EMPATHY_MALLOC=glibc`` is the old
path). Each run here starts from an empty response cache of its own (``EMPATHY_CACHE_DIR``), so every
stage does its whole work, and goes to runs/bench-alloc-<glibc|kept>-<i>. Prints each run's stage
seconds, its kernels' minor page faults and system time (getrusage of the finished child processes),
the ratio of the summed stage times, and whether every run wrote byte-identical replies, judgments and
results. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import tempfile
from pathlib import Path

from empathy_utils import allocator
from empathy_utils.artifacts import read_manifest
from empathy_utils.config import load_config, profile_path
from empathy_utils.runner import run_study

# What a run computes (its dataset caches carry paths and times, so they are not compared).
OUTPUTS = ("generations", "judgments", "results")


def use_glibc_defaults(glibc: bool) -> None:
    """Set this process's environment, which the runner's kernels inherit, for one of the two paths."""
    for name in allocator.SETTINGS:
        os.environ.pop(name, None)
    if glibc:
        os.environ[allocator.OPT_OUT] = "glibc"
    else:
        os.environ.pop(allocator.OPT_OUT, None)  # run_study sets the variables again


def outputs_identical(first: Path, other: Path) -> bool:
    for folder in OUTPUTS:
        files = sorted(p.relative_to(first) for p in (first / folder).rglob("*") if p.is_file())
        if any(not (other / f).is_file() or not filecmp.cmp(first / f, other / f, shallow=False) for f in files):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path, alternating")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as caches:
        for i in range(1, args.repeats + 1):
            for glibc in (True, False):
                mode = "glibc" if glibc else "kept"
                use_glibc_defaults(glibc)
                os.environ["EMPATHY_CACHE_DIR"] = str(Path(caches) / f"{mode}-{i}")
                cfg = load_config(profile_path(args.profile), args.set)
                cfg.run.name = f"bench-alloc-{mode}-{i}"
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                run_dir = run_study(cfg, params_source=args.profile, force=True, log=lambda *a: None)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                manifest = read_manifest(run_dir)
                stages = {s: manifest["stages"][s]["seconds"] for s in cfg.run.stages}
                row = {"path": mode, "run": i, "stages_seconds": round(sum(stages.values()), 1), "stages": stages,
                       "minor_page_faults": after.ru_minflt - before.ru_minflt,
                       "system_seconds": round(after.ru_stime - before.ru_stime, 1),
                       "allocator": manifest["hardware"].get("allocator"), "run_dir": str(run_dir)}
                results.append(row)
                print(f"  {mode:<5} run {i}: stages {row['stages_seconds']:7.1f} s, page faults "
                      f"{row['minor_page_faults']:>10,}, system time {row['system_seconds']:6.1f} s  {stages}")
    summed = {mode: sum(r["stages_seconds"] for r in results if r["path"] == mode) for mode in ("glibc", "kept")}
    first = Path(results[0]["run_dir"])
    same = all(outputs_identical(first, Path(r["run_dir"])) for r in results[1:])
    print(f"  glibc's settings / the study's, summed stage times: {summed['glibc'] / summed['kept']:.3f}x; "
          f"replies, judgments and results byte-identical in every run: {same}")
    print(json.dumps({"profile": args.profile, "runs": results, "ratio": round(summed["glibc"] / summed["kept"], 3),
                      "outputs_identical": same}))


if __name__ == "__main__":
    main()
