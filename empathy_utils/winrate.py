"""Win rates from pairwise verdicts, with bootstrap confidence intervals.

Two definitions are reported side by side:
- ours (FastChat / Arena-Hard): ``(wins + ties / 2) / judged``, where unparsed verdicts are left out
  of the denominator and reported on their own;
- the paper's (Xie et al., as released): ``wins / all pairs`` — ties and unreadable verdicts count for
  neither side, so the two sides can sum to less than 100 %.
The confidence interval is a percentile bootstrap over dialogues (scipy.stats.bootstrap).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import stats

SCORES = {"a": 1.0, "tie": 0.5, "b": 0.0}


def summarize(verdicts: list[str], resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Counts, both win-rate definitions and a bootstrap CI for the candidate (side ``a``)."""
    counts = Counter(verdicts)
    wins, ties, losses, unparsed = (counts.get(k, 0) for k in ("a", "tie", "b", "unparsed"))
    judged = wins + ties + losses
    total = judged + unparsed
    out = {
        "pairs": total,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unparsed": unparsed,
        "win_rate": (wins + 0.5 * ties) / judged if judged else float("nan"),
        "paper_win_rate": wins / total if total else float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "confidence": confidence,
    }
    scores = np.array([SCORES[v] for v in verdicts if v in SCORES])
    if len(scores) >= 2:
        if np.all(scores == scores[0]):
            out["ci_low"] = out["ci_high"] = float(scores[0])
        else:
            res = stats.bootstrap((scores,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                  method="percentile", random_state=np.random.default_rng(seed))
            out["ci_low"] = float(res.confidence_interval.low)
            out["ci_high"] = float(res.confidence_interval.high)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v) if isinstance(v, (int, np.integer)) else v)
            for k, v in out.items()}


# ------------------------------------------------------------------- length-controlled win rate
def _fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iterations: int = 50) -> tuple[float, float]:
    """Logistic regression of fractional targets ``y`` (1 win, ½ tie, 0 loss) on one feature ``x``
    with an intercept, by Newton's method with a small ridge penalty (finite with separable data)."""
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ beta, -30, 30)))
        grad = X.T @ (p - y) + ridge * beta
        hess = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[0]), float(beta[1])


# The length-controlled rate is read at zero length difference only when at least this share of
# pairs lies on each side of it; otherwise the fit would be extrapolated.
LC_MIN_SHARE_EACH_SIDE = 0.05


def length_controlled(verdicts: list[str], length_diff: list[float], resamples: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> dict:
    """AlpacaEval-style length-controlled win rate: regress the verdict (a = 1, tie = ½, b = 0) on
    ``tanh(Δ / sd(Δ))``, Δ = words(a) − words(b), and read the fitted win rate at Δ = 0. Also the
    slope (how strongly the verdicts follow length) and a percentile bootstrap CI. Unparsed verdicts
    are left out. When nearly every pair has the candidate longer (or shorter), zero difference is
    outside the data and the rate is NaN, with the reason in ``lc_note``."""
    keep = [(SCORES[v], float(d)) for v, d in zip(verdicts, length_diff) if v in SCORES]
    out = {"lc_win_rate": float("nan"), "lc_ci_low": float("nan"), "lc_ci_high": float("nan"),
           "length_slope": float("nan"), "mean_length_diff": float("nan"), "lc_note": ""}
    if len(keep) < 2:
        out["lc_note"] = "not estimated: fewer than two judged pairs"
        return out
    y = np.array([k[0] for k in keep])
    diff = np.array([k[1] for k in keep])
    out["mean_length_diff"] = float(diff.mean())
    shorter, longer = float(np.mean(diff <= 0)), float(np.mean(diff >= 0))
    if min(shorter, longer) < LC_MIN_SHARE_EACH_SIDE:
        # Equal length lies (almost) outside the data: reading the fit there is extrapolation.
        out["lc_note"] = (f"not estimated: the candidate's reply is the {'longer' if longer > shorter else 'shorter'} "
                          f"one in {100 * max(shorter, longer):.0f} % of pairs (length differences "
                          f"{diff.min():+.0f} to {diff.max():+.0f} words), so equal length lies outside what was "
                          "observed")
        return out
    scale = diff.std()

    def fit(yy, dd):
        x = np.tanh(dd / scale) if scale > 0 else np.zeros_like(dd)
        b0, b1 = _fit_logistic(x, yy)
        return 1.0 / (1.0 + np.exp(-b0)), b1

    rate, slope = fit(y, diff)
    out.update(lc_win_rate=float(rate), length_slope=float(slope))
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        boot.append(fit(y[idx], diff[idx])[0])
    alpha = (1 - confidence) / 2
    out["lc_ci_low"], out["lc_ci_high"] = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha]))
    return out


# --------------------------------------------------------------------------- groups, clusters
def by_group(verdicts: list[str], groups: list[str]) -> dict[str, dict]:
    """Wins, ties, losses, unparsed and the win rate (ties ½) per group (e.g. per emotion)."""
    out: dict[str, dict] = {}
    for v, g in zip(verdicts, groups):
        c = out.setdefault(g, {"n": 0, "wins": 0, "ties": 0, "losses": 0, "unparsed": 0})
        c["n"] += 1
        c[{"a": "wins", "tie": "ties", "b": "losses"}.get(v, "unparsed")] += 1
    for c in out.values():
        judged = c["wins"] + c["ties"] + c["losses"]
        c["win_rate"] = (c["wins"] + 0.5 * c["ties"]) / judged if judged else float("nan")
    return dict(sorted(out.items()))


def cluster_bootstrap(values: list[float], clusters: list[str], resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and a percentile bootstrap CI that resamples whole clusters (pairs from the
    same dialogue are not independent)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    keys = list(dict.fromkeys(clusters))
    index = {k: i for i, k in enumerate(keys)}
    cid = np.array([index[c] for c in clusters])
    sums = np.bincount(cid, weights=values, minlength=len(keys))
    counts = np.bincount(cid, minlength=len(keys)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(resamples, len(keys)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(values.mean()), float(low), float(high)
