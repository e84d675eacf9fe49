"""ESConv (Liu et al., ACL 2021): emotional-support conversations, read from the research data folder.

The release this study reads (``<data dir>/esconv/{train,valid,test}.json``, the standard 910 / 195 /
195 split of the ``thu-coai/esconv`` layout) is JSON Lines despite the ``.json`` suffix: one dialogue
per line with ``situation``, ``problem_type``, ``emotion_type``, ``experience_type``, ``survey_score``
and ``dialog`` — a list of turns ``{text, speaker: usr | sys, strategy (supporter turns only)}``.

Every line is checked as it is read; a problem names the file, the line and the field, and says what
was expected. The data is never copied anywhere: callers get Python objects.

For PRIDE (book/pride.md) a dialogue gives *examples*: one supporter turn, the conversation before it,
and the privileged information (PI) a teacher may see but the student never does — the situation,
the problem type, the seeker's emotion type and the strategy the human supporter used in that turn.
"""

from __future__ import annotations

import random
from pathlib import Path

from .data import jsonl_records
from .errors import DataError
from .paths import resolve_data_dir

ESCONV_FOLDER = "esconv"
SPLITS = ("train", "valid", "test")
# The eight support strategies of the ESConv paper (strategy.json in the release).
STRATEGIES = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    "Others",
)
SPEAKERS = {"usr": "seeker", "sys": "supporter"}
TEXT_FIELDS = ("situation", "problem_type", "emotion_type", "experience_type")


def esconv_path(split: str, data_dir: str | Path | None = None) -> Path:
    if split not in SPLITS:
        raise DataError(f"ESConv has no split {split!r}; the splits are {', '.join(SPLITS)}")
    path = resolve_data_dir(data_dir, need=ESCONV_FOLDER) / ESCONV_FOLDER / f"{split}.json"
    if not path.exists():
        raise DataError(f"{path}: file not found; place ESConv's {split}.json (JSON Lines) there (see book/reproduce.md)")
    return path


def _turn(raw, where: str, index: int) -> dict:
    at = f"{where}, field dialog[{index}]"
    if not isinstance(raw, dict):
        raise DataError(f"{at}: expected an object with text and speaker, got {type(raw).__name__}")
    speaker = raw.get("speaker")
    if speaker not in SPEAKERS:
        raise DataError(f"{at}.speaker: {speaker!r} is not 'usr' (seeker) or 'sys' (supporter)")
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{at}.text: missing or empty")
    strategy = None
    if speaker == "sys":
        strategy = raw.get("strategy")
        if strategy not in STRATEGIES:
            raise DataError(f"{at}.strategy: {strategy!r} is not an ESConv strategy ({', '.join(STRATEGIES)})")
    return {"speaker": SPEAKERS[speaker], "text": text.strip(), "strategy": strategy}


def _dialogue(rec, where: str, split: str, line_no: int) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object (one dialogue per line), got {type(rec).__name__}")
    out = {"dialogue_id": f"esconv-{split}-{line_no:04d}", "split": split}
    for name in TEXT_FIELDS:
        value = rec.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}, field {name}: missing or empty")
        out[name] = value.strip()
    dialog = rec.get("dialog")
    if not isinstance(dialog, list) or not dialog:
        raise DataError(f"{where}, field dialog: expected a non-empty list of turns")
    out["turns"] = [_turn(t, where, i) for i, t in enumerate(dialog)]
    survey = rec.get("survey_score", {})
    out["survey"] = survey if isinstance(survey, dict) else {}
    return out


def load_esconv(split: str, data_dir: str | Path | None = None, path: str | Path | None = None) -> list[dict]:
    """One split as a list of dialogues (dicts: dialogue_id, split, situation, problem_type,
    emotion_type, experience_type, turns [{speaker: seeker|supporter, text, strategy}], survey)."""
    path = Path(path) if path else esconv_path(split, data_dir)
    dialogues = [_dialogue(rec, where, split, line_no) for where, line_no, rec in jsonl_records(path)]
    if not dialogues:
        raise DataError(f"{path}: no dialogues (expected one JSON object per line)")
    return dialogues


def load_esconv_splits(data_dir: str | Path | None = None) -> dict[str, list[dict]]:
    return {split: load_esconv(split, data_dir) for split in SPLITS}


def split_stats(dialogues: list[dict]) -> dict[str, int]:
    """Counts a reader can check against the release notes (dialogues, turns, supporter turns)."""
    turns = [t for d in dialogues for t in d["turns"]]
    return {"dialogues": len(dialogues), "turns": len(turns),
            "supporter_turns": sum(t["speaker"] == "supporter" for t in turns)}


# ------------------------------------------------------------------------------------- examples
ROLE_NAMES = {"seeker": "Speaker", "supporter": "Listener"}


def render_history(turns: list[dict]) -> str:
    """The conversation as the student and the teacher read it: "Speaker: …" / "Listener: …" lines."""
    return "\n".join(f"{ROLE_NAMES[t['speaker']]}: {t['text']}" for t in turns)


def reply_points(dialogue: dict) -> list[int]:
    """Indices of supporter turns that answer a seeker turn (the turn just before is the seeker's)."""
    turns = dialogue["turns"]
    return [i for i, t in enumerate(turns) if t["speaker"] == "supporter" and i > 0 and turns[i - 1]["speaker"] == "seeker"]


def examples_from_dialogues(dialogues: list[dict], per_dialogue: int = 1, history_turns: int = 6,
                            seed: int = 0, min_history: int = 1) -> list[dict]:
    """PRIDE examples: per dialogue, ``per_dialogue`` supporter turns picked at random (seeded; 0 = all)
    among those with at least ``min_history`` turns before them, each with up to ``history_turns``
    preceding turns. Fields: dialogue_id, turn, history (rendered), utterance (the seeker's last
    turn), reference (the human supporter's reply), and the PI: situation, problem, emotion, strategy."""
    rng = random.Random(seed)
    out = []
    for d in dialogues:
        points = [i for i in reply_points(d) if i >= min_history]
        if not points:
            continue
        chosen = sorted(points if per_dialogue <= 0 or per_dialogue >= len(points) else rng.sample(points, per_dialogue))
        for i in chosen:
            history = d["turns"][max(0, i - history_turns) : i]
            # The seeker's turns right before the reply (they may write several in a row).
            last = []
            for t in reversed(history):
                if t["speaker"] != "seeker":
                    break
                last.insert(0, t["text"])
            out.append({
                "dialogue_id": f"{d['dialogue_id']}-t{i:03d}",
                "turn": i,
                "history": render_history(history),
                "utterance": " ".join(last),
                "reference": d["turns"][i]["text"],
                "situation": d["situation"],
                "problem": d["problem_type"],
                "emotion": d["emotion_type"],
                "strategy": d["turns"][i]["strategy"],
            })
    return out
