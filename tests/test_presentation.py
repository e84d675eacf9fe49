"""presentation: one formatter per kind of number, one sentence per statistical situation, and the
judge's report-set accuracy printed beside every set of win rates (read from the run's
results/judge_validation.json), on synthetic inputs."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from empathy_utils.judging import JudgeAccuracy, read_judge_accuracy
from empathy_utils.presentation import (
    interval,
    interval_cell,
    interval_situation,
    judge_accuracy_sentence,
    lc_statement,
    percent,
    plain,
    position_statement,
    winrate_cell,
    winrate_sentence,
    winrate_sentences,
    winrate_texts,
)


def test_one_percent_formatter_and_one_plain_converter():
    assert percent(0.615) == "61.5 %"
    assert percent(0.615, 0) == "62 %"
    assert percent(None) == "—"
    assert percent(float("nan")) == "—"
    assert percent(np.float64(0.5)) == "50.0 %"
    assert interval(0.477, 0.686) == "47.7 % – 68.6 %"
    assert interval_cell(0.477, 0.686) == "47.7–\u206068.6\u00a0%" and interval_cell(float("nan"), 0.5) == "—"
    assert winrate_cell(0.391, 0.234, 0.547, 11, 3, 18) == "39.1\u00a0% (23.4–\u206054.7\u00a0%); 11/3/18"
    assert winrate_cell(float("nan"), None, None, 0, 0, 0) == "—; 0/0/0"
    assert interval(None, 0.5) == "—"
    # what the chapters glue for their sentences, in the same style as every sentence of the package
    assert winrate_texts({"win_rate": 0.297, "ci_low": 0.156, "ci_high": 0.453, "paper_win_rate": 0.281}) == {
        "win_rate_text": "29.7 %", "ci_text": "15.6 % – 45.3 %", "paper_win_rate_text": "28.1 %"}
    assert winrate_texts({}) == {"win_rate_text": "—", "ci_text": "—"}
    assert plain(np.int64(3)) == 3
    assert type(plain(np.int64(3))) is int
    assert plain(np.bool_(True)) is True
    assert math.isnan(plain(float("nan"))), "glue keeps NaN"
    assert plain({"a": [np.float32(0.25), float("nan")]}, nan=None) == {"a": [0.25, None]}, "JSON gets None"


@pytest.mark.parametrize("low, high, expected", [
    (0.55, 0.7, "above"), (0.2, 0.45, "below"), (0.45, 0.55, "includes"), (0.5, 0.6, "includes"),
    (float("nan"), 0.6, "unknown"), (None, None, "unknown"),
])
def test_interval_situation(low, high, expected):
    assert interval_situation(low, high) == expected


def _accuracy(low, high, source="run", detail=""):
    return JudgeAccuracy(name="the judge J", accuracy=(low + high) / 2, ci_low=low, ci_high=high, source=source,
                         detail=detail)


def test_judge_accuracy_sentence_warns_unless_the_interval_is_above_chance():
    assert "not measured" in judge_accuracy_sentence(None)
    assert "Warning" in judge_accuracy_sentence(None)
    good = judge_accuracy_sentence(_accuracy(0.6, 0.7))
    assert "Warning" not in good
    assert "65.0 %" in good
    assert "60.0 % – 70.0 %" in good
    assert "report-set" in good
    assert "in this run's validation" in good
    coin = judge_accuracy_sentence(_accuracy(0.45, 0.62))
    assert "Warning" in coin
    assert "includes 50 %" in coin
    assert "not findings" in coin
    worse = judge_accuracy_sentence(_accuracy(0.3, 0.45))
    assert "below 50 %" in worse
    packaged = judge_accuracy_sentence(_accuracy(0.6, 0.7, "packaged", "date 2026-11-30, commit abc"))
    assert "shipped with the code (date 2026-11-30, commit abc)" in packaged


def test_a_judge_above_chance_is_set_against_the_baselines_measured_on_its_pairs(tmp_path):
    """The writer-style judge's case: above chance, not above "the LLM's reply wins"; the sentence says so."""
    _write_validation(tmp_path, {"name": "judge W", "accuracy": 0.578, "ci_low": 0.527, "ci_high": 0.627,
                                 "longer_wins": 0.491, "llm_wins": 0.571})
    writer_like = read_judge_accuracy(tmp_path)
    assert (writer_like.longer_wins, writer_like.llm_wins) == (0.491, 0.571)
    sentence = judge_accuracy_sentence(writer_like)
    assert "lies above 50 %" in sentence
    assert "does not lie above \u201cthe LLM's reply wins\u201d (57.1 %" in sentence
    assert "preferring the reply an LLM wrote" in sentence
    assert "the longer reply wins" not in sentence, "a baseline it clears is not listed among those it does not"
    both_short = judge_accuracy_sentence(replace(writer_like, longer_wins=0.53))
    assert "\u201cthe longer reply wins\u201d (53.0 % on every pair) or \u201cthe LLM's reply wins\u201d" in both_short
    clear = judge_accuracy_sentence(replace(writer_like, ci_low=0.6))
    assert "also lies above" in clear and "49.1 %" in clear and "57.1 %" in clear and "does not" not in clear
    assert judge_accuracy_sentence(_accuracy(0.6, 0.7)).endswith("people's preferences."), "no baselines, no claim"
    coin = judge_accuracy_sentence(replace(writer_like, ci_low=0.45))
    assert "Warning" in coin and "LLM's reply wins" not in coin, "a judge at chance gets the warning alone"


