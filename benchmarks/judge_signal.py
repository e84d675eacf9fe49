"""What the judges see once who rated and who wrote are held fixed, and what a larger report set says.

    EMPATHY_DATA_DIR=... python benchmarks/judge_signal.py [--out signal.json] [--no-likelihood]

Needs the research data. Two measurements behind issue 10's finding that no judge clears both
baselines on the report set (benchmarks/MEASUREMENTS.md, "Who rated"):

1. **Within one rater.** In LLMs-vs-Humans each person rated ten replies of one writer, to ten
   dialogues, so two replies one rater rated differently differ in what was written and in nothing
   else (``within_rater_pairs``). Each judge that scores replies alone is measured on the test split's
   such pairs (``within_rater_agreement``; CI over raters) and, beside it, on the validate-judges
   stage's report set (same-dialogue pairs of the test split): the writer-style judge, the embedding
   head trained on train-split same-dialogue pairs (the stage's ``embedding-head``), the same head
   trained on train-split pairs of one rater, the longer reply, and the packaged data-free likelihood
   judge.
2. **A larger report set.** The writer-style judge fitted on a seeded share of the train-split
   dialogues and measured on every rated pair of the rest and of the test split (several thousand
   pairs, so intervals of a few points), beside the baselines on the same pairs and the known-writer
   reference.

Prints a table and, with ``--out``, writes the figures as JSON (aggregates only: no text of the data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from empathy_utils.allocator import keep_freed_memory
from empathy_utils.data import load_llms_vs_humans
from empathy_utils.judge_validation import learned
from empathy_utils.judge_validation.measurement import baselines, measure, within_rater_agreement, writer_ratings
from empathy_utils.judge_validation.offline import judge_from_settings, packaged_measurement
from empathy_utils.judge_validation.pairs import (judge_items, rating_pairs, split_selection_report,
                                                   train_pairs_of, within_rater_pairs)
from empathy_utils.judges import LongerReplyJudge


def same_dialogue_agreement(judge, pairs, resamples: int) -> dict:
    """Agreement on same-dialogue pairs (CI over dialogues), overall and on the human-vs-LLM pairs."""
    stats = measure(judge.judge(judge_items(pairs)), pairs, resamples, 0)
    return {k: stats[k] for k in ("pairs", "accuracy", "ci_low", "ci_high", "human_vs_llm_pairs", "accuracy_human_vs_llm")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="research data folder (default: $EMPATHY_DATA_DIR)")
    p.add_argument("--seed", type=int, default=0, help="pair and split seed (the validate-judges stage's: 0)")
    p.add_argument("--held-out-share", type=float, default=0.5,
                   help="share of train-split dialogues kept out of the writer-style judge's fit for the larger report set")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--no-likelihood", action="store_true", help="skip the data-free likelihood judge (its scoring takes minutes)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    keep_freed_memory()
    start = time.time()
    frame = load_llms_vs_humans(args.data_dir)
    train = frame[frame["split"] == "train"]
    encoder, store = learned.load_encoder(), learned.EmbeddingStore()

    one_rater = within_rater_pairs(frame, split="test", seed=args.seed)
    _, report = split_selection_report(rating_pairs(frame, "test", seed=args.seed), seed=args.seed)
    judges = {"longer reply wins": LongerReplyJudge()}
    judges["writer-style"], _ = learned.train_writer_style(train, encoder=encoder, store=store, seed=args.seed)
    judges["embedding head (same-dialogue pairs)"], _ = learned.train_embedding_head(
        train_pairs_of(frame, args.seed), encoder=encoder, store=store, seed=args.seed)
    own_rater_train = within_rater_pairs(frame, split="train", seed=args.seed)
    judges["embedding head (pairs of one rater)"], head_info = learned.train_embedding_head(
        own_rater_train, encoder=encoder, store=store, seed=args.seed, groups="rater",
        trained_on="LLMs-vs-Humans train-split pairs of one rater")
    if not args.no_likelihood:
        m = packaged_measurement()
        chosen = next(c for c in m["candidates"] if c["name"] == m["selected"]["name"])
        judges["data-free likelihood judge (packaged choice)"] = judge_from_settings(chosen["settings"])

    rows = []
    for label, judge in judges.items():
        t = time.time()
        rows.append({"judge": label, "name": judge.name,
                     "within_rater": within_rater_agreement(judge, one_rater, args.resamples, args.seed),
                     "report": same_dialogue_agreement(judge, report, args.resamples),
                     "seconds": round(time.time() - t, 1)})
        print(f"measured {label} in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)

    ids = sorted(train["dialogue_id"].unique())
    held = set(np.random.default_rng(args.seed).permutation(ids)[: int(round(args.held_out_share * len(ids)))])
    fit_rows = train[~train["dialogue_id"].isin(held)]
    larger = rating_pairs(frame[frame["dialogue_id"].isin(held) | (frame["split"] == "test")], seed=args.seed)
    writer_style, _ = learned.train_writer_style(fit_rows, encoder=encoder, store=store, seed=args.seed)
    larger_report = {"fit_dialogues": int(fit_rows["dialogue_id"].nunique()),
                     "dialogues": int(larger["dialogue_id"].nunique()),
                     "writer_style": same_dialogue_agreement(writer_style, larger, args.resamples),
                     "baselines": baselines(larger, args.resamples, args.seed, ratings_by_writer=writer_ratings(fit_rows))}

    result = {"within_rater_test_pairs": len(one_rater), "within_rater_train_pairs": len(own_rater_train),
              "head_of_one_rater": head_info, "report_pairs": len(report), "judges": rows,
              "larger_report": larger_report, "seconds": round(time.time() - start, 1)}
    print(f"{'judge':<46} {'within one rater (test)':>28} {'report set':>28}")
    for r in rows:
        w, s = r["within_rater"], r["report"]
        print(f"{r['judge']:<46} {w['accuracy']:>8.1%} [{w['ci_low']:.1%}-{w['ci_high']:.1%}] of {w['pairs']:<4}"
              f" {s['accuracy']:>8.1%} [{s['ci_low']:.1%}-{s['ci_high']:.1%}] of {s['pairs']}")
    lr, b = larger_report, larger_report["baselines"]
    ws = lr["writer_style"]
    print(f"larger report set ({lr['dialogues']} dialogues, {ws['pairs']} pairs; writer-style fitted on "
          f"{lr['fit_dialogues']} train-split dialogues): writer-style {ws['accuracy']:.1%} "
          f"[{ws['ci_low']:.1%}-{ws['ci_high']:.1%}], on the {ws['human_vs_llm_pairs']} human-vs-LLM pairs "
          f"{ws['accuracy_human_vs_llm']:.1%}; " + "; ".join(
              f"{k} {v['accuracy']:.1%} of {v['pairs']}" for k, v in b.items()
              if isinstance(v, dict) and v.get("accuracy") is not None))
    print(f"{result['seconds']} s in all", file=sys.stderr)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, default=float)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
