"""The stacked judge: a regularized logistic (Bradley-Terry) model over other judges' scores and
simple features of each reply, fitted on train-split rated pairs only.

Each reply gets a feature vector f(reply) — the component judges' scores (the likelihood judge's, or
the writer-style, cross-encoder and embedding-head judges'), log word count, and counts of questions,
exclamations and second-person words per word; the model scores w . f and prefers the higher score,
P(A better) = sigmoid(w . (f(A) - f(B))) — order-free by construction. Its L2 strength is chosen by
cross-validation grouped by dialogue (train split only).

A component that was itself trained on the train split would score its own training replies too
well, and the stack would learn to trust it too much. So the stack is fitted on scores the
components give to replies they never saw: the cross-encoder's on train-split dialogues outside its
training set, the writer-style judge's and the embedding head's out of fold (refitted five times,
each time without one fifth of the train-split dialogues). At test time the components are the
full judges, as in any stacked model."""

from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import StudyError
from ..judges import ScoreJudge, word_count

TEXT_FEATURES = ("log_words", "questions", "exclamations", "second_person")
FEATURES = ("likelihood", *TEXT_FEATURES)  # the likelihood+text stack's features, in order
# Judges the judges+text stack can read; each needs its out-of-sample scores for fitting (below).
STACKABLE = ("writer-style", "cross-encoder", "embedding-head")
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself)\b", re.IGNORECASE)


def text_features(reply: str) -> list[float]:
    words = max(1, word_count(reply))
    text = str(reply)
    return [math.log(words), text.count("?") / words, text.count("!") / words,
            len(_SECOND_PERSON.findall(text)) / words]


def _components(components) -> dict[str, ScoreJudge]:
    """A dict of component judges by feature name; a single judge (or None) is the likelihood stack."""
    if components is None:
        return {}
    if isinstance(components, Mapping):
        return dict(components)
    return {"likelihood": components}


class StackedJudge(ScoreJudge):
    kind = "stacked"
    gives_probability = True

    def __init__(self, components, weights, scale, train_pairs: int, tie_margin: float = 0.0):
        self.components = _components(components)
        self.weights = np.asarray(weights, dtype=float)
        self.scale = np.asarray(scale, dtype=float)
        self.train_pairs = train_pairs
        self.tie_margin = tie_margin
        if not self.components:
            over = "reply length and wording only"
        elif set(self.components) == {"likelihood"}:
            over = f"the {self.components['likelihood'].name.split(' (')[0]} score, reply length and wording"
        else:
            over = f"the {', '.join(self.components)} judges' scores, reply length and wording"
        self.name = f"stacked judge (logistic model over {over}; fitted on {train_pairs} LLMs-vs-Humans train-split pairs)"

    @property
    def likelihood(self):
        """The likelihood component (None if the stack reads none): it makes the stack slow."""
        return self.components.get("likelihood")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return (*self.components, *TEXT_FEATURES)

    def raw_features(self, prompts, replies) -> np.ndarray:
        rest = np.array([text_features(r) for r in replies], dtype=float).reshape(len(replies), len(TEXT_FEATURES))
        scores = [np.asarray(judge.score(prompts, replies), dtype=float) for judge in self.components.values()]
        return np.column_stack([*scores, rest]) if scores else rest

    def features(self, prompts, replies) -> np.ndarray:
        return self.raw_features(prompts, replies) / self.scale

    def score(self, prompts, replies):
        return self.features(prompts, replies) @ self.weights


def fit_stacked(pairs: pd.DataFrame, components=None, c_grid=(0.01, 0.1, 1.0, 10.0),
                component_scores: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                ) -> tuple[StackedJudge, dict]:
    """Fit on ``pairs``, which must all be train-split pairs (checked). ``components``: a dict of
    judges by name, one likelihood judge, or None (the text features alone). ``component_scores``:
    for a component trained on the train split, its out-of-sample scores of each pair's replies
    (side a, side b); a component without them (the likelihood judge, which is not trained) scores
    the replies itself."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    if len(pairs) < 10:
        raise StudyError(f"the stacked judge needs at least 10 rated pairs to fit (got {len(pairs)})")
    if set(pairs["split"]) != {"train"}:
        raise StudyError("the stacked judge is fitted on train-split pairs only; got splits "
                         f"{sorted(set(pairs['split']))}")
    components = _components(components)
    given = dict(component_scores or {})
    unknown = set(given) - set(components)
    if unknown:
        raise StudyError(f"component_scores for judges the stack does not read: {sorted(unknown)}")
    prompts = list(zip(pairs["context"], pairs["utterance"]))
    sides = []
    for side in ("a", "b"):
        replies = list(pairs[f"response_{side}"])
        own = StackedJudge({k: j for k, j in components.items() if k not in given}, np.zeros(1), np.ones(1), 0)
        computed = own.raw_features(prompts, replies)  # the scores of components without given ones, then text
        cols, i = [], 0
        for name in components:
            if name in given:
                cols.append(np.asarray(given[name][0 if side == "a" else 1], dtype=float))
            else:
                cols.append(computed[:, i])
                i += 1
        sides.append(np.column_stack([*cols, computed[:, i:]]) if cols else computed)
    diff = sides[0] - sides[1]
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
    judge = StackedJudge(components, model.coef_[0], scale, len(pairs))
    names = judge.feature_names
    single = {n: float(np.mean(np.where(diff[:, k] == 0, 0.5, (diff[:, k] > 0) == (y == 1))))
              for k, n in enumerate(names) if n in components}
    likelihood = components.get("likelihood")
    info = {"C": best, "cv_accuracy": cv[best], "cv": {str(k): v for k, v in cv.items()}, "pairs": len(pairs),
            "dialogues": int(pairs["dialogue_id"].nunique()), "features": list(names),
            "weights": dict(zip(names, map(float, model.coef_[0]))), "scale": [float(x) for x in scale],
            "components": list(components), "component_accuracy_on_fit_pairs": single,
            "out_of_sample_components": sorted(given),
            "likelihood": likelihood.settings() if likelihood is not None else None}
    return judge, info
