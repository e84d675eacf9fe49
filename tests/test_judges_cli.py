"""`empathy-study judge --pairs IN.jsonl --out OUT.jsonl [--judge NAME]`: output format, resuming
without re-judging, and bad lines named by file and line."""

from __future__ import annotations

import json

import pytest

from empathy_utils.cli import main
from empathy_utils.errors import DataError
from empathy_utils.judges import LongerReplyJudge, judge_file, read_pairs

PAIRS = [
    {"id": 1, "context": "I got the job!", "utterance": "I start on Monday.", "extra": "ignored",
     "response_a": "Congratulations, you must be thrilled after all that work!", "response_b": "Ok."},
    {"id": "two", "context": "My dog died.", "utterance": "I miss him so much.",
     "response_a": "Sorry.", "response_b": "That is so hard; he was part of your family."},
    {"id": 3, "context": "Exam tomorrow.", "utterance": "I am nervous.",
     "response_a": "You will do fine.", "response_b": "You can do it."},
]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


class CountingJudge(LongerReplyJudge):
    def __init__(self):
        self.seen = []

    def judge(self, items):
        self.seen += [it["id"] for it in items]
        return super().judge(items)


def test_cli_writes_one_verdict_per_pair_and_resumes(tmp_path, capsys):
    pairs, out = _write(tmp_path / "in.jsonl", PAIRS), tmp_path / "out.jsonl"
    assert main(["judge", "--pairs", str(pairs), "--out", str(out), "--judge", "longer"]) == 0
    rows = _lines(out)
    assert [r["id"] for r in rows] == [1, "two", 3]
    assert [r["verdict"] for r in rows] == ["a", "b", "tie"]
    assert all(set(r) == {"id", "verdict", "judge"} and "longer reply wins" in r["judge"] for r in rows)
    assert "3 pairs (0 already judged, 3 now)" in capsys.readouterr().out
    assert main(["judge", "--pairs", str(pairs), "--out", str(out), "--judge", "longer"]) == 0
    assert "(3 already judged, 0 now)" in capsys.readouterr().out and len(_lines(out)) == 3


def test_resume_judges_only_what_is_missing_and_drops_a_cut_last_line(tmp_path):
    pairs, out = _write(tmp_path / "in.jsonl", PAIRS), tmp_path / "out.jsonl"
    judge = CountingJudge()
    first = judge.judge([PAIRS[0]])[0]
    out.write_text(json.dumps({"id": 1, "verdict": first["verdict"], "judge": judge.name}) + "\n"
                   + '{"id": "two", "verdi')  # a run interrupted mid-write
    judge.seen.clear()
    logs = []
    counts = judge_file(judge, pairs, out, chunk_size=1, log=logs.append)
    assert judge.seen == ["two", 3], "pair 1 was judged already and must not be judged again"
    assert counts["already_judged"] == 1 and counts["judged_now"] == 2
    assert [r["id"] for r in _lines(out)] == [1, "two", 3]
    assert any("incomplete last line dropped" in m for m in logs)


def test_output_of_another_judge_is_not_mixed_in(tmp_path):
    pairs, out = _write(tmp_path / "in.jsonl", PAIRS), tmp_path / "out.jsonl"
    _write(out, [{"id": 1, "verdict": "a", "judge": "some other judge"}])
    with pytest.raises(DataError, match=r"out.jsonl, line 1: written by judge 'some other judge'"):
        judge_file(LongerReplyJudge(), pairs, out)


@pytest.mark.parametrize("bad, message", [
    ("{not json", r"in.jsonl, line 2: not valid JSON"),
    ({"id": 9, "context": "c", "utterance": "u", "response_a": "x"}, r"in.jsonl, line 2: missing field\(s\) response_b"),
    ({"id": 9, "context": "c", "utterance": "u", "response_a": "x", "response_b": 5},
     r"in.jsonl, line 2, field response_b: expected text"),
    ({"id": 1, "context": "c", "utterance": "u", "response_a": "x", "response_b": "y"},
     r"in.jsonl, line 2, field id: 1 already used on line 1"),
    ({"id": 9, "context": "c", "utterance": "u", "response_a": " ", "response_b": "y"},
     r"in.jsonl, line 2, field response_a: empty reply"),
    ("[1, 2]", r"in.jsonl, line 2: expected a JSON object"),
])
def test_bad_lines_are_named(tmp_path, bad, message):
    path = _write(tmp_path / "in.jsonl", [PAIRS[0], bad])
    with pytest.raises(DataError, match=message):
        read_pairs(path)


def test_cli_reports_a_bad_line_without_a_traceback(tmp_path, capsys):
    path = _write(tmp_path / "in.jsonl", [PAIRS[0], "", "{oops"])
    assert main(["judge", "--pairs", str(path), "--out", str(tmp_path / "o.jsonl"), "--judge", "longer"]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl, line 3: not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists(), "nothing is judged before every line has been read"


def test_cli_with_a_model_judge_gives_probabilities(tmp_path, tiny_spec, capsys):
    """A named judge with the profile's settings (here the tiny likelihood judge) and, for the default,
    the fallback judge of a profile without a validation; p_a only where the judge has one."""
    pairs, out = _write(tmp_path / "in.jsonl", PAIRS), tmp_path / "out.jsonl"
    assert main(["judge", "--pairs", str(pairs), "--out", str(out), "--judge", "likelihood", "--profile", "tiny",
                 "--set", f"judge.model={tiny_spec}"]) == 0
    rows = _lines(out)
    assert len(rows) == 3 and all("p_a" not in r and r["judge"].startswith("likelihood local:tiny") for r in rows)
    assert "replies stripped of instructions" in rows[0]["judge"]
    out2 = tmp_path / "out2.jsonl"
    assert main(["judge", "--pairs", str(pairs), "--out", str(out2), "--profile", "tiny",
                 "--set", "run.output_root=" + str(tmp_path / "no-runs"), "--set", "judge.fallback=pairwise-llm"]) == 0
    err = capsys.readouterr().err
    assert "fallback" in err and "unmeasured" in err
    rows = _lines(out2)
    assert all(0 <= r["p_a"] <= 1 and r["judge"].startswith("pairwise local:tiny random Llama") for r in rows)
