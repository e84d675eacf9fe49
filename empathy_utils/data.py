"""Dialogue data: the LLMs-vs-Humans ratings (research data, read from the data directory) and the
project's own embedded corpus (shipped in the package, so the default study needs no download).

Both loaders return the same frame, one row per dialogue:
``dialogue_id, emotion, situation, utterance, reference_reply, split`` — and, for LLMs-vs-Humans,
``response_<source>`` and ``rating_<source>`` for source in human, gpt4, llama2, gemini, mixtral.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd

from .errors import DataError
from .paths import resolve_data_dir, resources_dir

LVH_FOLDER = "llms-vs-humans"
LVH_FILE = "dataset.csv"
# Column suffix in the published CSV -> our short source name.
LVH_SOURCES = {
    "human": "human",
    "chatgpt_empathy": "gpt4",
    "llama_empathy": "llama2",
    "gemini_empathy": "gemini",
    "mixtral_empathy": "mixtral",
}
SOURCE_LABELS = {
    "human": "human listener",
    "gpt4": "GPT-4",
    "llama2": "LLaMA-2-70B-Chat",
    "gemini": "Gemini-1.0-Pro",
    "mixtral": "Mixtral-8x7B",
}
RATING_NAMES = {1: "Bad", 2: "Okay", 3: "Good"}
GOOD = 3
# Xie et al.: a dialogue is test when fewer than two of its five replies are rated Good.
TEST_MAX_GOOD = 1

CORPUS_FILE = "situations.jsonl"
CORPUS_FIELDS = ("id", "emotion", "situation", "speaker_utterance", "reference_reply")

ED_EMOTIONS = (
    "sad trusting terrified caring disappointed faithful joyful jealous disgusted surprised ashamed afraid "
    "impressed sentimental devastated excited anticipating annoyed anxious furious content lonely angry "
    "confident apprehensive guilty embarrassed grateful hopeful proud prepared nostalgic"
).split()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- LLMs-vs-Humans
def jsonl_records(path: str | Path):
    """Yield ``(where, line_no, record)`` for each non-blank line of a JSONL file, where ``where``
    ("<file>, line N") starts every error message about that record. A missing file, text that is
    not UTF-8 or a line that is not JSON stops with a DataError naming the file and the line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {line_no}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                yield where, line_no, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of a JSONL file (errors name the file and the line, as jsonl_records does)."""
    return [record for _, _, record in jsonl_records(path)]


def save_jsonl(rows: list[dict], path: str | Path) -> None:
    """Write records one per line (UTF-8, not ASCII-escaped), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def lvh_csv_path(data_dir: str | Path | None = None) -> Path:
    folder = resolve_data_dir(data_dir, need=LVH_FOLDER) / LVH_FOLDER
    path = folder / LVH_FILE
    if not path.exists():
        raise DataError(f"{path}: file not found; place the LLMs-vs-Humans dataset.csv there (see book/reproduce.md)")
    return path


