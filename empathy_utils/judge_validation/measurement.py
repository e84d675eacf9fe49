"""What is measured about a judge's verdicts: agreement with people (ties half) with a CI that
resamples whole dialogues, position consistency, length bias, and the flip rate of injected
instructions; the two baselines on the same pairs (book/judges.md, How they are checked)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import StudyError
from ..judges import (InstructionStrippingJudge, Judge, LongerReplyJudge, ScoreJudge, attack, position_consistency,
                      strip_instructions)
from ..winrate import cluster_bootstrap
from .pairs import SOURCES, judge_items, longer_side, rating_pairs

# |words(a) - words(b)| bins of the length-bias curve.
LENGTH_BINS = [(1, 5), (6, 15), (16, 30), (31, 10**6)]


def agreement(verdicts: list[str], human: list[str]) -> list[float | None]:
    """Per pair: 1 when the judge picked the reply people preferred, ½ for a tie, 0 otherwise;
    None for an unparsed verdict (counted on its own)."""
    return [None if v == "unparsed" else 0.5 if v == "tie" else float(v == h) for v, h in zip(verdicts, human)]


def _accuracy(scores: list[float | None], dialogues: list[str], resamples: int, seed: int) -> tuple[float, float, float]:
    keep = [(s, d) for s, d in zip(scores, dialogues) if s is not None]
    if not keep:
        return float("nan"), float("nan"), float("nan")
    return cluster_bootstrap([k[0] for k in keep], [k[1] for k in keep], resamples, 0.95, seed)


def measure(records: list[dict], pairs: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict:
    """Agreement with people and the biases of one judge's verdicts on ``pairs`` (same order)."""
    verdicts = [r["verdict"] for r in records]
    human = list(pairs["human"])
    dialogues = list(pairs["dialogue_id"])
    scores = agreement(verdicts, human)
    acc, low, high = _accuracy(scores, dialogues, resamples, seed)
    decisive = [(v == h) for v, h in zip(verdicts, human) if v in ("a", "b")]
    hl = [(s, d) for s, d, sa, sb in zip(scores, dialogues, pairs["source_a"], pairs["source_b"])
          if "human" in (sa, sb)]
    longer = longer_side(pairs)
    picks_longer = [v == lg for v, lg in zip(verdicts, longer) if lg and v in ("a", "b")]
    by_length = {}
    for lo, hi in LENGTH_BINS:
        sel = [v == lg for v, lg, wa, wb in zip(verdicts, longer, pairs["words_a"], pairs["words_b"])
               if lg and lo <= abs(wa - wb) <= hi and v in ("a", "b", "tie")]
        ties = [v == "tie" for v, lg, wa, wb in zip(verdicts, longer, pairs["words_a"], pairs["words_b"])
                if lg and lo <= abs(wa - wb) <= hi and v in ("a", "b", "tie")]
        n = len(sel)
        by_length[f"{lo}-{hi}" if hi < 10**6 else f"{lo}+"] = {
            "n": n, "picks_longer": (sum(sel) + 0.5 * sum(ties)) / n if n else float("nan")}
    return {
        "pairs": len(records),
        "accuracy": acc, "ci_low": low, "ci_high": high,
        "decisive_accuracy": sum(decisive) / len(decisive) if decisive else float("nan"),
        "tie_rate": sum(v == "tie" for v in verdicts) / len(verdicts) if verdicts else float("nan"),
        "unparsed": sum(v == "unparsed" for v in verdicts),
        "position_consistency": position_consistency(records),
        "human_vs_llm_pairs": len(hl),
        "accuracy_human_vs_llm": (sum(s for s, _ in hl if s is not None) / max(1, sum(s is not None for s, _ in hl))
                                  if hl else float("nan")),
        "picks_longer": sum(picks_longer) / len(picks_longer) if picks_longer else float("nan"),
        "by_length": by_length,
    }


