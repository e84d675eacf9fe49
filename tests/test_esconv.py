"""The ESConv loader: the release's counts on the real files (skipped without the data), and short,
precise errors on malformed files (synthetic lines written here, never copied from the data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from empathy_utils.errors import DataError
from empathy_utils.esconv import (
    STRATEGIES,
    examples_from_dialogues,
    load_esconv,
    load_esconv_splits,
    reply_points,
    split_stats,
)


@pytest.fixture(scope="module")
def esconv():
    value = os.environ.get("EMPATHY_DATA_DIR")
    if not value or not (Path(value) / "esconv" / "train.json").exists():
        pytest.skip("ESConv not available (set EMPATHY_DATA_DIR)")
    return load_esconv_splits(value)


def test_the_standard_split_and_turn_counts(esconv):
    stats = {split: split_stats(d) for split, d in esconv.items()}
    assert {s: v["dialogues"] for s, v in stats.items()} == {"train": 910, "valid": 195, "test": 195}
    assert {s: v["turns"] for s, v in stats.items()} == {"train": 26648, "valid": 5678, "test": 6039}
    assert stats["train"]["supporter_turns"] == 12759
    used = {t["strategy"] for d in esconv["train"] for t in d["turns"] if t["speaker"] == "supporter"}
    assert used == set(STRATEGIES)
    assert all(t["strategy"] is None for d in esconv["test"] for t in d["turns"] if t["speaker"] == "seeker")


def test_examples_answer_a_seeker_turn_and_carry_the_privileged_information(esconv):
    dialogues = esconv["test"][:40]
    examples = examples_from_dialogues(dialogues, per_dialogue=1, history_turns=4, seed=3)
    assert len(examples) == sum(bool([i for i in reply_points(d) if i >= 1]) for d in dialogues)
    by_id = {d["dialogue_id"]: d for d in dialogues}
    for e in examples:
        d = by_id[e["dialogue_id"].rsplit("-t", 1)[0]]
        turn = d["turns"][e["turn"]]
        assert turn["speaker"] == "supporter"
        assert d["turns"][e["turn"] - 1]["speaker"] == "seeker"
        assert e["reference"] == turn["text"]
        assert e["strategy"] == turn["strategy"] in STRATEGIES
        assert (e["situation"], e["problem"], e["emotion"]) == (d["situation"], d["problem_type"], d["emotion_type"])
        assert 1 <= len(e["history"].splitlines()) <= 4
        assert e["history"].splitlines()[-1].startswith("Speaker: ")
        assert e["utterance"].endswith(e["history"].splitlines()[-1][len("Speaker: "):])
    again = examples_from_dialogues(dialogues, per_dialogue=1, history_turns=4, seed=3)
    assert [e["dialogue_id"] for e in again] == [e["dialogue_id"] for e in examples]  # seeded
    every = examples_from_dialogues(dialogues[:3], per_dialogue=0)
    assert len(every) == sum(len(reply_points(d)) for d in dialogues[:3])


def _line(**changes) -> str:
    record = {"experience_type": "Current Experience", "emotion_type": "anxiety", "problem_type": "job crisis",
              "situation": "A made-up situation for a test.", "survey_score": {},
              "dialog": [{"text": "Hello, I feel worried.", "speaker": "usr"},
                         {"text": "What is worrying you?", "speaker": "sys", "strategy": "Question"}]}
    record.update(changes)
    return json.dumps(record)


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object"),
    (_line(situation=""), "line 2, field situation: missing or empty"),
    (_line(dialog=[]), "line 2, field dialog: expected a non-empty list"),
    (_line(dialog=[{"text": "hi", "speaker": "bot"}]), "line 2, field dialog[0].speaker: 'bot' is not"),
    (_line(dialog=[{"text": "hi", "speaker": "sys", "strategy": "Hugging"}]), "field dialog[0].strategy: 'Hugging'"),
    (_line(dialog=[{"text": " ", "speaker": "usr"}]), "field dialog[0].text: missing or empty"),
])
def test_malformed_lines_are_named_by_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "train.json"
    path.write_text(_line() + "\n" + line + "\n")
    with pytest.raises(DataError) as info:
        load_esconv("train", path=path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_a_good_file_loads_and_missing_files_say_what_to_do(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(_line() + "\n\n" + _line(emotion_type="sadness") + "\n")
    dialogues = load_esconv("test", path=path)
    assert [d["emotion_type"] for d in dialogues] == ["anxiety", "sadness"]
    assert dialogues[0]["turns"][1] == {"speaker": "supporter", "text": "What is worrying you?", "strategy": "Question"}
    (tmp_path / "empty.json").write_text("\n")
    with pytest.raises(DataError, match="no dialogues"):
        load_esconv("train", path=tmp_path / "empty.json")
    with pytest.raises(DataError, match="has no esconv/ folder"):
        load_esconv("train", data_dir=tmp_path)
    (tmp_path / "esconv").mkdir()
    with pytest.raises(DataError, match="place ESConv's valid.json"):
        load_esconv("valid", data_dir=tmp_path)
    with pytest.raises(DataError, match="no split 'dev'"):
        load_esconv("dev", data_dir=tmp_path)
