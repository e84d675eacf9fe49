"""The study's pipeline as a picture, drawn offline with matplotlib (no CDN, no diagram service).

The book shows the SVG committed at ``book/images/pipeline.svg``; regenerate it after changing the
drawing with ``python -m empathy_utils.diagram book/images/pipeline.svg`` (a test checks that the
committed file is what this module draws)."""

from __future__ import annotations

import sys
from pathlib import Path

# Each stage: (x, y, title, detail); the arrows below follow the order of the stages.
STAGE_BOXES = [
    (0.11, 0.72, "Data", "LLMs-vs-Humans\nor the embedded corpus"),
    (0.37, 0.72, "Distillation data", "M1 direct distillation\nM2 improve human replies\nM3 improve teacher replies"),
    (0.63, 0.72, "SFT", "LoRA on the\nSFT examples"),
    (0.89, 0.72, "DPO", "continues the SFT adapter\non chosen / rejected pairs"),
    (0.89, 0.25, "Generation", "base, SFT and SFT→DPO\nstudents answer unseen\ntest dialogues"),
    (0.63, 0.25, "Judging", "each pair in both orders\nby the validated judge"),
    (0.37, 0.25, "Win rates", "ties count half; bootstrap\nconfidence intervals;\nthe judge named"),
]
SIDE_BOXES = [
    (0.37, 1.04, "teacher + versioned prompts"),
    (0.63, -0.09, "judge validation: candidates vs human ratings"),
]
COLOURS = {"stage": "#e8f0f8", "edge": "#35608a", "side": "#f6efe2", "side_edge": "#9a7a3c"}


def pipeline_figure():
    """The pipeline, data to win rates, as a matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(9, 4.4))
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.2, 1.15)
    ax.axis("off")
    width, height = 0.198, 0.34
    centres = []
    for x, y, title, detail in STAGE_BOXES:
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.01",
                                    facecolor=COLOURS["stage"], edgecolor=COLOURS["edge"], linewidth=1.4))
        ax.text(x, y + 0.08, title, ha="center", va="center", fontsize=12.5, fontweight="bold", color="#1b3550")
        ax.text(x, y - 0.05, detail, ha="center", va="center", fontsize=8.6, color="#222222", linespacing=1.3)
        centres.append((x, y))
    arrow = dict(arrowstyle="-|>", color=COLOURS["edge"], linewidth=1.6, mutation_scale=14)
    for (x0, y0), (x1, y1) in zip(centres, centres[1:]):
        if y0 == y1:  # along a row
            step = width / 2 + 0.012
            direction = 1 if x1 > x0 else -1
            ax.annotate("", xy=(x1 - direction * step, y1), xytext=(x0 + direction * step, y0), arrowprops=arrow)
        else:  # down to the second row
            ax.annotate("", xy=(x1, y1 + height / 2 + 0.012), xytext=(x0, y0 - height / 2 - 0.012), arrowprops=arrow)
    side_arrow = dict(arrowstyle="-|>", color=COLOURS["side_edge"], linewidth=1.2, mutation_scale=12,
                      linestyle=(0, (3, 2)))
    for (x, y, label), target_y in zip(SIDE_BOXES, (0.72 + height / 2 + 0.012, 0.25 - height / 2 - 0.012)):
        ax.text(x, y, label, ha="center", va="center", fontsize=9, color="#4a3a18",
                bbox=dict(boxstyle="round,pad=0.35", facecolor=COLOURS["side"], edgecolor=COLOURS["side_edge"]))
        start = y - 0.05 if y > target_y else y + 0.05
        ax.annotate("", xy=(x, target_y), xytext=(x, start), arrowprops=side_arrow)
    fig.tight_layout(pad=0.2)
    return fig


def write_svg(path: str | Path) -> Path:
    """Write the diagram as a reproducible SVG (text kept as text, no date, fixed element ids)."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "empathy-pipeline"}):
        fig = pipeline_figure()
        fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(write_svg(sys.argv[1] if len(sys.argv) > 1 else "book/images/pipeline.svg"))