def test_the_validity_statement_sets_the_interval_against_both_baselines(tmp_path):
    from types import SimpleNamespace

    from empathy_utils.judging import judge_validity

    judge = SimpleNamespace(kind="writer-style", name="judge W")

    def statement(ci_low, llm_pairs=287):
        report = {"status": "ok", "judges": [{"name": "judge W", "accuracy": 0.578, "ci_low": ci_low,
                                              "ci_high": 0.627, "pairs": 711}],
                  "baselines": {"longer_wins": {"accuracy": 0.491}, "llm_wins": {"accuracy": 0.571,
                                                                                 "pairs": llm_pairs}}}
        (tmp_path / "results").mkdir(exist_ok=True)
        (tmp_path / "results" / "judge_validation.json").write_text(json.dumps(report))
        return judge_validity(None, tmp_path, judge)["statement"]

    writer_like = statement(0.527)
    assert "\u201cthe longer reply wins\u201d scores 49.1 %" in writer_like
    assert "on their 287 human-vs-LLM pairs, \u201cthe LLM's reply wins\u201d 57.1 %" in writer_like
    assert writer_like.endswith("Its interval lies above \u201cthe longer reply wins\u201d but not above "
                                "\u201cthe LLM's reply wins\u201d.")
    assert statement(0.6).endswith("Its interval lies above both.")
    assert statement(0.45).endswith("Its interval lies above neither.")
    no_llm_pairs = statement(0.527, llm_pairs=0)
    assert "LLM's reply" not in no_llm_pairs and no_llm_pairs.endswith(
        "Its interval lies above \u201cthe longer reply wins\u201d.")


def _row(rate, low, high):
    return pd.Series({"comparison": "SFT→DPO student vs base student", "win_rate": rate, "ci_low": low,
                      "ci_high": high})


def test_a_win_rate_is_a_finding_only_from_a_judge_above_chance():
    trusted = _accuracy(0.6, 0.7)
    assert "first-named is preferred" in winrate_sentence(_row(0.7, 0.6, 0.8), trusted)
    assert "second-named is preferred" in winrate_sentence(_row(0.3, 0.2, 0.4), trusted)
    assert "no difference is shown" in winrate_sentence(_row(0.52, 0.4, 0.64), trusted)
    assert "no pair could be judged" in winrate_sentence(_row(float("nan"), float("nan"), float("nan")), trusted)
    for judge in (None, _accuracy(0.45, 0.62), _accuracy(0.3, 0.45)):
        sentence = winrate_sentence(_row(0.7, 0.6, 0.8), judge)
        assert "warning" in sentence
        assert "not a finding" in sentence
        assert "preferred" not in sentence
    both = winrate_sentences(pd.DataFrame([_row(0.7, 0.6, 0.8)]), trusted)
    assert both.splitlines()[0] == judge_accuracy_sentence(trusted), "the judge's accuracy comes first"


def test_position_and_length_control_sentences():
    assert "cannot change its verdict" in position_statement(pd.Series({"comparison": "x", "position_consistency": None}))
    both = position_statement(pd.Series({"comparison": "A vs B", "position_consistency": 0.25}))
    assert "on the A vs B pairs the two orders agreed 25 %" in both
    assert position_statement(None) == "No comparison was judged."
    assert lc_statement({"lc_win_rate": float("nan"), "lc_note": "not estimated: why"}) == "not estimated: why"
    assert lc_statement({"lc_win_rate": 0.6, "lc_ci_low": 0.5, "lc_ci_high": 0.7}) == \
        "60.0 % (bootstrap CI 50.0 % – 70.0 %)"


