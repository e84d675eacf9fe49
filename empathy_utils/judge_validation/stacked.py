"""The stacked judge: a regularized logistic (Bradley-Terry) model over the likelihood judge's score
and simple features of each reply, fitted on train-split rated pairs only.

Each reply gets a feature vector f(reply) — the likelihood judge's score, log word count, and counts
of questions, exclamations and second-person words per word; the model scores w . f and prefers the
higher score, P(A better) = sigmoid(w . (f(A) - f(B))) — order-free by construction. Its L2 strength
is chosen by cross-validation grouped by dialogue (train split only)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ..errors import StudyError
from ..judges import LikelihoodJudge, ScoreJudge, word_count

FEATURES = ("likelihood", "log_words", "questions", "exclamations", "second_person")
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself)\b", re.IGNORECASE)


def text_features(reply: str) -> list[float]:
    words = max(1, word_count(reply))
    text = str(reply)
    return [math.log(words), text.count("?") / words, text.count("!") / words,
            len(_SECOND_PERSON.findall(text)) / words]


class StackedJudge(ScoreJudge):
    kind = "stacked"
    gives_probability = True

    def __init__(self, likelihood: LikelihoodJudge | None, weights, scale, train_pairs: int, tie_margin: float = 0.0):
        self.likelihood = likelihood
        self.weights = np.asarray(weights, dtype=float)
        self.scale = np.asarray(scale, dtype=float)
        self.train_pairs = train_pairs
        self.tie_margin = tie_margin
        over = (f"the {likelihood.name.split(' (')[0]} score, reply length and wording" if likelihood is not None
                else "reply length and wording only")
        self.name = f"stacked judge (logistic model over {over}; fitted on {train_pairs} LLMs-vs-Humans train-split pairs)"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURES if self.likelihood is not None else FEATURES[1:]

    def features(self, prompts, replies) -> np.ndarray:
        rest = np.array([text_features(r) for r in replies], dtype=float).reshape(len(replies), len(FEATURES) - 1)
        if self.likelihood is not None:
            rest = np.column_stack([self.likelihood.score(prompts, replies), rest])
        return rest / self.scale

    def score(self, prompts, replies):
        return self.features(prompts, replies) @ self.weights


def fit_stacked(pairs: pd.DataFrame, likelihood: LikelihoodJudge | None,
                c_grid=(0.01, 0.1, 1.0, 10.0)) -> tuple[StackedJudge, dict]:
    """Fit on ``pairs``, which must all be train-split pairs (checked). ``likelihood`` None: the text
    features alone (a reference for what the likelihood adds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    if len(pairs) < 10:
        raise StudyError(f"the stacked judge needs at least 10 rated pairs to fit (got {len(pairs)})")
    if set(pairs["split"]) != {"train"}:
        raise StudyError("the stacked judge is fitted on train-split pairs only; got splits "
                         f"{sorted(set(pairs['split']))}")
    width = len(FEATURES) if likelihood is not None else len(FEATURES) - 1
    shell = StackedJudge(likelihood, np.zeros(width), np.ones(width), len(pairs))
    prompts = list(zip(pairs["context"], pairs["utterance"]))
    fa = shell.features(prompts, list(pairs["response_a"]))
    fb = shell.features(prompts, list(pairs["response_b"]))
    diff = fa - fb
    scale = diff.std(axis=0)
    scale[scale == 0] = 1.0
    y = (pairs["human"] == "a").to_numpy().astype(int)
    X = np.vstack([diff, -diff]) / scale
    Y = np.concatenate([y, 1 - y])
    groups = np.concatenate([pairs["dialogue_id"].to_numpy()] * 2)
    folds = min(5, len(set(groups)))
    cv = {}
    for c in c_grid:
        scores = [LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(X[tr], Y[tr]).score(X[te], Y[te])
                  for tr, te in GroupKFold(n_splits=folds).split(X, Y, groups)]
        cv[c] = float(np.mean(scores))
    best = max(cv, key=lambda c: (cv[c], -c))
    model = LogisticRegression(C=best, fit_intercept=False, max_iter=2000).fit(X, Y)
    judge = StackedJudge(likelihood, model.coef_[0], scale, len(pairs))
    info = {"C": best, "cv_accuracy": cv[best], "cv": {str(k): v for k, v in cv.items()}, "pairs": len(pairs),
            "dialogues": int(pairs["dialogue_id"].nunique()), "features": list(shell.feature_names),
            "weights": dict(zip(shell.feature_names, map(float, model.coef_[0]))), "scale": [float(x) for x in scale],
            "likelihood": likelihood.settings() if likelihood is not None else None}
    return judge, info
