"""Figures of the study. Each names what it measured and who judged it, so it reads on its own."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .presentation import short_judge_name

STUDENT_LABELS = {
    "base": "base student", "sft": "SFT student", "dpo": "SFT→DPO student", "teacher": "teacher",
    # replies that LLMs-vs-Humans holds for the test dialogues
    "human": "human listener (data)", "gpt4": "GPT-4 (data)", "llama2": "LLaMA-2-70B (data)",
    "gemini": "Gemini-1.0-Pro (data)", "mixtral": "Mixtral-8x7B (data)",
}


def comparison_label(candidate: str, opponent: str) -> str:
    return f"{STUDENT_LABELS.get(candidate, candidate)} vs {STUDENT_LABELS.get(opponent, opponent)}"


def winrate_figure(results: pd.DataFrame, judge_name: str, title: str = "Win rates") -> plt.Figure:
    """One row per comparison: the win rate (ties ½) with its bootstrap CI, the length-controlled win
    rate (hollow diamond, where estimated), and the wins / ties / losses beside it. Rows are labelled
    by ``comparison`` (else by candidate and opponent)."""
    import numpy as np

    n = len(results)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.8 * n))
    y = np.arange(n)[::-1]
    rate = results["win_rate"].to_numpy(dtype=float)
    low = np.clip(rate - results["ci_low"].to_numpy(dtype=float), 0, None)
    high = np.clip(results["ci_high"].to_numpy(dtype=float) - rate, 0, None)
    ax.errorbar(rate, y, xerr=[low, high], fmt="o", color="#1f5fa8", ecolor="#1f5fa8", capsize=5, markersize=8,
                label="win rate (ties ½), bootstrap CI")
    if "lc_win_rate" in results:
        ax.plot(results["lc_win_rate"].to_numpy(dtype=float), y + 0.18, "D", markerfacecolor="none",
                markeredgecolor="#e08a2c", markersize=8, label="length-controlled win rate")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    labels = (results["comparison"] if "comparison" in results else
              [comparison_label(c, o) for c, o in zip(results["candidate"], results["opponent"])])
    ax.set_yticklabels(list(labels))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.8, n - 0.2 + 0.5)
    conf = int(round(float(results["confidence"].iloc[0]) * 100)) if n else 95
    ax.set_xlabel(f"win rate of the first-named model ({conf} % bootstrap CI)")
    for yy, (_, r) in zip(y, results.iterrows()):
        extra = f", {r['unparsed']} unparsed" if r["unparsed"] else ""
        ax.annotate(f"W {r['wins']} / T {r['ties']} / L {r['losses']}{extra}", (1.0, yy), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=9, annotation_clip=False)
    ax.legend(fontsize=8, loc="lower left")
    wrapped = "\n".join(textwrap.wrap(f"Judged by {short_judge_name(judge_name)}", 95))
    ax.set_title(f"{title}\n{wrapped}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def dataset_figure(lengths: pd.DataFrame, coverage: pd.DataFrame, title: str) -> plt.Figure:
    """Left: reply lengths (words) of each kind of training reply, with the prompts' 97-word limit.
    Right: SFT examples and DPO pairs per emotion (the coverage of the 32 emotions)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.5, 0.16 * len(coverage) + 1.5)),
                                      gridspec_kw={"width_ratios": [1, 1.1]})
    kinds = list(dict.fromkeys(lengths["kind"]))
    data = [lengths.loc[lengths["kind"] == k, "words"].to_numpy() for k in kinds]
    left.boxplot(data, vert=False, widths=0.6)
    left.set_yticks(range(1, len(kinds) + 1))
    left.set_yticklabels(kinds)
    left.invert_yaxis()
    left.axvline(97, color="#b03030", linestyle="--", linewidth=1)
    left.annotate("97-word limit", (97, 0.5), xytext=(4, 0), textcoords="offset points", color="#b03030",
                  fontsize=8, va="bottom")
    left.set_xlabel("reply length (words)")
    left.set_title("Reply lengths by kind", fontsize=10)
    y = range(len(coverage))
    right.barh([i - 0.2 for i in y], coverage["SFT examples"], height=0.4, label="SFT examples", color="#1f5fa8")
    right.barh([i + 0.2 for i in y], coverage["DPO pairs"], height=0.4, label="DPO pairs", color="#e08a2c")
    right.set_yticks(list(y))
    right.set_yticklabels(coverage.index, fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("count")
    right.legend(loc="lower right", fontsize=8)
    right.set_title("Coverage of the emotions", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def variants_figure(table: pd.DataFrame, candidate: str, opponent: str, judge_name: str) -> plt.Figure:
    """Win rate of each dataset's student against the opponent, with CIs, grouped by method."""
    data = table.copy()
    data["label"] = [f"{m} · {s} · {c}" if s != "—" else f"{m} · {c}"
                     for m, s, c in zip(data["method"], data["strategy"], data["construction"])]
    data = data.sort_values(["method", "strategy", "construction"]).reset_index(drop=True)
    n = len(data)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.5 * n))
    y = list(range(n))[::-1]
    rate = data[f"{candidate}_win_rate"]
    err = [(rate - data[f"{candidate}_ci_low"]).clip(lower=0), (data[f"{candidate}_ci_high"] - rate).clip(lower=0)]
    colors = {"M1 direct": "#1f5fa8", "M2 improve human": "#e08a2c", "M3 improve initial": "#3a9a5b"}
    for yy, (_, r), lo, hi in zip(y, data.iterrows(), err[0], err[1]):
        ax.errorbar(r[f"{candidate}_win_rate"], yy, xerr=[[lo], [hi]], fmt="o", capsize=4,
                    color=colors.get(r["method"], "black"))
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(data["label"], fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"win rate of the {STUDENT_LABELS.get(candidate, candidate)} against the "
                  f"{STUDENT_LABELS.get(opponent, opponent)} (ties count half)")
    wrapped = "\n".join(textwrap.wrap(f"Judged by {short_judge_name(judge_name)}", 90))
    ax.set_title(f"Which distillation dataset teaches the student most?\n{wrapped}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


METHOD_ORDER = ("M1 direct", "M2 improve human", "M3 improve initial")


def variants_heatmap(table: pd.DataFrame, opponent: str, judge_name: str,
                     construction: str = "corrected") -> plt.Figure:
    """Strategy x method heatmap of win rates against the opponent, one panel per judged student
    (SFT, SFT->DPO), for datasets of one construction mode; each cell prints the rate and its CI,
    and a combination the run did not build is marked as such rather than left blank. Strategies are
    the rows: a study has up to eight of them and at most three methods, so the panels stay readable
    at the width of a book page."""
    import numpy as np

    data = table[table["construction"] == construction]
    students = [s for s in ("sft", "dpo") if f"{s}_win_rate" in data]
    methods = [m for m in METHOD_ORDER if m in set(data["method"])]
    strategies = sorted(set(data["strategy"]), key=lambda s: (s != "—", s))
    row_labels = ["rated replies" if s == "—" else s for s in strategies]
    fig, axes = plt.subplots(1, len(students), figsize=(2.6 + 1.8 * len(methods) * len(students), 1.6 + 0.55 * len(strategies)),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, student in zip(axes[0], students):
        grid = np.full((len(strategies), len(methods)), np.nan)
        for _, r in data.iterrows():
            grid[strategies.index(r["strategy"]), methods.index(r["method"])] = r[f"{student}_win_rate"]
        image = ax.imshow(grid, cmap="RdBu", vmin=0.0, vmax=1.0, aspect="auto")
        for i, strategy in enumerate(strategies):
            for j, method in enumerate(methods):
                row = data[(data["method"] == method) & (data["strategy"] == strategy)]
                if row.empty:  # M1 has no strategy; M2 and M3 always have one
                    applicable = (method == "M1 direct") == (strategy == "—")
                    ax.text(j, i, "not built" if applicable else "n/a", ha="center", va="center", fontsize=8,
                            color="grey")
                    continue
                r = row.iloc[0]
                ax.text(j, i, f"{100 * r[f'{student}_win_rate']:.0f} %\n[{100 * r[f'{student}_ci_low']:.0f}–"
                              f"{100 * r[f'{student}_ci_high']:.0f}]", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(methods)), [textwrap.fill(m, 12) for m in methods], fontsize=9)
        ax.set_yticks(range(len(strategies)), row_labels, fontsize=9)
        ax.tick_params(axis="y", labelleft=ax is axes[0][0])
        ax.set_title(f"{STUDENT_LABELS.get(student, student)}\nvs {STUDENT_LABELS.get(opponent, opponent)}", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="win rate (ties count half)", shrink=0.8)
    width = int(12 + 14 * len(methods) * len(students))
    wrapped = "\n".join(textwrap.wrap(f"Strategy x method ({construction} construction). Judged by {short_judge_name(judge_name)}", width))
    fig.suptitle(wrapped, fontsize=10)
    plt.close(fig)  # shown once, where the notebook displays it
    return fig
