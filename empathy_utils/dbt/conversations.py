"""Multi-turn support conversations and the examples the DBT method trains and tests on.

A *dialogue* (the shape :mod:`empathy_utils.esconv` returns, and the embedded corpus is read into)
has ``dialogue_id``, ``situation``, ``problem_type``, ``emotion_type`` and ``turns``:
``[{speaker: seeker | supporter, text, strategy}]``. An *example* is one supporter turn that answers
a seeker: the conversation before it (at most ``history_turns`` turns, starting at a seeker turn),
and the turn itself as the reference reply.

The student reads an example as a chat: a short system line, then the seeker's turns as ``user``
and the supporter's as ``assistant`` (consecutive turns of one speaker joined), so SFT learns the
supporter's turn from the history in the model's own chat template.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from ..data import jsonl_records, sha256_file
from ..errors import DataError
from ..paths import resources_dir

CONVERSATIONS_FILE = "conversations.jsonl"
SPEAKERS = ("seeker", "supporter")
ROLES = {"seeker": "user", "supporter": "assistant"}
ROLE_NAMES = {"seeker": "Speaker", "supporter": "Listener"}
# What the student is told, at training and at test time (base and every trained row alike).
STUDENT_SYSTEM = ("You are a supportive listener. Someone is telling you about something that troubles them; "
                  "reply to their last message.")
NO_EARLIER_TURNS = "(this is the start of the conversation)"


def conversations_path() -> Path:
    return resources_dir() / "conversations" / CONVERSATIONS_FILE


def load_conversations(path: str | Path | None = None) -> list[dict]:
    """The embedded corpus as dialogues; a problem names the file, the line, the id and the field."""
    path = Path(path) if path else conversations_path()
    out, seen = [], set()
    for where, _, rec in jsonl_records(path):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object (one conversation per line)")
        cid = rec.get("id")
        if not isinstance(cid, str) or not cid.strip():
            raise DataError(f"{where}, field id: missing or empty")
        where = f"{where} (conversation {cid})"
        if cid in seen:
            raise DataError(f"{where}, field id: duplicate id")
        seen.add(cid)
        for name in ("problem", "emotion", "situation"):
            if not isinstance(rec.get(name), str) or not rec[name].strip():
                raise DataError(f"{where}, field {name}: missing or empty")
        turns = rec.get("turns")
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{where}, field turns: expected a non-empty list of turns")
        parsed = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict) or t.get("speaker") not in SPEAKERS:
                raise DataError(f"{where}, field turns[{i}].speaker: expected one of {list(SPEAKERS)}")
            if not isinstance(t.get("text"), str) or not t["text"].strip():
                raise DataError(f"{where}, field turns[{i}].text: missing or empty")
            parsed.append({"speaker": t["speaker"], "text": t["text"].strip(), "strategy": None})
        out.append({"dialogue_id": cid, "situation": rec["situation"].strip(), "problem_type": rec["problem"].strip(),
                    "emotion_type": rec["emotion"].strip(), "turns": parsed})
    if not out:
        raise DataError(f"{path}: no conversations")
    return out


def split_dialogues(dialogues: list[dict], valid_share: float, test_share: float, seed: int) -> dict[str, list[dict]]:
    """A dialogue-level train / valid / test split, seeded (each split keeps the file's order)."""
    order = list(range(len(dialogues)))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(test_share * len(dialogues)))
    n_valid = round(valid_share * len(dialogues))
    test, valid = set(order[:n_test]), set(order[n_test : n_test + n_valid])
    splits = {"train": [], "valid": [], "test": []}
    for i, d in enumerate(dialogues):
        splits["test" if i in test else "valid" if i in valid else "train"].append(d)
    return splits


