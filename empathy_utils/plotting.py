"""Figures of the study. Each names what it measured and who judged it, so it reads on its own."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

STUDENT_LABELS = {"base": "base student", "sft": "SFT student", "dpo": "SFT→DPO student"}


def comparison_label(candidate: str, opponent: str) -> str:
    return f"{STUDENT_LABELS.get(candidate, candidate)} vs {STUDENT_LABELS.get(opponent, opponent)}"


def winrate_figure(results: pd.DataFrame, judge_name: str, title: str = "Win rates") -> plt.Figure:
    """One row per comparison: the win rate (ties count half) with its bootstrap CI, and the raw
    wins/ties/losses counts beside it."""
    n = len(results)
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.75 * n))
    y = list(range(n))[::-1]
    rate = results["win_rate"].to_numpy()
    low = (results["win_rate"] - results["ci_low"]).clip(lower=0).to_numpy()
    high = (results["ci_high"] - results["win_rate"]).clip(lower=0).to_numpy()
    ax.errorbar(rate, y, xerr=[low, high], fmt="o", color="#1f5fa8", ecolor="#1f5fa8", capsize=5, markersize=8)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels([comparison_label(c, o) for c, o in zip(results["candidate"], results["opponent"])])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"win rate of the first-named model (ties count half), {int(results['confidence'].iloc[0] * 100)} % bootstrap CI")
    for yy, (_, r) in zip(y, results.iterrows()):
        extra = f", {r['unparsed']} unparsed" if r["unparsed"] else ""
        ax.annotate(f"W {r['wins']} / T {r['ties']} / L {r['losses']}{extra}", (1.0, yy), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=9, annotation_clip=False)
    wrapped = "\n".join(textwrap.wrap(f"Judge: {judge_name}", 90))
    ax.set_title(f"{title}\n{wrapped}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path
