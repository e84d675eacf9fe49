"""Judging files of pairs from the command line: reading, resuming, writing verdicts."""

from __future__ import annotations

import json
import os
from pathlib import Path


from .base import VERDICTS, Judge

# ------------------------------------------------------------------------------ judging files
PAIR_FIELDS = ("id", "context", "utterance", "response_a", "response_b")


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of pairs to judge; every problem names the file and the line."""
    from ..data import jsonl_records
    from ..errors import DataError

    items, seen = [], {}
    for where, line_no, rec in jsonl_records(path):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object with fields {', '.join(PAIR_FIELDS)}")
        missing = [k for k in PAIR_FIELDS if k not in rec]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)} (each line needs "
                            f"{', '.join(PAIR_FIELDS)}; other fields are ignored)")
        if not isinstance(rec["id"], (str, int)) or isinstance(rec["id"], bool):
            raise DataError(f"{where}, field id: expected a string or an integer, got {rec['id']!r}")
        for k in PAIR_FIELDS[1:]:
            if not isinstance(rec[k], str):
                raise DataError(f"{where}, field {k}: expected text, got {type(rec[k]).__name__} {rec[k]!r}")
        for k in ("response_a", "response_b"):
            if not rec[k].strip():
                raise DataError(f"{where}, field {k}: empty reply")
        key = str(rec["id"])
        if key in seen:
            raise DataError(f"{where}, field id: {rec['id']!r} already used on line {seen[key]}")
        seen[key] = line_no
        items.append({k: rec[k] for k in PAIR_FIELDS})
    return items


def read_verdicts(path: str | os.PathLike, judge_name: str, log=print) -> dict[str, dict]:
    """Verdicts already in an output file (to resume without re-judging). A last line cut off by an
    interrupted run is dropped; any other bad line, or a file written by another judge, is an error."""
    from ..errors import DataError

    path = Path(path)
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    done: dict[str, dict] = {}
    good_length = 0
    last = max((i for i, line in enumerate(lines, start=1) if line.strip()), default=0)
    for line_no, line in enumerate(lines, start=1):
        is_last = line_no >= last
        if not line.strip():
            good_length += len(line) + (0 if is_last else 1)
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "id" not in rec or "verdict" not in rec:
                raise ValueError("expected an object with id and verdict")
        except (json.JSONDecodeError, ValueError) as exc:
            if is_last:  # an interrupted write: judge that pair again
                log(f"{path}, line {line_no}: incomplete last line dropped; that pair is judged again")
                with open(path, "r+", encoding="utf-8") as f:
                    f.truncate(len(text[:good_length].encode("utf-8")))
                break
            raise DataError(f"{path}, line {line_no}: not a verdict line ({exc}); fix or remove the file") from None
        if rec.get("judge") != judge_name:
            raise DataError(f"{path}, line {line_no}: written by judge {rec.get('judge')!r}, not {judge_name!r}; "
                            "resume with the same --judge, or write to another --out file")
        done[str(rec["id"])] = rec
        good_length += len(line) + (0 if is_last else 1)
    return done


def judge_file(judge: Judge, pairs_path: str | os.PathLike, out_path: str | os.PathLike, chunk_size: int = 64,
               log=print) -> dict:
    """Judge every pair of ``pairs_path`` not yet in ``out_path``; append verdicts chunk by chunk
    (each line: id, verdict, p_a where the judge gives a probability, judge). Returns counts."""
    items = read_pairs(pairs_path)
    done = read_verdicts(out_path, judge.name, log=log)
    unknown = [k for k in done if k not in {str(it["id"]) for it in items}]
    if unknown:
        from ..errors import DataError

        raise DataError(f"{out_path}: holds verdicts for id(s) not in {pairs_path} (e.g. {unknown[0]!r}); "
                        "write to another --out file")
    todo = [it for it in items if str(it["id"]) not in done]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        with open(out, "a", encoding="utf-8") as f:
            f.write("\n")
    counts = {"pairs": len(items), "already_judged": len(items) - len(todo), "judged_now": 0}
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        records = judge.judge(chunk)
        with open(out, "a", encoding="utf-8") as f:
            for it, rec in zip(chunk, records):
                row = {"id": it["id"], "verdict": rec["verdict"]}
                if judge.gives_probability:
                    row["p_a"] = rec.get("p_a")
                row["judge"] = judge.name
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        counts["judged_now"] += len(chunk)
        log(f"judged {counts['already_judged'] + counts['judged_now']} / {len(items)} pairs")
    verdicts = [r["verdict"] for r in read_verdicts(out, judge.name, log=log).values()]
    counts.update({v: verdicts.count(v) for v in VERDICTS})
    return counts