def subsample_dialogues(dialogues: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` dialogues picked with ``seed`` (0 or more than there are: all), in their original order."""
    if n <= 0 or n >= len(dialogues):
        return list(dialogues)
    keep = set(random.Random(seed).sample(range(len(dialogues)), n))
    return [d for i, d in enumerate(dialogues) if i in keep]


def reply_points(dialogue: dict) -> list[int]:
    """Indices of supporter turns that answer a seeker turn (the turn just before is the seeker's)."""
    turns = dialogue["turns"]
    return [i for i, t in enumerate(turns) if t["speaker"] == "supporter" and i > 0 and turns[i - 1]["speaker"] == "seeker"]


def history_window(turns: list[dict], index: int, history_turns: int) -> list[dict]:
    """The turns before ``index``, at most ``history_turns`` of them, starting at a seeker turn (an
    opening supporter greeting is cut: every chat then starts with the user, as all templates allow)."""
    window = turns[max(0, index - history_turns) : index]
    while window and window[0]["speaker"] != "seeker":
        window = window[1:]
    return window


def make_examples(dialogues: list[dict], history_turns: int, per_dialogue: int = 0, seed: int = 0,
                  last_only: bool = False, counts: Counter | None = None) -> list[dict]:
    """One example per chosen supporter turn. ``last_only``: the last reply of each dialogue (the
    test examples: the most history); else ``per_dialogue`` seeded picks (0 = all). A dialogue with no
    supporter turn answering a seeker gives none and is counted in ``counts['no_supporter_turn']``."""
    rng = random.Random(seed)
    counts = counts if counts is not None else Counter()
    out = []
    for d in dialogues:
        points = reply_points(d)
        if not points:
            counts["no_supporter_turn"] += 1
            continue
        if last_only:
            points = points[-1:]
        elif 0 < per_dialogue < len(points):
            points = sorted(rng.sample(points, per_dialogue))
        for i in points:
            history = history_window(d["turns"], i, history_turns)
            last = []
            for t in reversed(history):
                if t["speaker"] != "seeker":
                    break
                last.insert(0, t["text"])
            earlier = history[: len(history) - len(last)]
            out.append({
                "example_id": f"{d['dialogue_id']}-t{i:02d}",
                "dialogue_id": d["dialogue_id"],
                "turn": i,
                "history": [{"speaker": t["speaker"], "text": t["text"]} for t in history],
                "earlier": render(earlier) or NO_EARLIER_TURNS,
                "utterance": " ".join(last),
                "reference": d["turns"][i]["text"],
                "situation": d["situation"],
                "problem": d["problem_type"],
                "emotion": d["emotion_type"],
            })
        counts["examples"] += len(points)
    return out


def render(turns: list[dict]) -> str:
    """Turns as "Speaker: …" / "Listener: …" lines (the teacher's, labeller's and judge's view)."""
    return "\n".join(f"{ROLE_NAMES[t['speaker']]}: {t['text']}" for t in turns)


def student_messages(example: dict) -> list[dict]:
    """The chat the student answers: system line, then the history as user / assistant turns."""
    messages = [{"role": "system", "content": STUDENT_SYSTEM}]
    for t in example["history"]:
        role = ROLES[t["speaker"]]
        if messages[-1]["role"] == role:
            messages[-1] = {"role": role, "content": messages[-1]["content"] + "\n" + t["text"]}
        else:
            messages.append({"role": role, "content": t["text"]})
    if messages[-1]["role"] != "user":  # make_examples never produces this; a hand-made example might
        raise DataError(f"example {example.get('example_id')}: the history must end with the seeker's turn")
    return messages


def sft_record(example: dict) -> dict:
    """One SFT row: the student's chat plus the reference turn as the assistant's reply."""
    return {"messages": student_messages(example) + [{"role": "assistant", "content": example["reference"]}],
            "example_id": example["example_id"], "emotion": example["emotion"]}


def load_splits(settings, seed: int, data_dir: str | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Train / valid / test dialogues of the configured source, subsampled, and a record of how."""
    if settings.source == "embedded":
        path = conversations_path()
        dialogues = load_conversations(path)
        splits = split_dialogues(dialogues, settings.valid_share, settings.test_share, seed)
        info = {"name": "the project's embedded multi-turn conversations", "file": path.name,
                "sha256": sha256_file(path), "split": f"by conversation, seeded (run.seed = {seed}): "
                f"valid {settings.valid_share:g}, test {settings.test_share:g} of {len(dialogues)}"}
    else:
        from ..esconv import esconv_path, load_esconv

        splits = {s: load_esconv(s, data_dir) for s in ("train", "valid", "test")}
        info = {"name": "ESConv (Liu et al. 2021)", "file": str(esconv_path("train", data_dir).parent),
                "sha256": {s: sha256_file(esconv_path(s, data_dir)) for s in splits},
                "split": "the release's own train / valid / test files (by dialogue)"}
    splits["train"] = subsample_dialogues(splits["train"], settings.train_dialogues, seed)
    splits["test"] = subsample_dialogues(splits["test"], settings.test_dialogues, seed)
    info["dialogues"] = {s: len(v) for s, v in splits.items()}
    info["dialogue_ids"] = {s: [d["dialogue_id"] for d in v] for s, v in splits.items()}
    return splits, info
