"""Measure the judges that need no training data and write the packaged measurement.

    EMPATHY_DATA_DIR=/path/to/data HF_HUB_OFFLINE=1 python benchmarks/measure_offline_judges.py \
        --selection-pairs 60 --report-pairs 200 --pairwise-pairs 12

Writes ``empathy_utils/resources/judge_measurements.json`` (aggregates only; no text of the data):
every candidate's selection-set figures, the chosen one's report-set figures, the baselines on the
same pairs, the data file's checksum, the date and the commit. ``judge.fallback: auto`` reads it.
Re-run it after changing a judge, and commit the file it writes (never edit the file by hand)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from empathy_utils.allocator import keep_freed_memory
from empathy_utils.data import load_llms_vs_humans
from empathy_utils.judge_validation.offline import measure_data_free, measurement_path
from empathy_utils.judges import LIKELIHOOD_FRAMINGS, LIKELIHOOD_SCORES


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    if hasattr(x, "item"):
        return _plain(x.item())
    return x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="research data folder (default: $EMPATHY_DATA_DIR)")
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--conditions", nargs="+", default=["utterance", "context", "plain"], choices=list(LIKELIHOOD_FRAMINGS))
    p.add_argument("--scores", nargs="+", default=["mean", "pmi"], choices=list(LIKELIHOOD_SCORES))
    p.add_argument("--selection-pairs", type=int, default=60, help="selection pairs (whole dialogues; 0 = all)")
    p.add_argument("--report-pairs", type=int, default=200, help="report pairs (whole dialogues; 0 = all)")
    p.add_argument("--pairwise-pairs", type=int, default=12, help="selection pairs for the pairwise judge (0 = skip)")
    p.add_argument("--report-top", type=int, default=1, help="how many of the best candidates to report")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=str(measurement_path()))
    args = p.parse_args(argv)
    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    frame = load_llms_vs_humans(args.data_dir)
    start = time.time()
    result = measure_data_free(frame, args.model, args.conditions, args.scores, args.selection_pairs,
                               args.report_pairs, args.pairwise_pairs, args.report_top, args.batch_size,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    result["command"] = "python benchmarks/measure_offline_judges.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["seconds"] = round(time.time() - start, 1)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(_plain(result), f, indent=1)
        f.write("\n")
    for row in result["candidates"] + result["baseline_rows"]:
        sel, rep = row["selection"], row.get("report")
        print(f"{row['name'][:90]:<90} selection {sel['accuracy']:.3f} ties {sel['tie_rate']:.2f}"
              + (f" | report {rep['accuracy']:.3f} [{rep['ci_low']:.3f}, {rep['ci_high']:.3f}]" if rep else "")
              + (f" | refused: {row['refused']}" if row.get("refused") else ""))
    print(f"selected: {result['selected']['name'] if result['selected'] else None}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
