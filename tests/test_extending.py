"""Every recipe of book/extending.md, run as the page prints it: a new prompt file is a new strategy, a
registered judge runs in the judge command line, a registered data source builds a dataset, and the
teacher and judge talk to a served model. The code is read from the page, so page and test agree."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_utils.config import StudyConfig, load_config, profile_path
from empathy_utils.errors import ConfigError, DataError
from empathy_utils.prompts import PROMPTS_DIR, strategy_names

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "book" / "extending.md"


def _blocks(heading: str, language: str) -> list[str]:
    """The ``language`` code blocks of the page's section ``heading``."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def _set_options(command: str) -> list[str]:
    words = shlex.split(command.replace("\\\n", " "))
    return [words[i + 1] for i, w in enumerate(words) if w == "--set"]


@pytest.fixture
def gentle_prompt():
    (text,) = _blocks("Add a prompt strategy", "yaml")
    path = PROMPTS_DIR / "improve-gentle.yaml"
    assert not path.exists(), f"{path} exists already; the test writes and removes it"
    path.write_text(text, encoding="utf-8")
    try:
        yield path
    finally:
        path.unlink()


def test_a_prompt_file_is_a_strategy_without_code(gentle_prompt, scripted_backend):
    from empathy_utils import distillation as dist
    from empathy_utils.backends import Sampling
    from empathy_utils.data import load_embedded_corpus

    assert "gentle" in strategy_names()
    (command,) = _blocks("Add a prompt strategy", "bash")
    cfg = load_config(profile_path("default"), _set_options(command))
    assert cfg.dataset.strategy == "gentle"
    train = load_embedded_corpus().query("split == 'train'").head(4)
    log = dist.TeacherLog()
    sft, dpo = dist.improve_initial(train, scripted_backend, "gentle", "corrected", Sampling(), log, 0.5, 42)
    assert log.prompts["improve-gentle"]["version"] == 1, "the dataset records the new prompt"
    assert sft, "the new strategy built SFT examples"
    assert dpo, "the new strategy built DPO pairs"


def test_without_the_file_the_strategy_is_an_error_listing_the_files():
    assert "gentle" not in strategy_names()
    with pytest.raises(ConfigError, match=r"dataset.strategy: 'gentle' is not one of .*'naive'"):
        StudyConfig.from_dict({"dataset": {"strategy": "gentle"}})


def _pairs(path: Path) -> list[dict]:
    # Made-up text (never research data): one long and one short reply per pair.
    pairs = [{"id": str(i), "context": "a made-up situation", "utterance": "a made-up turn",
              "response_a": "short one" if i % 2 else "a much longer reply than the other one",
              "response_b": "a much longer reply than the other one" if i % 2 else "short one"} for i in range(4)]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return pairs