def load_llms_vs_humans(data_dir: str | Path | None = None, path: str | Path | None = None) -> pd.DataFrame:
    """Read and check ``dataset.csv``; every problem names the file, the row (and its line) and the field."""
    path = Path(path) if path else lvh_csv_path(data_dir)
    text_cols = ["dialog_id", "emotion", "situation", "speaker_uttr"] + [f"response_{s}" for s in LVH_SOURCES]
    rating_cols = [f"rating_{s}" for s in LVH_SOURCES]
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in text_cols + rating_cols if c not in header]
            # Who rated each reply (an anonymous id per rater), where the file has it: the published
            # file does; it is read only to describe the rating design (book/judges.md), never by a judge.
            rater_cols = [f"annotator_{s}" for s in LVH_SOURCES if f"annotator_{s}" in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; is this the LLMs-vs-Humans dataset.csv?"
                )
            for i, rec in enumerate(reader, start=1):
                where = f"{path}, row {i} (line {reader.line_num})"
                if None in rec or any(v is None for v in rec.values()):
                    raise DataError(f"{where}: wrong number of fields (expected {len(header)}); check quoting")
                out = {}
                for col in text_cols:
                    value = rec[col].strip()
                    if not value:
                        raise DataError(f"{where}, field {col}: empty")
                    out[col] = value
                for col in rating_cols:
                    raw = rec[col].strip()
                    if raw not in ("1", "2", "3"):
                        raise DataError(f"{where}, field {col}: {raw!r} is not a rating (1 = Bad, 2 = Okay, 3 = Good)")
                    out[col] = int(raw)
                for col in rater_cols:
                    value = rec[col].strip()
                    if not value:
                        raise DataError(f"{where}, field {col}: empty (a rater id was expected)")
                    out[col] = value
                rows.append(out)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    raw = pd.DataFrame(rows)
    dupes = raw["dialog_id"][raw["dialog_id"].duplicated()]
    if len(dupes):
        first = dupes.index[0] + 1
        raise DataError(f"{path}, row {first}, field dialog_id: duplicate id {dupes.iloc[0]!r}")
    frame = pd.DataFrame(
        {
            "dialogue_id": raw["dialog_id"],
            "emotion": raw["emotion"],
            "situation": raw["situation"],
            "utterance": raw["speaker_uttr"],
            "reference_reply": raw["response_human"],
        }
    )
    for col, short in LVH_SOURCES.items():
        frame[f"response_{short}"] = raw[f"response_{col}"]
        frame[f"rating_{short}"] = raw[f"rating_{col}"].astype(int)
        if f"annotator_{col}" in raw:
            frame[f"rater_{short}"] = raw[f"annotator_{col}"]
    frame["split"] = split_llms_vs_humans(frame)
    frame.attrs["source_file"] = str(path)
    frame.attrs["sha256"] = sha256_file(path)
    return frame


def split_llms_vs_humans(frame: pd.DataFrame) -> pd.Series:
    """Xie et al.'s rule: test when fewer than 2 of the 5 replies are rated Good (250 / 1,750)."""
    good = sum((frame[f"rating_{s}"] == GOOD).astype(int) for s in LVH_SOURCES.values())
    return pd.Series(["test" if g <= TEST_MAX_GOOD else "train" for g in good], index=frame.index)


# ------------------------------------------------------------------------------ embedded corpus
def corpus_path() -> Path:
    return resources_dir() / "corpus" / CORPUS_FILE


def load_embedded_corpus(path: str | Path | None = None) -> pd.DataFrame:
    """The project's own 96 situations (3 per ED emotion). The last item of each emotion is test:
    32 test dialogues, one per emotion, and 64 train."""
    path = Path(path) if path else corpus_path()
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
            for field_name in CORPUS_FIELDS:
                if not str(rec.get(field_name, "")).strip():
                    raise DataError(f"{path}, line {line_no}, field {field_name}: missing or empty")
            if rec["emotion"] not in ED_EMOTIONS:
                raise DataError(f"{path}, line {line_no}, field emotion: {rec['emotion']!r} is not an ED emotion")
            rows.append(rec)
    frame = pd.DataFrame(rows).rename(columns={"id": "dialogue_id", "speaker_utterance": "utterance"})
    position = frame.groupby("emotion").cumcount()
    size = frame.groupby("emotion")["dialogue_id"].transform("count")
    frame["split"] = ["test" if p == s - 1 else "train" for p, s in zip(position, size)]
    frame.attrs["source_file"] = str(path)
    frame.attrs["sha256"] = sha256_file(path)
    return frame


# ------------------------------------------------------------------------------------- both
def load_dialogues(source: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """The dialogues of ``data.source``: a source registered in :mod:`empathy_utils.sources`."""
    from .sources import load_source

    return load_source(source, data_dir)


def subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``n`` rows (0 or n >= len: all rows), kept in original order."""
    if n <= 0 or n >= len(frame):
        return frame
    picked = frame.sample(n=n, random_state=seed).index
    return frame.loc[sorted(picked)]


def split_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["split"].value_counts()
    return {"train": int(counts.get("train", 0)), "test": int(counts.get("test", 0))}
