"""Training curves from an adapter's ``train_log.json`` (the Trainer's log history), for the SFT and
DPO stage pages: a loss that does not fall, or a DPO reward margin that stays at zero, is visible at a
glance where a table of first and last losses hides it."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .artifacts import RunPaths
from .errors import StudyError


def training_history(run_dir: str | Path, step: str) -> list[dict]:
    """The logged training steps (loss and, for DPO, rewards) of the run's ``sft`` or ``dpo`` adapter."""
    paths = RunPaths(run_dir)
    folder = {"sft": paths.sft_model, "dpo": paths.dpo_model}[step]
    log = Path(folder) / "train_log.json"
    if not log.exists():
        raise StudyError(f"{log}: no training log; run the {step} stage first")
    history = json.loads(log.read_text()).get("history", [])
    return [h for h in history if "loss" in h and "step" in h]


def training_curves(run_dir: str | Path, step: str):
    """Loss per logged step; for DPO also the reward margin (chosen minus rejected) and accuracy."""
    history = training_history(run_dir, step)
    if not history:  # a run shorter than logging_steps: say so on the page rather than fail the stage
        fig, ax = plt.subplots(figsize=(5.2, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"No {step.upper()} loss was logged: the run took fewer steps than its logging_steps.",
                ha="center", va="center", fontsize=9)
        return fig
    steps = [h["step"] for h in history]
    dpo = step == "dpo" and any("rewards/margins" in h for h in history)
    fig, axes = plt.subplots(1, 2 if dpo else 1, figsize=(9.5 if dpo else 5.2, 3.1), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(steps, [h["loss"] for h in history], marker="o", markersize=3, color="#35608a")
    loss_ax.set_xlabel("training step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(f"{step.upper()} training loss", fontsize=10)
    loss_ax.grid(alpha=0.3)
    if dpo:
        margin_ax = axes[0][1]
        margin_ax.plot(steps, [h.get("rewards/margins", float("nan")) for h in history], marker="o", markersize=3,
                       color="#b05a2a", label="reward margin (chosen − rejected)")
        margin_ax.axhline(0, color="#888888", linewidth=0.8, linestyle="--")
        margin_ax.set_xlabel("training step")
        margin_ax.set_ylabel("reward margin")
        accuracy_ax = margin_ax.twinx()
        accuracy_ax.plot(steps, [h.get("rewards/accuracies", float("nan")) for h in history], color="#4a8a4a",
                         linewidth=1, alpha=0.7, label="reward accuracy")
        accuracy_ax.set_ylim(-0.05, 1.05)
        accuracy_ax.set_ylabel("reward accuracy")
        margin_ax.set_title("DPO implicit reward", fontsize=10)
        handles = margin_ax.get_legend_handles_labels()[0] + accuracy_ax.get_legend_handles_labels()[0]
        margin_ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left")
        margin_ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    plt.close(fig)
    return fig
