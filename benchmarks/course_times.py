"""Measure the course: the lab set-up (what `make lab` runs) and every exercise solution in the book,
in a scratch copy of the study, and write the times to book/course_times.json for the teaching page.

    .venv/bin/python benchmarks/course_times.py [--only ex-results-ci ...]

CPU time is user + system time of every process a block started (papermill's kernels included);
wall time is what a student waits. A failing solution stops the script with its output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from empathy_utils.course import (  # noqa: E402
    TIMES_FILE,
    chapter_paths,
    lab_commands,
    make_classroom,
    run_block,
    run_code,
    solution_blocks,
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="re-measure only these exercises (others keep their times)")
    args = parser.parse_args()
    out_path = REPO / TIMES_FILE
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="classroom-") as tmp:
        classroom = make_classroom(REPO, Path(tmp) / "study")
        lab = run_code("bash", "\n".join(lab_commands(REPO)), classroom)
        if lab.returncode:
            print(lab.output[-4000:])
            return 1
        print(f"lab set-up: {lab.wall_s:.0f} s wall, {lab.cpu_s:.0f} s CPU")
        blocks = []
        for chapter in chapter_paths(REPO):
            for block in solution_blocks(chapter):
                if args.only and block.exercise not in args.only:
                    blocks += [r for r in previous.get("blocks", []) if r["exercise"] == block.exercise
                               and r["index"] == block.index]
                    continue
                res = run_block(block, classroom)
                if res.returncode:
                    print(f"{block.where} failed:\n{res.output[-4000:]}")
                    return 1
                print(f"{block.where}: {res.wall_s:.1f} s wall, {res.cpu_s:.1f} s CPU")
                blocks.append({"chapter": block.chapter, "exercise": block.exercise, "index": block.index,
                               "tier": block.tier, "cpu_s": round(res.cpu_s, 1), "wall_s": round(res.wall_s, 1)})
    record = {
        "measured_on": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores ({cpu_model()}), no GPU",
        # Other work on the machine stretches wall time (CPU time much less): say how busy it was.
        "load_average": {"start": round(load_before, 1), "end_15min": round(os.getloadavg()[2], 1)},
        "lab": {"commands": lab_commands(REPO), "cpu_s": round(lab.cpu_s, 1), "wall_s": round(lab.wall_s, 1)},
        "blocks": blocks,
    }
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
