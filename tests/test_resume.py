"""Reliability of teacher runs, measured: a run killed part-way loses nothing it was answered and
asks nothing twice; a key given through the environment never reaches a file or a page."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from empathy_utils.config import load_config
from empathy_utils.runner import build_book, run_study
from empathy_utils.serving import count_completions

REPO = Path(__file__).resolve().parents[1]


def _params(tmp: Path, url: str, folder: str, name: str, **teacher) -> Path:
    raw = yaml.safe_load((REPO / "notebooks" / "params" / "tiny.yaml").read_text())
    raw["run"].update(name=name, output_root=str(tmp / "runs"))
    raw["data"]["train_rows"] = 40
    raw["teacher"].update(backend="openai", base_url=url, model=str(folder), max_concurrency=2, **teacher)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cached_rows(cache_dir: Path) -> int:
    db = cache_dir / "responses.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the runner and everything it started. The notebook kernel runs in a session of its
    own (jupyter_client starts it so), so killing the runner's process group alone would leave it
    answering prompts while the resumed run starts."""
    family = [proc.pid] + [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    for pid in family[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=10)


@pytest.mark.slow
def test_killed_teacher_run_resumes_without_repeating_calls(tiny_server, tmp_path):
    url, folder, log = tiny_server
    cache = tmp_path / "cache"
    env = dict(os.environ, EMPATHY_CACHE_DIR=str(cache))
    params = _params(tmp_path, url, folder, "resume")
    cmd = [sys.executable, "-m", "empathy_utils.cli", "run", "--profile", str(params), "--stages", "datasets"]
    served_before = count_completions(log)

    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _cached_rows(cache) < 6:
        assert proc.poll() is None, "the run finished before it could be interrupted"
        assert time.time() < deadline, "the teacher never answered"
        time.sleep(0.05)
    _kill_tree(proc)  # the runner and its notebook kernel, mid-run
    answered_at_kill = _cached_rows(cache)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((tmp_path / "runs" / "resume" / "data" / "card.json").read_text())
    distinct = _cached_rows(cache)
    assert distinct > answered_at_kill
    # Nothing answered before the kill was asked again ...
    assert card["teacher_output"]["cache"]["new_calls"] == distinct - answered_at_kill
    assert card["teacher_output"]["cache"]["answered_from_cache"] >= answered_at_kill
    # ... and, across both runs, the server answered each question once (plus at most the requests
    # that were in flight, unanswered, at the moment of the kill).
    time.sleep(0.5)
    served = count_completions(log) - served_before
    assert distinct <= served <= distinct + 2


@pytest.mark.slow
def test_secret_never_reaches_notebooks_artifacts_or_pages(tiny_server, tmp_path, monkeypatch):
    url, folder, _ = tiny_server
    secret = "sk-" + secrets.token_hex(16)  # made at run time: no key-like literal in the repository
    monkeypatch.setenv("EMPATHY_TEST_SECRET", secret)
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    params = _params(tmp_path, url, folder, "secret", api_key_env="EMPATHY_TEST_SECRET")
    cfg = load_config(params)
    run_dir = run_study(cfg, params_source=str(params))
    root = tmp_path / "book-root"
    root.mkdir()
    shutil.copy2(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("run", "_build"))
    html = build_book(run_dir, root=root)
    assert (html / "index.html").exists()
    checked = 0
    for base in (run_dir, root, tmp_path / "cache"):
        for path in base.rglob("*"):
            if path.is_file():
                checked += 1
                assert secret.encode() not in path.read_bytes(), f"the key leaked into {path}"
    assert checked > 50
    params_text = (run_dir / "params.yaml").read_text()
    assert "EMPATHY_TEST_SECRET" in params_text  # the variable's name is recorded, never its value
