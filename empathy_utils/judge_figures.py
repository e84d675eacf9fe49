"""Figures of the judges chapter and of the judge stage. Each names its judge(s) and its data in its
title, so it reads on its own."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .presentation import short_judge_name

COLORS = ["#1f5fa8", "#e08a2c", "#3a9a5b", "#b03030", "#7b4fa0", "#8c6d31"]


def _short(name: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(name, width))


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def validation_figure(report: dict) -> plt.Figure:
    """Left: each judge's agreement with people (ties ½) with its 95 % CI, beside the longer-wins
    baseline on the same pairs. Right: how often each judge picks the longer reply, by how much
    longer it is, beside how often people did."""
    from .judge_validation import judge_labels

    judges = report["judges"]
    labels = judge_labels(report)  # short labels; the full names are listed under the table
    base = report["baselines"]
    d = report["data"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 1.8 + 0.9 * max(2, len(judges))),
                                      gridspec_kw={"width_ratios": [1.15, 1]})
    y = list(range(len(judges)))[::-1]
    for yy, j, color in zip(y, judges, COLORS):
        acc, lo, hi = _nan(j["accuracy"]), _nan(j["ci_low"]), _nan(j["ci_high"])
        left.errorbar(acc, yy, xerr=[[max(0, acc - lo)], [max(0, hi - acc)]], fmt="o", color=color, capsize=5,
                      markersize=8)
        left.annotate(f"{100 * acc:.1f} %", (acc, yy), xytext=(0, 9), textcoords="offset points", ha="center",
                      fontsize=8)
    longer = base["longer_wins"]["accuracy"]
    left.axvline(longer, color="#555555", linestyle="--", linewidth=1.2)
    left.annotate(f"longer reply wins: {100 * longer:.1f} %", (longer, len(judges) - 0.4), xytext=(4, 0),
                  textcoords="offset points", fontsize=8, color="#555555")
    left.axvline(0.5, color="#bbbbbb", linestyle=":", linewidth=1)
    left.set_yticks(y)
    left.set_yticklabels([_short(labels[j["name"]]) for j in judges], fontsize=9)
    left.set_ylim(-0.7, len(judges) - 0.1)
    left.set_xlim(0, 1)
    left.set_xlabel("agreement with people (ties count ½), 95 % bootstrap CI over dialogues")
    left.set_title("Which reply would people prefer?", fontsize=10)
    left.grid(axis="x", alpha=0.3)

    bins = list(base["human_by_length"])
    x = np.arange(len(bins))
    people = [_nan(base["human_by_length"][b]["picks_longer"]) for b in bins]
    right.plot(x, people, color="black", linewidth=2.5, marker="s", label="people")
    for j, color in zip(judges, COLORS):
        right.plot(x, [_nan(j["by_length"][b]["picks_longer"]) for b in bins], color=color, marker="o",
                   label=_short(labels[j["name"]], 40))
    right.axhline(0.5, color="#bbbbbb", linestyle=":", linewidth=1)
    right.set_xticks(x)
    right.set_xticklabels([f"{b}\n(n={base['human_by_length'][b]['n']})" for b in bins], fontsize=8)
    right.set_xlabel("how many more words the longer reply has")
    right.set_ylabel("share of pairs given to the longer reply")
    right.set_ylim(0, 1)
    right.set_title("Length bias", fontsize=10)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    right.grid(alpha=0.3)
    fig.suptitle(f"Judges against human ratings on {d['test_pairs']} rated pairs of {d['test_dialogues']} "
                 f"LLMs-vs-Humans test-split dialogues", fontsize=11)
    fig.tight_layout()
    return fig


def emotion_figure(per_emotion: pd.DataFrame, judge_name: str) -> plt.Figure:
    """Heatmap: win rate (ties ½) per emotion and comparison, each cell annotated with its number of
    dialogues (small cells say little)."""
    comparisons = list(dict.fromkeys(per_emotion["comparison"]))
    emotions = sorted(set(per_emotion["emotion"]))
    grid = np.full((len(emotions), len(comparisons)), np.nan)
    counts = np.zeros_like(grid, dtype=int)
    for r in per_emotion.itertuples():
        i, j = emotions.index(r.emotion), comparisons.index(r.comparison)
        grid[i, j] = r.win_rate
        counts[i, j] = r.n
    fig, ax = plt.subplots(figsize=(2.2 + 2.1 * len(comparisons), 1.6 + 0.28 * len(emotions)))
    image = ax.imshow(grid, cmap="RdBu", vmin=0, vmax=1, aspect="auto")
    for i in range(len(emotions)):
        for j in range(len(comparisons)):
            value = grid[i, j]
            text = "—" if math.isnan(value) else f"{100 * value:.0f}% (n={counts[i, j]})"
            dark = not math.isnan(value) and abs(value - 0.5) > 0.3
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(comparisons)))
    ax.set_xticklabels(["\n".join(textwrap.wrap(c, 18)) for c in comparisons], fontsize=8)
    ax.set_yticks(range(len(emotions)))
    ax.set_yticklabels(emotions, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04, label="win rate, ties ½")
    wrapped = "\n".join(textwrap.wrap(f"Judged by {short_judge_name(judge_name)}", 70))
    ax.set_title(f"Win rate of the first-named model by the speaker's emotion\n{wrapped}", fontsize=9)
    fig.tight_layout()
    return fig