def test_a_registered_judge_runs_in_the_judge_command_line(tmp_path):
    (code,) = _blocks("Add a judge", "python")
    (command,) = _blocks("Add a judge", "bash")
    plugin = tmp_path / "my_judges.py"
    plugin.write_text(code)
    pairs = _pairs(tmp_path / "pairs.jsonl")
    args = shlex.split(command)
    assert args[:3] == ["EMPATHY_PLUGINS=my_judges.py", "empathy-study", "judge"], args
    args = [a.replace("pairs.jsonl", str(tmp_path / "pairs.jsonl")).replace("verdicts.jsonl", str(tmp_path / "v.jsonl"))
            for a in args[3:]]
    env = dict(os.environ, EMPATHY_PLUGINS=str(plugin))
    proc = subprocess.run([sys.executable, "-m", "empathy_utils.cli", "judge", *args, "--profile", "tiny"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdicts = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()}
    for p in pairs:
        shorter = "a" if len(p["response_a"]) < len(p["response_b"]) else "b"
        assert verdicts[p["id"]]["verdict"] == shorter, (p, verdicts[p["id"]])
        assert verdicts[p["id"]]["judge"].startswith("shorter reply wins")


def test_an_unknown_judge_names_the_registered_ones(tmp_path):
    _pairs(tmp_path / "pairs.jsonl")
    proc = subprocess.run([sys.executable, "-m", "empathy_utils.cli", "judge", "--judge", "longr", "--pairs",
                           str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "v.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown judge 'longr'; did you mean 'longer'" in proc.stderr


@pytest.fixture
def my_dialogues(tmp_path):
    """The page's source, registered as EMPATHY_PLUGINS would, on a file of made-up dialogues."""
    from empathy_utils import plugins
    from empathy_utils.sources import unregister_dialogue_source

    folder = tmp_path / "data" / "my-dialogues"
    folder.mkdir(parents=True)
    rows = [{"dialogue_id": f"d{i}", "emotion": "hopeful", "situation": f"made-up situation {i}",
             "utterance": f"made-up turn {i}", "reference_reply": f"made-up reply {i}",
             "split": "test" if i < 3 else "train"} for i in range(9)]
    (folder / "dialogues.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (code,) = _blocks("Add a dataset loader", "python")
    plugin = tmp_path / "my_sources.py"
    plugin.write_text(code)
    os.environ[plugins.PLUGINS_ENV] = str(plugin)
    try:
        yield tmp_path / "data"
    finally:
        del os.environ[plugins.PLUGINS_ENV]
        plugins._loaded.discard(str(plugin))
        unregister_dialogue_source("my-dialogues")


def test_a_registered_data_source_builds_a_dataset(my_dialogues, tiny_spec, tmp_path):
    from empathy_utils.runner import preflight
    from empathy_utils.stages import build_datasets

    command = _blocks("Add a dataset loader", "bash")[-1]
    assert "EMPATHY_PLUGINS=my_sources.py" in command
    cfg = load_config(profile_path("tiny"), _set_options(command) + [f"data.data_dir={my_dialogues}"])
    assert cfg.data.source == "my-dialogues"
    files = preflight(cfg)
    assert list(files) == [str(my_dialogues / "my-dialogues" / "dialogues.jsonl")]
    card = build_datasets(cfg, tmp_path / "run")
    assert card["counts"]["test_dialogues"] == 3
    assert card["counts"]["sft_examples"] > 0


def test_a_data_source_missing_a_column_is_named(tmp_path):
    import pandas as pd

    from empathy_utils.data import load_dialogues
    from empathy_utils.sources import register_dialogue_source, unregister_dialogue_source

    register_dialogue_source("broken", lambda data_dir=None: pd.DataFrame({"dialogue_id": ["x"]}))
    try:
        with pytest.raises(DataError, match=r"data source 'broken'.*lacks column\(s\) \['emotion'"):
            load_dialogues("broken")
    finally:
        unregister_dialogue_source("broken")
    with pytest.raises(ConfigError, match=r"data.source: 'my-dialogue' is not one of"):
        StudyConfig.from_dict({"data": {"source": "my-dialogue"}})


@pytest.mark.slow
def test_teacher_and_judge_talk_to_a_served_model(tiny_server, monkeypatch):
    from empathy_utils.backends import Sampling, make_backend
    from empathy_utils.judge_validation import build_judge

    from empathy_utils.serving import count_completions

    url, folder, log = tiny_server
    (command,) = _blocks("Point the teacher and the judge at a served model", "bash")
    options = [o.replace("http://127.0.0.1:8000/v1", url).replace("served-model", str(folder))
               for o in _set_options(command)]
    monkeypatch.setenv("SERVED_KEY", "any-text")
    cfg = load_config(profile_path("tiny"), options)
    assert cfg.teacher.backend == cfg.judge.backend == "openai" and cfg.judge.verdict == "text"
    served = count_completions(log)
    teacher = make_backend(cfg.teacher)
    (answer,) = teacher.chat([[{"role": "user", "content": "a made-up turn"}]], Sampling(max_new_tokens=4))
    assert isinstance(answer.text, str)
    assert count_completions(log) > served, "the teacher's request reached the server"
    served = count_completions(log)
    judge = build_judge("pairwise-llm", cfg, "judge")
    items = [{"id": "1", "context": "c", "utterance": "u", "response_a": "one", "response_b": "two"}]
    (verdict,) = judge.judge(items)
    assert verdict["verdict"] in ("a", "b", "tie", "unparsed")
    assert count_completions(log) > served, "the judge's requests reached the server"
