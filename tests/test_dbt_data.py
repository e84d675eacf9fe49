"""The DBT method's data: the embedded multi-turn corpus, the dialogue-level split, multi-turn
examples (history boundaries, roles, the chat template) and bad input, named or counted.
Hand-made dialogues here are written for the tests; ESConv-shaped files are synthetic lines."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from empathy_utils.dbt.conversations import (
    NO_EARLIER_TURNS,
    STUDENT_SYSTEM,
    history_window,
    load_conversations,
    make_examples,
    sft_record,
    split_dialogues,
    student_messages,
)
from empathy_utils.errors import DataError


def _dialogue(*turns, did="x1"):
    return {"dialogue_id": did, "situation": "s", "problem_type": "p", "emotion_type": "e",
            "turns": [{"speaker": sp, "text": tx, "strategy": None} for sp, tx in turns]}


HAND = _dialogue(("supporter", "Hi, what's on your mind?"), ("seeker", "I lost my job."),
                 ("seeker", "Nine years there."), ("supporter", "That is a shock."),
                 ("seeker", "Rent is due soon."), ("supporter", "So money worries too."),
                 ("seeker", "Thanks for listening."))


def test_the_embedded_corpus_is_many_varied_multi_turn_conversations():
    dialogues = load_conversations()
    assert len(dialogues) >= 48
    assert all(len(d["turns"]) >= 6 for d in dialogues)
    assert all(d["turns"][0]["speaker"] == "seeker" and d["turns"][-1]["speaker"] == "supporter" for d in dialogues)
    assert len({d["emotion_type"] for d in dialogues}) >= 8
    assert len({d["problem_type"] for d in dialogues}) >= 45
    assert len({d["dialogue_id"] for d in dialogues}) == len(dialogues)


def test_split_is_by_dialogue_seeded_and_complete():
    dialogues = load_conversations()
    a = split_dialogues(dialogues, 0.15, 0.2, seed=1)
    ids = {s: {d["dialogue_id"] for d in v} for s, v in a.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["valid"]) and not (ids["valid"] & ids["test"])
    assert sum(map(len, ids.values())) == len(dialogues)
    assert len(ids["test"]) == round(0.2 * len(dialogues)) and len(ids["valid"]) == round(0.15 * len(dialogues))
    b = split_dialogues(dialogues, 0.15, 0.2, seed=1)
    assert [d["dialogue_id"] for d in b["test"]] == [d["dialogue_id"] for d in a["test"]]
    c = split_dialogues(dialogues, 0.15, 0.2, seed=2)
    assert [d["dialogue_id"] for d in c["test"]] != [d["dialogue_id"] for d in a["test"]]


def test_examples_stop_at_the_reply_and_start_at_a_seeker_turn():
    examples = make_examples([HAND], history_turns=10)
    assert [e["turn"] for e in examples] == [3, 5]  # supporter turns answering a seeker; not the greeting
    first, second = examples
    # The opening greeting is cut, the two seeker turns in a row are the utterance, nothing after leaks.
    assert [t["text"] for t in first["history"]] == ["I lost my job.", "Nine years there."]
    assert first["utterance"] == "I lost my job. Nine years there." and first["earlier"] == NO_EARLIER_TURNS
    assert first["reference"] == "That is a shock."
    assert second["history"][-1]["text"] == "Rent is due soon." and second["reference"] == "So money worries too."
    assert "Listener: That is a shock." in second["earlier"] and "Rent" not in second["earlier"]
    assert all("Thanks for listening." not in json.dumps(e) for e in examples)
    # history_turns keeps the latest turns, still starting at a seeker turn.
    short = make_examples([HAND], history_turns=2)[1]
    assert [t["text"] for t in short["history"]] == ["Rent is due soon."]
    assert history_window(HAND["turns"], 5, 3)[0]["speaker"] == "seeker"
    assert [e["turn"] for e in make_examples([HAND], 10, last_only=True)] == [5]


def test_roles_alternate_in_the_students_chat():
    e = make_examples([HAND], history_turns=10)[1]
    messages = student_messages(e)
    assert messages[0] == {"role": "system", "content": STUDENT_SYSTEM}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "I lost my job.\nNine years there."  # consecutive seeker turns joined
    record = sft_record(e)
    assert record["messages"][:-1] == messages
    assert record["messages"][-1] == {"role": "assistant", "content": "So money worries too."}


def test_the_chat_template_puts_the_reference_after_the_prompt(tiny_spec):
    from empathy_utils.models import load_tokenizer

    tok = load_tokenizer(tiny_spec)
    record = sft_record(make_examples([HAND], history_turns=10)[1])
    prompt = tok.apply_chat_template(record["messages"][:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(record["messages"], tokenize=False)
    assert full.startswith(prompt)
    assert full[len(prompt):].strip().startswith("So money worries too.")
    assert prompt.count("I lost my job.") == 1 and "Thanks for listening" not in full


def test_a_dialogue_without_a_supporter_reply_is_counted_not_lost():
    counts = Counter()
    only_seeker = _dialogue(("seeker", "Hello?"), ("seeker", "Anyone?"), did="lonely")
    examples = make_examples([only_seeker, HAND], 10, counts=counts)
    assert counts["no_supporter_turn"] == 1 and counts["examples"] == len(examples) == 2


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


GOOD = {"id": "t1", "problem": "p", "emotion": "e", "situation": "s",
        "turns": [{"speaker": "seeker", "text": "a"}, {"speaker": "supporter", "text": "b"}]}


@pytest.mark.parametrize("change, needle", [
    ({"situation": ""}, "field situation: missing or empty"),
    ({"turns": []}, "field turns: expected a non-empty list"),
    ({"turns": [{"speaker": "seeker", "text": " "}]}, "field turns[0].text: missing or empty"),
    ({"turns": [{"speaker": "bot", "text": "x"}]}, "field turns[0].speaker"),
])
def test_bad_corpus_lines_name_file_line_and_conversation(tmp_path, change, needle):
    path = _write(tmp_path / "c.jsonl", [GOOD, {**GOOD, "id": "t2", **change}])
    with pytest.raises(DataError) as err:
        load_conversations(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and "conversation t2" in str(err.value)
    assert needle in str(err.value)


ESCONV_GOOD = {"situation": "s", "problem_type": "p", "emotion_type": "e", "experience_type": "x",
               "dialog": [{"speaker": "usr", "text": "a"}, {"speaker": "sys", "text": "b", "strategy": "Question"}]}


@pytest.mark.parametrize("change, needle", [
    ({"emotion_type": None}, "field emotion_type: missing or empty"),
    ({"dialog": []}, "field dialog: expected a non-empty list"),
])
def test_bad_esconv_files_stop_with_file_and_dialogue(tmp_path, change, needle):
    from empathy_utils.esconv import load_esconv

    path = _write(tmp_path / "train.json", [ESCONV_GOOD, {**ESCONV_GOOD, **change}])
    with pytest.raises(DataError) as err:
        load_esconv("train", path=path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and needle in str(err.value)


def test_an_esconv_dialogue_with_no_supporter_turn_is_a_counted_drop(tmp_path):
    from empathy_utils.esconv import load_esconv

    seeker_only = {**ESCONV_GOOD, "dialog": [{"speaker": "usr", "text": "a"}]}
    dialogues = load_esconv("test", path=_write(tmp_path / "test.json", [ESCONV_GOOD, seeker_only]))
    counts = Counter()
    examples = make_examples(dialogues, 6, last_only=True, counts=counts)
    assert len(examples) == 1 and counts["no_supporter_turn"] == 1


def test_esconv_gives_multi_turn_examples_from_its_own_split():
    import os
    from pathlib import Path

    from empathy_utils.config import StudyConfig
    from empathy_utils.dbt.conversations import load_splits

    data = os.environ.get("EMPATHY_DATA_DIR")
    if not data or not (Path(data) / "esconv" / "train.json").exists():
        pytest.skip("ESConv not available (set EMPATHY_DATA_DIR)")
    settings = StudyConfig.from_dict({"dbt": {"source": "esconv", "train_dialogues": 12, "test_dialogues": 5}}).dbt
    splits, info = load_splits(settings, seed=4, data_dir=data)
    assert info["dialogues"] == {"train": 12, "valid": 195, "test": 5} and set(info["sha256"]) == {"train", "valid", "test"}
    counts = Counter()
    examples = make_examples(splits["train"], 6, counts=counts)
    assert counts["examples"] == len(examples) > 12
    for e in examples:
        assert e["history"][0]["speaker"] == "seeker" and e["history"][-1]["speaker"] == "seeker"
        assert len(e["history"]) <= 6 and student_messages(e)[-1]["role"] == "user"
