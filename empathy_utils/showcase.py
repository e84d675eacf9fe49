"""Replies side by side: what the base, SFT and SFT→DPO students (and the teacher, where the run
has its replies) said to the same test dialogues. A win rate says which side a judge preferred; a
few replies next to each other show what it was choosing between.

Shown only for the project's own embedded corpus: research data is never printed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .artifacts import RunPaths
from .config import StudyConfig
from .data import read_jsonl
from .errors import StudyError

STUDENT_LABELS = {"base": "base student", "sft": "SFT student", "dpo": "SFT→DPO student", "teacher": "teacher"}


def side_by_side_replies(cfg: StudyConfig, run_dir: str | Path, n: int = 3) -> pd.DataFrame | None:
    """The first ``n`` test dialogues (in the test file's order), one column each (headed by the
    speaker's emotion): the speaker's turn and every student's reply. ``None`` when the run's data is
    not the embedded corpus."""
    if cfg.data.source != "embedded-corpus":
        return None
    paths = RunPaths(run_dir)
    if not paths.test_data.exists():
        raise StudyError(f"{paths.test_data}: missing; run the datasets stage first")
    dialogues = read_jsonl(paths.test_data)[:n]
    columns = {}
    for student, label in STUDENT_LABELS.items():
        replies_file = paths.generation_file(student)
        if replies_file.exists():
            by_dialogue = {r["dialogue_id"]: r["reply"] for r in read_jsonl(replies_file)}
            columns[label] = [by_dialogue.get(d["dialogue_id"], "(no reply)") for d in dialogues]
    if not columns:
        raise StudyError(f"{paths.generations}: no replies; run the generate stage first")
    frame = pd.DataFrame({"emotion": [d["emotion"] for d in dialogues],
                          "the speaker says": [d["utterance"] for d in dialogues], **columns})
    return frame.set_index("emotion").T
