"""Rated pairs of LLMs-vs-Humans, and how they are split into the sets judges are chosen and
reported on."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..data import LVH_SOURCES
from ..errors import StudyError
from ..judges import word_count

SOURCES = list(LVH_SOURCES.values())


def rating_pairs(frame: pd.DataFrame, split: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Every pair of replies to the same dialogue whose human ratings differ, one row per pair.

    Which reply is ``a`` is decided by a seeded coin, so "always pick a" scores 50 % on average.
    ``human`` names the side people preferred (the better-rated reply)."""
    rows = frame if split is None else frame[frame["split"] == split]
    rng = np.random.default_rng(seed)
    out = []
    for _, r in rows.iterrows():
        for s1, s2 in itertools.combinations(SOURCES, 2):
            r1, r2 = int(r[f"rating_{s1}"]), int(r[f"rating_{s2}"])
            if r1 == r2:
                continue
            if rng.random() < 0.5:
                s1, s2, r1, r2 = s2, s1, r2, r1
            a, b = r[f"response_{s1}"], r[f"response_{s2}"]
            out.append({"pair_id": f"{r['dialogue_id']}:{s1}:{s2}", "dialogue_id": r["dialogue_id"],
                        "emotion": r["emotion"], "split": r["split"], "context": r["situation"],
                        "utterance": r["utterance"], "source_a": s1, "source_b": s2, "response_a": a,
                        "response_b": b, "rating_a": r1, "rating_b": r2, "human": "a" if r1 > r2 else "b",
                        "words_a": word_count(a), "words_b": word_count(b)})
    return pd.DataFrame(out)


def sample_pairs(pairs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Whole dialogues in a seeded random order until at least ``n`` pairs (0 = all pairs). Whole
    dialogues keep the bootstrap honest and let scoring judges score each reply once."""
    if n <= 0 or n >= len(pairs):
        return pairs.reset_index(drop=True)
    dialogues = list(dict.fromkeys(pairs["dialogue_id"]))
    order = np.random.default_rng(seed).permutation(len(dialogues))
    counts = pairs["dialogue_id"].value_counts()
    chosen, total = set(), 0
    for i in order:
        chosen.add(dialogues[i])
        total += int(counts[dialogues[i]])
        if total >= n:
            break
    return pairs[pairs["dialogue_id"].isin(chosen)].reset_index(drop=True)


def judge_items(pairs: pd.DataFrame) -> list[dict]:
    return [{"id": r.pair_id, "context": r.context, "utterance": r.utterance, "response_a": r.response_a,
             "response_b": r.response_b} for r in pairs.itertuples()]



def longer_side(pairs: pd.DataFrame) -> list[str | None]:
    return ["a" if wa > wb else "b" if wb > wa else None for wa, wb in zip(pairs["words_a"], pairs["words_b"])]


def _subsample_pairs(pairs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if n <= 0 or n >= len(pairs):
        return pairs.reset_index(drop=True)
    return pairs.sample(n=n, random_state=seed).reset_index(drop=True)


def training_rows(frame: pd.DataFrame, dialogues: int, seed: int) -> pd.DataFrame:
    """The **train split** of ``frame``: every dialogue (``dialogues`` 0) or a seeded subsample of that
    many whole dialogues, the rows every learned judge learns from."""
    train = frame[frame["split"] == "train"]
    ids = sorted(train["dialogue_id"].unique())
    if dialogues <= 0 or dialogues >= len(ids):
        return train
    keep = set(np.random.default_rng(seed).choice(ids, size=dialogues, replace=False).tolist())
    return train[train["dialogue_id"].isin(keep)]


def train_pairs_of(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rated pairs of the **train split** only: what every learned judge is trained on."""
    train = frame[frame["split"] == "train"]
    pairs = rating_pairs(train, seed=seed)
    if len(pairs) and set(pairs["split"]) != {"train"}:  # pragma: no cover - guarded by the filter above
        raise StudyError("a learned judge was about to see test-split dialogues")
    return pairs



def split_selection_report(pairs: pd.DataFrame, seed: int, selection_share: float = 0.5
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rated pairs by dialogue into a *selection* set (judges, framings and tie bands are
    chosen on it) and a disjoint *report* set (the accuracy the book prints). A seeded shuffle of the
    sorted dialogue ids; the first ``selection_share`` of dialogues go to selection."""
    if not 0 < selection_share < 1:
        raise StudyError(f"selection_share must lie strictly between 0 and 1 (got {selection_share})")
    dialogues = sorted(set(pairs["dialogue_id"]))
    order = np.random.default_rng(seed).permutation(len(dialogues))
    cut = int(round(selection_share * len(dialogues)))
    chosen = {dialogues[i] for i in order[:cut]}
    is_selection = pairs["dialogue_id"].isin(chosen)
    return pairs[is_selection].reset_index(drop=True), pairs[~is_selection].reset_index(drop=True)


def within_rater_pairs(frame: pd.DataFrame, split: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Every pair of replies **one rater** rated differently, one row per pair, each side with its own
    dialogue (in LLMs-vs-Humans a rater rated ten replies of one writer to ten different dialogues).

    Who rated and who wrote are the same on both sides, so the rater's generosity and the writer's
    style cancel: what is left for a judge is what was written. Only judges that score each reply alone
    can judge such a pair (the two replies answer different speakers). ``split`` keeps the pairs whose
    two dialogues are both in it; ``human`` names the side the rater rated higher; which reply is ``a``
    is a seeded coin. Empty when the file names no raters."""
    if not all(f"rater_{s}" in frame for s in SOURCES):
        return pd.DataFrame()
    rows = frame if split is None else frame[frame["split"] == split]
    replies = pd.concat([pd.DataFrame({"rater": rows[f"rater_{s}"].to_numpy(), "writer": s,
                                       "dialogue_id": rows["dialogue_id"].to_numpy(),
                                       "context": rows["situation"].to_numpy(), "utterance": rows["utterance"].to_numpy(),
                                       "response": rows[f"response_{s}"].astype(str).to_numpy(),
                                       "rating": rows[f"rating_{s}"].astype(int).to_numpy()}) for s in SOURCES],
                        ignore_index=True)
    rng = np.random.default_rng(seed)
    out = []
    for rater, group in replies.groupby("rater", sort=True):
        for (_, x), (_, y) in itertools.combinations(group.iterrows(), 2):
            if x["rating"] == y["rating"]:
                continue
            if rng.random() < 0.5:
                x, y = y, x
            out.append({"pair_id": f"{rater}:{x['dialogue_id']}:{y['dialogue_id']}", "rater": rater,
                        "writer_a": x["writer"], "writer_b": y["writer"],
                        "dialogue_a": x["dialogue_id"], "dialogue_b": y["dialogue_id"],
                        "context_a": x["context"], "utterance_a": x["utterance"], "response_a": x["response"],
                        "context_b": y["context"], "utterance_b": y["utterance"], "response_b": y["response"],
                        "rating_a": int(x["rating"]), "rating_b": int(y["rating"]),
                        "human": "a" if x["rating"] > y["rating"] else "b"})
    return pd.DataFrame(out)
