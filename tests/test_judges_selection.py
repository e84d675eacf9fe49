"""Choosing a judge apart from measuring it: the selection/report split, the calibrated tie band,
the refusal of a judge that ties most pairs, the packaged fallback judge, and the stacked judge's
train-split-only fit."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from empathy_utils import judge_validation as jv
from empathy_utils.config import StudyConfig
from empathy_utils.data import load_llms_vs_humans
from empathy_utils.errors import StudyError
from empathy_utils.judge_validation import calibration, offline
from empathy_utils.judges import Judge, LikelihoodJudge, ScoreJudge

from test_judges_validation import KeywordJudge, fake_data  # noqa: F401  (fixture)


def _pairs(n_dialogues: int, per: int = 4) -> pd.DataFrame:
    return pd.DataFrame([{"pair_id": f"d{d}:{k}", "dialogue_id": f"d{d}", "human": "a"} for d in range(n_dialogues)
                         for k in range(per)])


# ------------------------------------------------------------------------------------- split
def test_selection_and_report_sets_split_by_dialogue_and_are_fixed_by_the_seed():
    pairs = _pairs(40)
    sel, rep = jv.pairs.split_selection_report(pairs, seed=0, selection_share=0.25)
    assert not set(sel["dialogue_id"]) & set(rep["dialogue_id"]), "a dialogue must not be in both sets"
    assert len(sel) + len(rep) == len(pairs), "every pair lands in exactly one set"
    assert sel["dialogue_id"].nunique() == 10, "a quarter of the 40 dialogues go to selection"
    again, _ = jv.pairs.split_selection_report(pairs.sample(frac=1, random_state=3), seed=0, selection_share=0.25)
    assert set(again["dialogue_id"]) == set(sel["dialogue_id"]), "the split depends on the seed, not the row order"
    other, _ = jv.pairs.split_selection_report(pairs, seed=1, selection_share=0.25)
    assert set(other["dialogue_id"]) != set(sel["dialogue_id"]), "another seed gives another split"
    with pytest.raises(StudyError, match="selection_share"):
        jv.pairs.split_selection_report(pairs, seed=0, selection_share=1.0)


# --------------------------------------------------------------------------------- calibration
def test_tie_band_is_chosen_on_the_selection_set_where_confident_verdicts_are_right():
    # Near 0.5 the judge is a coin (wrong more often than right here); far from it, always right.
    p_a = [0.52, 0.48, 0.51, 0.49, 0.9, 0.1, 0.85, 0.15, 0.95, 0.05, 0.8, 0.2, 0.9, 0.1, 0.88, 0.12]
    human = ["b", "a", "b", "a", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]
    band = calibration.choose_tie_band(p_a, human)
    assert band["delta"] >= 0.03, f"the near-0.5 wrong verdicts should be banded into ties, got {band}"
    verdicts = calibration.banded_verdicts(p_a, band["delta"])
    assert verdicts[:4] == ["tie"] * 4, verdicts
    assert verdicts[4:6] == ["a", "b"], verdicts
    # A band that would tie more than the cap is not allowed.
    capped = calibration.choose_tie_band(p_a, human, grid=(0.0, 0.49), max_ties=0.5)
    assert capped["delta"] == 0.0, capped


def test_temperature_fits_the_scale_and_refuses_backward_scores():
    rng = np.random.default_rng(0)
    diffs = rng.normal(size=400) * 3.0
    human = ["a" if rng.random() < 1 / (1 + np.exp(-d / 3.0)) else "b" for d in diffs]
    t = calibration.fit_temperature(list(diffs), human)
    assert t is not None and 1.5 < t < 6.0, f"the generating temperature is 3, fitted {t}"
    flipped = ["b" if h == "a" else "a" for h in human]
    assert calibration.fit_temperature(list(diffs), flipped) is None, "scores pointing the wrong way give no probability"


def test_reliability_counts_pairs_per_bin_and_the_figure_is_drawn():
    table = calibration.reliability([0.1, 0.15, 0.9, 0.95, None], ["b", "a", "a", "a", "a"], bins=5)
    assert list(table["pairs"]) == [2, 0, 0, 0, 2], table
    assert table["people_prefer_a"].iloc[0] == pytest.approx(0.5)
    fig = calibration.reliability_figure({"fake": table})
    assert len(fig.axes[0].lines) == 2, "the diagonal and one judge"


# ----------------------------------------------------------------------------------- refusal
class TieEverythingJudge(Judge):
    """Like the pairwise 135 M judge: its two orders always disagree, so every pair is a tie."""

    kind = "pairwise-llm"
    name = "ties everything (fake)"
    order_free = False

    def judge(self, items):
        return [{"id": it["id"], "verdict": "tie", "p_a": None, "a_first": "a", "b_first": "b", "judge": self.name}
                for it in items]


class BackwardJudge(ScoreJudge):
    """Prefers the reply people liked less: worse than a coin (and so worse than tying everything)."""

    kind = "likelihood"
    name = "backward keyword judge (fake)"

    def score(self, prompts, replies):
        return np.array([-float("here for you" in r) for r in replies])


def test_a_judge_that_ties_most_pairs_is_reported_and_never_selected(fake_data, tmp_path):  # noqa: F811
    cfg = StudyConfig.from_dict({"judge_validation": {"candidates": ["likelihood"], "adversarial_pairs": 0,
                                                      "bootstrap_resamples": 50, "test_pairs": 0}})
    report = jv.run_validation(cfg, tmp_path, judges={"likelihood": BackwardJudge(), "pairwise-llm": TieEverythingJudge()},
                               log=lambda m: None)
    rows = {j["name"]: j for j in report["judges"]}
    ties = rows["ties everything (fake)"]
    assert ties["selection"]["tie_rate"] == 1.0 and ties["position_consistency"] == 0.0
    assert "cannot decide" in ties["refused"], ties["refused"]
    assert rows["backward keyword judge (fake)"]["selection"]["accuracy"] < 0.5, "the fake is worse than ties"
    assert report["selected"]["name"] == "backward keyword judge (fake)", "the tie-everything judge is refused"
    summary = jv.statements(report, cfg)["validation_summary"]
    assert "ties everything (fake)" in summary
    assert "validated in this run (judge_validation.candidates): likelihood judge, pairwise LLM judge;" in summary
    assert "likelihood framing" in summary
    report["judges"] = [j for j in report["judges"] if j["kind"] != "likelihood"]
    summary = jv.statements(report, cfg)["validation_summary"]
    assert "candidates): pairwise LLM judge;" in summary and "likelihood framing" not in summary


def test_selection_uses_the_selection_set_and_reports_the_report_set(fake_data, tmp_path):  # noqa: F811
    cfg = StudyConfig.from_dict({"judge_validation": {"candidates": ["likelihood"], "adversarial_pairs": 0,
                                                      "bootstrap_resamples": 50}})
    report = jv.run_validation(cfg, tmp_path, judges={"likelihood": KeywordJudge()}, log=lambda m: None)
    sel, row = report["selected"], report["judges"][0]
    assert sel["set"] == "report" and sel["pairs"] == report["data"]["report_pairs"] == row["pairs"]
    assert sel["accuracy"] == row["accuracy"] and sel["selection_accuracy"] == row["selection"]["accuracy"]
    assert (sel["ci_low"], sel["ci_high"]) == (row["ci_low"], row["ci_high"])
    verdict_ids = [json.loads(x)["pair_id"] for x in (tmp_path / "results" / "judge_validation_verdicts.jsonl").open()]
    frame = load_llms_vs_humans(fake_data)
    sel_pairs, rep_pairs = jv.pairs.split_selection_report(jv.rating_pairs(frame, "test", cfg.run.seed),
                                                           cfg.judge_validation.split_seed, 0.5)
    assert set(verdict_ids) == set(rep_pairs["pair_id"]), "the reported verdicts are the report set's"
    assert not set(verdict_ids) & set(sel_pairs["pair_id"])
    # The table shows selection and report accuracy side by side, and marks the selected judge.
    table = jv.validation_table(report)
    assert {"selection accuracy (pairs)", "report accuracy, ties ½ (pairs)"} <= set(table.columns)
    label = jv.judge_labels(report)["keyword judge (fake)"]
    assert label == "likelihood judge", "one judge of its kind: the table names it by its kind"
    assert table.loc[label, "note"] == "selected"
    from empathy_utils.presentation import validation_displays

    html = validation_displays(report, table, None, None)["table_display"].data
    assert "<strong>likelihood judge</strong>: keyword judge (fake)" in html, "the full name is listed under the table"


# ----------------------------------------------------------------------------- packaged fallback
def _measurement(tiny_spec: str) -> dict:
    def stats(acc, ties):
        return {"pairs": 40, "accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1, "tie_rate": ties,
                "position_consistency": None, "accuracy_human_vs_llm": 0.6, "picks_longer": 0.5, "by_length": {}}

    lik = {"kind": "likelihood", "model": tiny_spec, "condition": "plain", "score": "mean", "temperature": 0.5,
           "tie_margin": 0.0}
    base = {"longer_wins": {"accuracy": 0.52, "ci_low": 0.4, "ci_high": 0.6, "pairs": 40},
            "llm_wins": {"accuracy": 0.58, "ci_low": 0.4, "ci_high": 0.7, "pairs": 20}, "human_picks_longer": 0.5,
            "human_by_length": {}}
    cands = [{"name": "tiny likelihood", "settings": lik, "selection": stats(0.6, 0.0), "report": stats(0.62, 0.0),
              "refused": None},
             {"name": "tiny pairwise", "settings": {"kind": "pairwise-llm", "model": tiny_spec},
              "selection": stats(0.7, 0.9), "report": None, "refused": None}]
    for c in cands:
        c["refused"] = offline.refusal(c)
    chosen = offline.choose(cands)
    return {"date": "2026-11-30", "git_commit": "0123456789abcdef", "data": {"sha256": "f" * 64},
            "candidates": cands, "baselines": {"report": base, "selection": base}, "baseline_rows": [],
            "selected": {"name": chosen["name"], "settings": chosen["settings"]}}


def test_fallback_auto_is_the_best_measured_decisive_judge_of_the_packaged_file(tmp_path, monkeypatch, tiny_spec):
    from empathy_utils.stages import make_judge, validate_judges

    m = _measurement(tiny_spec)
    assert "cannot decide" in m["candidates"][1]["refused"], "a judge tying 90 % of pairs is refused"
    assert m["selected"]["name"] == "tiny likelihood", "chosen although its selection accuracy is lower"
    path = tmp_path / "judge_measurements.json"
    path.write_text(json.dumps(m))
    monkeypatch.setattr(offline, "measurement_path", lambda: path)
    monkeypatch.delenv("EMPATHY_DATA_DIR", raising=False)
    cfg = StudyConfig.from_dict({"judge": {"fallback": "auto"}})
    result = validate_judges(cfg, tmp_path / "run")
    sel = result["report"]["selected"]
    assert sel["source"] == "packaged measurement" and sel["set"] == "report"
    assert (sel["accuracy"], sel["ci_low"], sel["ci_high"], sel["pairs"]) == (0.62, 0.52, 0.72, 40)
    assert sel["measured_on"] == "2026-11-30" and sel["commit"] == "0123456789abcdef"
    assert "2026-11-30" in result["validation_summary"] and "tiny pairwise" in result["validation_summary"]
    judge = make_judge(cfg, tmp_path / "run")
    inner = judge.inner
    assert isinstance(inner, LikelihoodJudge) and inner.condition == "plain" and inner.temperature == 0.5
    assert judge.validity["validated"] and judge.validity["source"] == "packaged measurement"
    assert "62.0 %" in judge.validity["statement"]
    # set against both baselines of the same report pairs (interval 52-72 %: above 52 %? no; above 58 %? no)
    assert "58.0 % for \u201cthe LLM's reply wins\u201d on their 20 human-vs-LLM pairs" in judge.validity["statement"]
    assert judge.validity["statement"].endswith("Its interval lies above neither.")
    assert judge.validity["llm_wins"] == 0.58
    # The CLI's default judge on a fresh clone (no run folder): the same packaged judge, deciding.
    pairs = tmp_path / "in.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "context": "c", "utterance": f"I lost my keys {i}.",
                                         "response_a": "Oh no, that is stressful; where did you last see them?",
                                         "response_b": f"Keys {i}."}) + "\n" for i in range(6)))
    from empathy_utils.cli import main

    out = tmp_path / "out.jsonl"
    assert main(["judge", "--pairs", str(pairs), "--out", str(out), "--profile", "default",
                 "--set", "run.output_root=" + str(tmp_path / "no-runs")]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["verdict"] != "tie" for r in rows) > len(rows) / 2, rows
    assert all(r["judge"].startswith("likelihood local:tiny random Llama") for r in rows)


def test_the_shipped_measurement_names_a_decisive_judge_with_its_provenance():
    m = offline.packaged_measurement()
    sel = offline.selected_from_packaged(m)
    assert sel is not None, "the shipped measurement must choose a judge"
    row = next(c for c in m["candidates"] if c["name"] == sel["name"])
    assert row["refused"] is None and row["selection"]["tie_rate"] <= offline.MAX_TIE_RATE
    assert sel["pairs"] > 0 and sel["ci_low"] <= sel["accuracy"] <= sel["ci_high"]
    assert len(m["data"]["sha256"]) == 64 and m["date"] and m["git_commit"]
    for c in m["candidates"]:
        if c["refused"] is None and c["selection"]["accuracy"] is not None:
            assert c["selection"]["accuracy"] <= row["selection"]["accuracy"], "the best allowed one is chosen"


# -------------------------------------------------------------------------------- stacked judge
def test_stacked_judge_fits_on_train_split_pairs_only(fake_data, tiny_spec, monkeypatch, tmp_path):  # noqa: F811
    from empathy_utils.judge_validation.stacked import fit_stacked

    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    frame = load_llms_vs_humans(fake_data)
    likelihood = LikelihoodJudge(tiny_spec, batch_size=8)
    test_pairs = jv.rating_pairs(frame, "test", 0)
    with pytest.raises(StudyError, match="train-split pairs only"):
        fit_stacked(test_pairs, likelihood)
    v = StudyConfig.from_dict({"judge_validation": {"scorer_model": tiny_spec, "stacked_train_pairs": 0}}).judge_validation
    judge = jv.learned_judge("stacked", frame, v, 0, log=lambda m: None)
    train_ids = set(frame.loc[frame["split"] == "train", "dialogue_id"])
    seen = set(judge.training["train_dialogue_ids"])
    assert seen and seen <= train_ids, "only train-split dialogues were seen"
    assert judge.training["splits_seen"] == ["train"]
    # In this made-up data the kind (long) reply is the better one: the stacked judge learns it.
    records = judge.judge(jv.judge_items(test_pairs))
    agree = np.mean([r["verdict"] == h for r, h in zip(records, test_pairs["human"])])
    assert agree > 0.7, f"the stacked judge should learn 'longer is kinder' here, agreement {agree}"
    assert all(0 <= r["p_a"] <= 1 for r in records)


def test_the_packaged_table_labels_candidates_briefly_and_says_when_they_were_measured():
    """Read in the built book, the shipped measurement's table had ten-line judge names in its first
    column, intervals broken over three lines, and a caption saying nothing was measured."""
    from html import unescape

    from empathy_utils.presentation import validation_displays

    m = offline.packaged_measurement()
    labels = jv.packaged_labels(m)
    assert len(set(labels.values())) == len(labels) == len(m["candidates"]), "one row per candidate"
    assert max(map(len, labels.values())) <= 64, labels
    table = jv.packaged_table(m)
    chosen = labels[m["selected"]["name"]]
    assert chosen == "likelihood: PMI, speaker's turn" and table.loc[chosen, "note"] == "selected"
    # the note ("selected", "never selected: ...") first, and each accuracy with its pairs in one cell:
    # ten columns ran past the page's right edge and hid the notes
    assert list(table.columns[:2]) == ["note", "selection accuracy (pairs)"] and len(table.columns) == 8
    report = next(c for c in m["candidates"] if c["name"] == m["selected"]["name"])["report"]
    assert table.loc[chosen, "report accuracy, ties ½ (pairs)"] == f"{100 * report['accuracy']:.1f}\u00a0% ({report['pairs']})"
    cells = [c for c in table.drop(columns="note").to_numpy().ravel() if isinstance(c, str)]
    assert not [c for c in cells if re.search(r"\d %|– ", c)], "a number split from its % or its interval"
    html = unescape(validation_displays({"status": "no-data", "packaged": m}, table, None, None)["table_display"].data)
    assert f"the packaged measurement of {m['date']}, commit {m['git_commit'][:7]}" in html
    assert "nothing measured" not in html
    assert all(f"{label}</strong>: {name}" in html for name, label in labels.items()), "full names under the table"
