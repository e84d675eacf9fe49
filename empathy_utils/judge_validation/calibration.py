"""Calibrated verdicts: a judge's score difference turned into a probability that reply A is the
better one (a temperature fitted on the selection set), a tie band |p_a - 0.5| < delta chosen on the
selection set, and the reliability of those probabilities on the report set."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .measurement import agreement

# Tie bands tried on the selection set; the widest allowed leaves at most MAX_BAND_TIES of pairs tied.
TIE_BAND_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)
MAX_BAND_TIES = 0.25


def fit_temperature(diffs: list[float], human: list[str]) -> float | None:
    """T such that P(A better) = sigmoid(diff / T) fits the human preferences (maximum likelihood,
    no intercept: swapping the sides must swap the probability). None when the scores point the wrong
    way or carry nothing (the judge then gives no probability)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(diffs, dtype=float)
    y = np.array([h == "a" for h in human], dtype=int)
    keep = np.isfinite(x) & (x != 0)
    if keep.sum() < 4 or len(set(y[keep])) < 2:
        return None
    X = np.concatenate([x[keep], -x[keep]])[:, None]
    Y = np.concatenate([y[keep], 1 - y[keep]])
    slope = float(LogisticRegression(C=1e4, fit_intercept=False, max_iter=1000).fit(X, Y).coef_[0, 0])
    return 1.0 / slope if slope > 1e-9 else None


def probabilities(diffs, temperature: float) -> list[float]:
    return [1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, d / temperature)))) for d in diffs]


def banded_verdicts(p_a: list[float | None], delta: float) -> list[str]:
    """a / b by the probability; a tie inside the band |p_a - 0.5| < delta (and at exactly 0.5)."""
    out = []
    for p in p_a:
        if p is None or abs(p - 0.5) < delta or p == 0.5:
            out.append("tie")
        else:
            out.append("a" if p > 0.5 else "b")
    return out


def choose_tie_band(p_a: list[float], human: list[str], grid=TIE_BAND_GRID,
                    max_ties: float = MAX_BAND_TIES) -> dict:
    """The delta of ``grid`` with the best agreement (ties half) on these (selection) pairs, among
    those tying at most ``max_ties`` of them; the smaller delta on equal agreement."""
    tried = []
    for delta in grid:
        verdicts = banded_verdicts(p_a, delta)
        scores = [s for s in agreement(verdicts, human) if s is not None]
        ties = sum(v == "tie" for v in verdicts) / max(1, len(verdicts))
        tried.append({"delta": float(delta), "accuracy": float(np.mean(scores)) if scores else float("nan"),
                      "tie_rate": ties})
    allowed = [t for t in tried if t["tie_rate"] <= max_ties] or tried[:1]
    best = max(allowed, key=lambda t: (t["accuracy"], -t["delta"]))
    return {"delta": best["delta"], "grid": tried, "max_ties": max_ties}


def reliability(p_a: list[float | None], human: list[str], bins: int = 5) -> pd.DataFrame:
    """Per bin of the judge's probability that A is better: the mean probability, how often people
    preferred A, and the number of pairs (a calibrated judge has the two equal)."""
    rows = [(p, h == "a") for p, h in zip(p_a, human) if p is not None]
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [(p, y) for p, y in rows if lo <= p < hi or (hi == 1 and p == 1)]
        out.append({"bin": f"{lo:.1f}–{hi:.1f}", "low": float(lo), "high": float(hi), "pairs": len(sel),
                    "mean_p_a": float(np.mean([p for p, _ in sel])) if sel else float("nan"),
                    "people_prefer_a": float(np.mean([y for _, y in sel])) if sel else float("nan")})
    return pd.DataFrame(out)


def reliability_figure(tables: dict[str, pd.DataFrame]):
    """Reliability diagram: one line per judge (its mean p_a per bin against how often people
    preferred A there), the diagonal being perfect calibration. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    import textwrap

    fig, ax = plt.subplots(figsize=(7, 5 + 0.4 * len(tables)))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, table in tables.items():
        t = table[table["pairs"] > 0]
        ax.plot(t["mean_p_a"], t["people_prefer_a"], marker="o", label="\n".join(textwrap.wrap(name, 70)))
        for x, y, n in zip(t["mean_p_a"], t["people_prefer_a"], t["pairs"]):
            ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("judge's probability that reply A is better (bin mean)")
    ax.set_ylabel("share of pairs where people preferred A")
    ax.set_title("Calibration on the report set (numbers: pairs per bin)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.subplots_adjust(bottom=0.2 + 0.06 * len(tables))
    plt.close(fig)  # shown once, where the notebook displays (and glues) it
    return fig
