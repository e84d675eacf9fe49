"""Training curves read from an adapter's train_log.json (synthetic logs here; the tiny pipeline
draws them from real ones on its SFT and DPO pages)."""

from __future__ import annotations

import json

import pytest

from empathy_utils.curves import training_curves
from empathy_utils.errors import StudyError


def _write_log(run_dir, step, history):
    folder = run_dir / "models" / step
    folder.mkdir(parents=True)
    (folder / "train_log.json").write_text(json.dumps({"summary": {}, "history": history}))


def test_sft_curve_plots_the_logged_losses(tmp_path):
    _write_log(tmp_path, "sft", [{"loss": 2.0, "step": 5}, {"loss": 1.5, "step": 10},
                                 {"train_loss": 1.7, "step": 10}])  # the summary entry is not a point
    fig = training_curves(tmp_path, "sft")
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [5, 10] and list(line.get_ydata()) == [2.0, 1.5]


def test_dpo_curves_add_the_reward_margin_and_accuracy(tmp_path):
    _write_log(tmp_path, "dpo", [{"loss": 0.69, "step": 1, "rewards/margins": 0.0, "rewards/accuracies": 0.0},
                                 {"loss": 0.6, "step": 2, "rewards/margins": 0.3, "rewards/accuracies": 0.75}])
    fig = training_curves(tmp_path, "dpo")
    loss_ax, margin_ax, accuracy_ax = fig.axes
    assert list(loss_ax.get_lines()[0].get_ydata()) == [0.69, 0.6]
    assert list(margin_ax.get_lines()[0].get_ydata()) == [0.0, 0.3]
    assert list(accuracy_ax.get_lines()[0].get_ydata()) == [0.0, 0.75]


def test_missing_or_empty_logs_are_named(tmp_path):
    with pytest.raises(StudyError, match=r"models/dpo/train_log.json: no training log; run the dpo stage"):
        training_curves(tmp_path, "dpo")
    # A run shorter than its logging_steps logs no step: the page says so, and the stage does not fail.
    _write_log(tmp_path, "sft", [{"train_loss": 1.0, "step": 1}])
    fig = training_curves(tmp_path, "sft")
    assert not fig.axes[0].get_lines()
    assert "No SFT loss was logged" in fig.axes[0].texts[0].get_text()


def test_a_short_run_that_would_log_no_loss_is_refused_before_anything_runs():
    from empathy_utils.config import StudyConfig
    from empathy_utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dpo.logging_steps: 5 is more than max_steps \(4\)"):
        StudyConfig.from_dict({"dpo": {"max_steps": 4, "logging_steps": 5}})
    StudyConfig.from_dict({"dpo": {"max_steps": 4, "logging_steps": 4}})
    StudyConfig.from_dict({"dpo": {"max_steps": -1, "logging_steps": 5}})  # epochs decide: unknown until data


def test_side_by_side_replies_show_every_student_on_the_same_dialogues(tmp_path):
    from empathy_utils.config import StudyConfig
    from empathy_utils.data import save_jsonl
    from empathy_utils.showcase import side_by_side_replies

    dialogues = [{"dialogue_id": f"d{i}", "emotion": e, "utterance": f"turn {i}"}
                 for i, e in enumerate(["proud", "lonely", "afraid", "joyful"])]
    save_jsonl(dialogues, tmp_path / "data" / "test.jsonl")
    for student in ("base", "dpo"):  # no SFT replies in this run
        save_jsonl([{"dialogue_id": d["dialogue_id"], "reply": f"{student} to {d['dialogue_id']}"}
                    for d in reversed(dialogues)], tmp_path / "generations" / f"{student}.jsonl")
    cfg = StudyConfig.from_dict({"data": {"source": "embedded-corpus"}})
    table = side_by_side_replies(cfg, tmp_path, n=3)
    assert list(table.columns) == ["proud", "lonely", "afraid"]
    assert list(table.index) == ["the speaker says", "base student", "SFT→DPO student"]
    assert table.loc["SFT→DPO student", "lonely"] == "dpo to d1" and table.loc["the speaker says", "afraid"] == "turn 2"
    research = StudyConfig.from_dict({"data": {"source": "llms-vs-humans"}})
    assert side_by_side_replies(research, tmp_path) is None, "research data is never printed"
