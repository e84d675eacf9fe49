"""The command line: short, actionable errors (no traceback wall) and the data statistics."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

CLI = [sys.executable, "-m", "empathy_utils.cli"]


def _run(*args, env_extra=None, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=200)


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


# ------------------------------------------------------------------ no network: nothing waits on the hub
@contextmanager
def unreachable_hub():
    """A hub address that takes connections and never answers, like a network that drops packets;
    yields the environment to run under and a function telling whether anything connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)

    def contacted() -> bool:
        try:
            sock.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    env = {"HF_ENDPOINT": f"http://127.0.0.1:{sock.getsockname()[1]}"}
    try:
        yield env, contacted
    finally:
        sock.close()


HUB_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def test_a_model_not_on_this_machine_is_one_line_naming_it_and_how_to_fetch_it(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "1", "context": "c", "utterance": "u", "response_a": "a", "response_b": "b"}\n')
    with unreachable_hub() as (env, contacted):
        env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: the model is nowhere on this machine
        start = time.time()
        proc = _run("judge", "--pairs", str(pairs), "--out", str(tmp_path / "out.jsonl"), "--judge", "pairwise-llm",
                    "--profile", "tiny", "--set", "judge.model=example-org/not-on-this-machine",
                    env_extra=env, drop=HUB_VARS)
        seconds = time.time() - start
        assert not contacted(), "the command tried the hub"
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1, message
    assert "'example-org/not-on-this-machine'" in message[0]
    assert "hf download example-org/not-on-this-machine" in message[0]
    assert seconds < 60, f"answered in {seconds:.0f} s"


@pytest.mark.slow
def test_plan_answers_without_the_hub_for_a_hub_model(tmp_path):
    with unreachable_hub() as (env, contacted):
        env["HF_HOME"] = str(tmp_path / "hf-home")
        start = time.time()
        proc = _run("plan", "--profile", "tiny", "--set", "model.name_or_path=example-org/not-on-this-machine",
                    "--json", env_extra=env, drop=HUB_VARS)
        seconds = time.time() - start
        assert not contacted(), "the command tried the hub"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"runs"' in proc.stdout
    assert seconds < 150, f"answered in {seconds:.0f} s"


@pytest.mark.slow
@pytest.mark.data
def test_the_readmes_plan_command_answers_without_the_hub(tmp_path, data_dir):
    with unreachable_hub() as (env, contacted):
        env["HF_HOME"] = str(tmp_path / "hf-home")
        start = time.time()
        proc = _run("plan", "--profile", "paper", env_extra=env, drop=HUB_VARS)
        seconds = time.time() - start
        assert not contacted(), "the command tried the hub"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seconds < 150, f"answered in {seconds:.0f} s"