def _write_validation(run_dir, selected, status="ok"):
    (run_dir / "results").mkdir(parents=True, exist_ok=True)
    (run_dir / "results" / "judge_validation.json").write_text(json.dumps({"status": status, "selected": selected}))


def test_the_accuracy_is_read_from_the_selected_entry_in_every_case(tmp_path):
    assert read_judge_accuracy(tmp_path) is None, "no validation file: nothing measured"
    _write_validation(tmp_path, None, status="skipped")
    assert read_judge_accuracy(tmp_path) is None, "nothing selected: nothing measured"
    # as written today (no set, no source): measured in this run
    _write_validation(tmp_path, {"kind": "k", "name": "judge A", "accuracy": 0.6, "ci_low": 0.55, "ci_high": 0.66})
    acc = read_judge_accuracy(tmp_path, "judge A (instructions stripped)")
    assert (acc.name, acc.accuracy, acc.ci_low, acc.ci_high) == ("judge A", 0.6, 0.55, 0.66)
    assert (acc.source, acc.set) == ("run", "report")
    assert read_judge_accuracy(tmp_path, "judge B") is None, "another judge judged: its accuracy is not this one's"
    # a packaged measurement (no research data in this run), its source a mapping
    _write_validation(tmp_path, {"name": "judge A", "accuracy": 0.6, "ci_low": 0.52, "ci_high": 0.68,
                                 "set": "report", "source": {"kind": "packaged", "date": "2026-11-30",
                                                             "commit": "abc123"}}, status="skipped")
    acc = read_judge_accuracy(tmp_path, "judge A")
    assert acc.source == "packaged"
    assert acc.detail == "date 2026-11-30, commit abc123"
    _write_validation(tmp_path, {"name": "judge A", "accuracy": 0.6, "ci_low": 0.52, "ci_high": 0.68,
                                 "set": "report", "source": "measured in this run"})
    assert read_judge_accuracy(tmp_path, "judge A").source == "run"
    _write_validation(tmp_path, {"name": "judge A", "accuracy": None, "ci_low": None, "ci_high": None})
    assert read_judge_accuracy(tmp_path, "judge A") is None, "a selected entry without a measurement"


def test_a_run_without_validation_states_the_accuracy_its_judge_stage_recorded(tmp_path):
    """The dbt profile has no validate-judges stage: its DBT stage and the conclusions chapter state the
    packaged measurement its judge stage recorded, not "not measured"."""
    results = tmp_path / "results"
    results.mkdir()
    recorded = {"kind": "likelihood", "name": "likelihood local:M (pmi)", "validated": True, "accuracy": 0.509,
                "ci_low": 0.455, "ci_high": 0.563, "pairs": 711, "source": "packaged measurement"}
    (results / "judge.json").write_text(json.dumps(recorded))
    acc = read_judge_accuracy(tmp_path, "likelihood local:M (pmi); replies stripped of instructions to the judge")
    assert (acc.accuracy, acc.ci_low, acc.ci_high, acc.source) == (0.509, 0.455, 0.563, "packaged")
    assert read_judge_accuracy(tmp_path, "writer-style judge") is None, "another judge judged"
    (results / "judge.json").write_text(json.dumps({**recorded, "validated": False, "accuracy": None}))
    assert read_judge_accuracy(tmp_path, "likelihood local:M (pmi)") is None, "recorded as not measured"
    _write_validation(tmp_path, None, status="skipped")
    (results / "judge.json").write_text(json.dumps(recorded))
    assert read_judge_accuracy(tmp_path, "likelihood local:M (pmi)") is None, "the validation file decides"


def test_short_judge_names_read_as_names_in_a_sentence():
    from empathy_utils.presentation import short_judge_name

    assert short_judge_name("likelihood local:SmolLM2-135M-Instruct (mean token log-probability of the reply)") == \
        "the likelihood judge (SmolLM2-135M-Instruct)"
    assert short_judge_name("pairwise api:gpt-4o (generated text, both orders)") == "the pairwise judge (gpt-4o)"
    # a judge whose name already says "judge" is not called "the writer-style judge (judge)"
    assert short_judge_name("writer-style judge (all-MiniLM-L6-v2 embeddings -> which writer (x))") == \
        "the writer-style judge"
    assert short_judge_name("cross-encoder on all-MiniLM-L6-v2 (fine-tuned)") == "the cross-encoder on all-MiniLM-L6-v2"
    assert short_judge_name("longer reply wins (a baseline, not a judge of empathy)") == \
        'the baseline "longer reply wins"'
    assert short_judge_name("") == "an unnamed judge"
