"""Shared fixtures. Everything runs offline on CPU: any hidden hub call fails loudly."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# model.dtype auto stays fp32 on CPUs with bf16 units too, so the expectations hold on every CPU
# (tests/test_models.py checks the bf16 choice with the CPU's capabilities mocked).
os.environ["EMPATHY_CPU_BF16"] = "0"
# Converted and tiny models go to a throw-away cache unless the developer points at a warm one.
os.environ.setdefault("EMPATHY_CACHE_DIR", tempfile.mkdtemp(prefix="empathy-test-cache-"))

import pytest  # noqa: E402

from empathy_utils.backends import ChatBackend, Completion  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The research data folder (EMPATHY_DATA_DIR); tests that need it skip when it is absent."""
    value = os.environ.get("EMPATHY_DATA_DIR")
    if not value or not (Path(value) / "llms-vs-humans" / "dataset.csv").exists():
        pytest.skip("research data not available (set EMPATHY_DATA_DIR)")
    return Path(value)


@pytest.fixture(scope="session")
def lvh(data_dir):
    from empathy_utils.data import load_llms_vs_humans

    return load_llms_vs_humans(data_dir)


@pytest.fixture(scope="session")
def tiny_spec() -> str:
    from empathy_utils.models import TINY_SPEC, build_tiny_model

    build_tiny_model()
    return TINY_SPEC


class ScriptedBackend(ChatBackend):
    """A deterministic stand-in teacher for testing dataset construction (not a model).

    Its answer names the number of user turns it has seen and the start of the last user turn,
    so a test can tell which prompt and which turn produced each reply."""

    name = "scripted"
    identity = "scripted"

    def __init__(self, answer=None):
        self.calls = 0
        self.answer = answer

    def chat(self, conversations, sampling):
        self.calls += len(conversations)
        out = []
        for conv in conversations:
            if self.answer is not None:
                out.append(Completion(self.answer(conv), "stop", 5))
                continue
            turns = sum(m["role"] == "user" for m in conv)
            last = conv[-1]["content"]
            kind = "improved" if "Improved Response:" in last or turns > 1 else "initial"
            out.append(Completion(f"Reply {kind} turn {turns} for {abs(hash(last)) % 9973}.", "stop", 8))
        return out


@pytest.fixture
def scripted_backend():
    return ScriptedBackend()


@pytest.fixture(scope="session")
def tiny_server(tiny_spec, tmp_path_factory):
    """``transformers serve`` on 127.0.0.1 serving the tiny model: (base_url, model folder, access log)."""
    from empathy_utils.serving import local_server

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with local_server(tiny_spec, log) as (url, folder):
        yield url, folder, log


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_spec):
    """The tiny profile run end to end and its book built once per session (tests/test_pipeline.py
    checks the run and the pages; tests/test_browser.py opens the book in Chromium)."""
    import shutil
    import time

    from empathy_utils.config import load_config, profile_path
    from empathy_utils.runner import build_book, run_study

    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(profile_path("tiny"))
    cfg.run.output_root = str(tmp / "runs")
    root = tmp / "book-root"
    root.mkdir()
    shutil.copy2(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("run", "_build"))
    start = time.time()
    run_dir = run_study(cfg, params_source="notebooks/params/tiny.yaml")
    html = build_book(run_dir, root=root)
    elapsed = time.time() - start
    print(f"tiny profile: all stages and the book in {elapsed:.0f} s")
    return cfg, run_dir, html, elapsed
