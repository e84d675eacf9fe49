"""The command line: short, actionable errors (no traceback wall) and the data statistics."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "empathy_utils.cli"]


def _run(*args, env_extra=None, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=120)


def test_missing_data_directory_is_one_clear_message():
    proc = _run("validate", "--profile", "llms-vs-humans", drop=("EMPATHY_DATA_DIR",))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no research data directory" in proc.stderr and "EMPATHY_DATA_DIR" in proc.stderr


def test_malformed_csv_names_file_row_and_field(tmp_path):
    folder = tmp_path / "llms-vs-humans"
    folder.mkdir()
    header = ("dialog_id,emotion,situation,speaker_uttr,response_human,response_chatgpt_empathy,"
              "response_llama_empathy,response_gemini_empathy,response_mixtral_empathy,rating_human,"
              "rating_chatgpt_empathy,rating_llama_empathy,rating_gemini_empathy,rating_mixtral_empathy").split(",")
    with open(folder / "dataset.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerow(["d1", "sad", "made up", "made up", "made up", "a", "b", "c", "d", "3", "3", "3", "3", "3"])
        w.writerow(["d2", "sad", "made up", "made up", "made up", "a", "b", "c", "d", "3", "x", "3", "3", "3"])
    proc = _run("validate", "--profile", "llms-vs-humans", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "dataset.csv, row 2 (line 3), field rating_chatgpt_empathy: 'x' is not a rating" in proc.stderr


def test_bad_override_is_reported_before_anything_runs():
    proc = _run("run", "--profile", "tiny", "--set", "sft.learnig_rate=1")
    assert proc.returncode == 2 and "did you mean 'learning_rate'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.data
def test_data_stats_prints_the_papers_counts(data_dir):
    proc = _run("data", "stats", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "train 1750, test 250" in out
    assert "all" in out and "2394" in out and "2231" in out and "2868" in out
    assert "SFT rows 950" in out and "DPO pairs 800" in out