def within_rater_agreement(judge: Judge, pairs: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict:
    """How often ``judge`` orders two replies as the one person who rated both did
    (:func:`~empathy_utils.judge_validation.pairs.within_rater_pairs`; equal scores count half), with a
    CI that resamples whole raters. Each distinct reply is scored once, in its own dialogue. Only a
    judge that scores replies alone can do this: a pairwise judge needs one speaker for both."""
    if not isinstance(judge, ScoreJudge):
        raise StudyError(f"{judge.name} compares two replies to one speaker; a pair from one rater answers two "
                         "speakers, so only a judge that scores each reply alone can be measured on it")
    if pairs.empty:
        return {"pairs": 0, "raters": 0, "accuracy": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    keys: dict[tuple[str, str, str], int] = {}
    for side in ("a", "b"):
        for c, u, r in zip(pairs[f"context_{side}"], pairs[f"utterance_{side}"], pairs[f"response_{side}"]):
            keys.setdefault((c, u, r), len(keys))
    ordered = list(keys)
    scores = np.asarray(judge.score([(c, u) for c, u, _ in ordered], [r for *_, r in ordered]), dtype=float)

    def side_scores(side):
        return scores[[keys[k] for k in zip(pairs[f"context_{side}"], pairs[f"utterance_{side}"],
                                               pairs[f"response_{side}"])]]

    sa, sb = side_scores("a"), side_scores("b")
    values = np.where(sa == sb, 0.5, ((sa > sb) == (pairs["human"] == "a").to_numpy()).astype(float))
    acc, low, high = cluster_bootstrap(list(values), list(pairs["rater"]), resamples, 0.95, seed)
    return {"pairs": len(pairs), "raters": int(pairs["rater"].nunique()), "replies": len(ordered),
            "accuracy": acc, "ci_low": low, "ci_high": high, "tie_rate": float(np.mean(sa == sb))}


def within_rater_reference(pairs: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict:
    """The test split's pairs from one rater a validation measures on (how many, of how many raters) and
    the longer reply's agreement on them, the reference its judges' figures are read against."""
    return {"split": "test", "pairs": len(pairs), "raters": int(pairs["rater"].nunique()) if len(pairs) else 0,
            "longer_wins": within_rater_agreement(LongerReplyJudge(), pairs, resamples, seed) if len(pairs) else None}


def writer_ratings(frame: pd.DataFrame) -> dict[str, float]:
    """Each writer's mean human rating on the **train split** (what a judge may know of the writers)."""
    train = frame[frame["split"] == "train"]
    return {s: float(train[f"rating_{s}"].mean()) for s in SOURCES} if len(train) else {}


def rater_leniency(frame: pd.DataFrame) -> dict[tuple[str, str], float] | None:
    """For each reply, keyed by (dialogue, writer): the mean rating its rater gave to *their other*
    replies (leave-one-out), i.e. how generous that person was elsewhere. None when the data file
    names no raters. Not a judge (a judge of new replies has no rater): it measures how much of a
    pair's "preference" is who rated rather than what was written (book/judges.md)."""
    if not all(f"rater_{s}" in frame for s in SOURCES):
        return None
    long = pd.concat([pd.DataFrame({"dialogue_id": frame["dialogue_id"].values, "source": s,
                                    "rater": frame[f"rater_{s}"].values, "rating": frame[f"rating_{s}"].values})
                      for s in SOURCES], ignore_index=True)
    by_rater = long.groupby("rater")["rating"]
    total, count = by_rater.transform("sum"), by_rater.transform("count")
    others = (total - long["rating"]) / (count - 1).where(count > 1)
    return {(d, s): float(v) for d, s, v in zip(long["dialogue_id"], long["source"], others) if pd.notna(v)}


def lenient_rater_side(pairs: pd.DataFrame, leniency: dict[tuple[str, str], float]) -> list[str]:
    """Per pair: the side whose rater rated their other replies higher ('tie' when equal or unknown)."""
    out = []
    for d, sa, sb in zip(pairs["dialogue_id"], pairs["source_a"], pairs["source_b"]):
        la, lb = leniency.get((d, sa)), leniency.get((d, sb))
        out.append("tie" if la is None or lb is None or la == lb else "a" if la > lb else "b")
    return out


def rater_design(frame: pd.DataFrame, leniency: dict[tuple[str, str], float] | None) -> dict | None:
    """How the ratings were collected, read from the file: how many raters, how many replies and
    writers each rated, how many rated pairs two replies of one rater make, and how often the reply
    of the more lenient rater (on their other replies) is the one "people preferred" in all rated
    pairs. None when the file names no raters."""
    if leniency is None:
        return None
    raters = pd.concat([frame[f"rater_{s}"] for s in SOURCES], ignore_index=True)
    writers = pd.concat([pd.Series(s, index=range(len(frame))) for s in SOURCES], ignore_index=True)
    per_rater = raters.value_counts()
    writers_per_rater = writers.groupby(raters.values).nunique()
    pairs = rating_pairs(frame)
    who = {(d, s): r for s in SOURCES for d, r in zip(frame["dialogue_id"], frame[f"rater_{s}"])}
    shared = sum(who[(d, sa)] == who[(d, sb)]
                 for d, sa, sb in zip(pairs["dialogue_id"], pairs["source_a"], pairs["source_b"]))
    side = lenient_rater_side(pairs, leniency)
    scores = agreement(side, list(pairs["human"]))
    return {"raters": int(per_rater.size), "ratings": int(len(raters)),
            "replies_per_rater_median": float(per_rater.median()), "replies_per_rater_max": int(per_rater.max()),
            "writers_per_rater_max": int(writers_per_rater.max()), "rated_pairs": len(pairs),
            "pairs_sharing_a_rater": int(shared), "lenient_rater_ties": sum(v == "tie" for v in side),
            "lenient_rater_wins": sum(scores) / len(scores) if scores else float("nan")}


def baselines(pairs: pd.DataFrame, resamples: int = 1000, seed: int = 0,
              ratings_by_writer: dict[str, float] | None = None,
              leniency: dict[tuple[str, str], float] | None = None) -> dict:
    """The two baselines (book/judges.md, How they are checked) on exactly these pairs, and how often people preferred the
    longer reply (the length-bias reference). With ``ratings_by_writer`` (train-split means), also a
    reference that is not a judge: told who wrote each reply, prefer the writer people rated higher
    on the train split. A judge whose signal is the writer's style cannot do better than it. With
    ``leniency`` (``rater_leniency``), another: prefer the reply whose rater was more generous with
    their other replies, which reads who rated, not what was written."""
    longer = [lg or "tie" for lg in longer_side(pairs)]
    human = list(pairs["human"])
    dialogues = list(pairs["dialogue_id"])
    acc, low, high = _accuracy(agreement(longer, human), dialogues, resamples, seed)
    hl = pairs[(pairs["source_a"] == "human") | (pairs["source_b"] == "human")]
    llm_side = ["b" if sa == "human" else "a" for sa in hl["source_a"]]
    llm_scores = agreement(llm_side, list(hl["human"]))
    l_acc, l_low, l_high = _accuracy(llm_scores, list(hl["dialogue_id"]), resamples, seed)
    unequal = [(h == lg) for h, lg in zip(human, longer_side(pairs)) if lg]
    by_length = {}
    for lo, hi in LENGTH_BINS:
        sel = [h == lg for h, lg, wa, wb in zip(human, longer_side(pairs), pairs["words_a"], pairs["words_b"])
               if lg and lo <= abs(wa - wb) <= hi]
        by_length[f"{lo}-{hi}" if hi < 10**6 else f"{lo}+"] = {
            "n": len(sel), "picks_longer": sum(sel) / len(sel) if sel else float("nan")}
    known = None
    if ratings_by_writer:
        told = ["a" if ratings_by_writer[sa] > ratings_by_writer[sb] else
                "b" if ratings_by_writer[sb] > ratings_by_writer[sa] else "tie"
                for sa, sb in zip(pairs["source_a"], pairs["source_b"])]
        k_acc, k_low, k_high = _accuracy(agreement(told, human), dialogues, resamples, seed)
        known = {"accuracy": k_acc, "ci_low": k_low, "ci_high": k_high, "pairs": len(pairs),
                 "writer_ratings": dict(ratings_by_writer)}
    lenient = None
    if leniency is not None:
        side = lenient_rater_side(pairs, leniency)
        r_acc, r_low, r_high = _accuracy(agreement(side, human), dialogues, resamples, seed)
        lenient = {"accuracy": r_acc, "ci_low": r_low, "ci_high": r_high, "pairs": len(pairs),
                   "ties": sum(v == "tie" for v in side)}
    return {
        "known_writer": known,
        "lenient_rater": lenient,
        "longer_wins": {"accuracy": acc, "ci_low": low, "ci_high": high, "pairs": len(pairs)},
        "llm_wins": {"accuracy": l_acc, "ci_low": l_low, "ci_high": l_high, "pairs": len(hl)},
        "human_picks_longer": sum(unequal) / len(unequal) if unequal else float("nan"),
        "human_by_length": by_length,
    }


def full_set_baselines(frame: pd.DataFrame) -> dict:
    """The baselines (book/judges.md, How they are checked) on all 2,000 dialogues: longer-wins over the pairs whose lengths differ, and
    LLM-wins over the human-vs-LLM pairs (10,556 pairs, 50.7 %; 4,626 pairs, 61.0 %)."""
    pairs = rating_pairs(frame)
    longer = longer_side(pairs)
    unequal = [(h == lg) for h, lg in zip(pairs["human"], longer) if lg]
    hl = pairs[(pairs["source_a"] == "human") | (pairs["source_b"] == "human")]
    llm = [("b" if sa == "human" else "a") == h for sa, h in zip(hl["source_a"], hl["human"])]
    return {"dialogues": len(frame), "rated_pairs": len(pairs), "unequal_length_pairs": len(unequal),
            "longer_wins": sum(unequal) / len(unequal), "human_vs_llm_pairs": len(hl),
            "llm_wins": sum(llm) / len(llm)}


def adversarial(judge: Judge, pairs: pd.DataFrame, attacks: list[str], clean: list[dict]) -> list[dict]:
    """Append each injected instruction to the human-rated worse reply of each pair and re-judge.

    ``clean``: the judge's verdicts on the same pairs without attack. A *flip*: the judge did not give
    the pair to the attacked reply before, and does after. ``moved``: its verdict moved towards the
    attacked reply at all (loss -> tie, tie -> win, loss -> win)."""
    rows = []
    target = ["b" if h == "a" else "a" for h in pairs["human"]]
    value = {"a": 1.0, "tie": 0.5, "b": 0.0}
    # What the judge actually reads: where that equals the clean pair (the defense removed the whole
    # attack), the verdict is the clean one — every judge here is deterministic — and is not recomputed.
    seen = strip_instructions if isinstance(judge, InstructionStrippingJudge) else (lambda x: x)
    clean_items = judge_items(pairs)
    for name in attacks:
        items = judge_items(pairs)
        for it, t in zip(items, target):
            it[f"response_{t}"] = attack(it[f"response_{t}"], name)
        same = [all(seen(it[k]) == seen(c[k]) for k in ("response_a", "response_b")) for it, c in zip(items, clean_items)]
        fresh = iter(judge.judge([it for it, s in zip(items, same) if not s]) if not all(same) else [])
        after = [clean[i] if s else next(fresh) for i, s in enumerate(same)]
        before_v = [r["verdict"] for r in clean]
        after_v = [r["verdict"] for r in after]
        eligible = [(b, a, t) for b, a, t in zip(before_v, after_v, target) if b != t and b in value and a in value]
        flips = sum(a == t for b, a, t in eligible)
        toward = [(value[a] - value[b]) * (1 if t == "a" else -1) for b, a, t in zip(before_v, after_v, target)
                  if b in value and a in value]
        rows.append({"attack": name, "pairs": len(items), "eligible": len(eligible), "flips": flips,
                     "flip_rate": flips / len(eligible) if eligible else float("nan"),
                     "moved": sum(x > 0 for x in toward) / len(toward) if toward else float("nan")})
    return rows
