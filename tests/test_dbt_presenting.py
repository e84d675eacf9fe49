"""The DBT chapter's tables and sentences (dbt/presenting.py) on hand-made results: shares read as the
study's one percentage formatter writes them, the judge's sentences come from what the stage returned,
and research data is never shown. No model runs here."""

from __future__ import annotations

import pandas as pd

import empathy_utils as eu
from empathy_utils.config import StudyConfig
from empathy_utils.dbt import presenting
from empathy_utils.dbt.labels import DBT_STAGES
from empathy_utils.dbt.stage import ROWS


def _card() -> dict:
    agreement = {"same_count": 8 / 13, "both_labelled": 13}
    for s in DBT_STAGES:
        agreement[f"{s}_kappa"], agreement[f"{s}_agreement"] = 0.5, 0.75
    return {"student_model": "student S", "teacher": "teacher T", "source": {"name": "embedded"},
            "examples": {"train": 10}, "dpo_contexts": 5, "agreement": agreement,
            "llm_labeller": {"parsed": 4, "calls": 5, "parse_rate": 0.8},
            "pairs": {"pairs": 3, "dropped_ties": 1, "candidates": 20, "chosen_from_dbt_prompt": 2}}


def _report(validity: dict, accuracy) -> dict:
    metrics = pd.DataFrame([{"row": r, "BLEU-4": 1.0, "ROUGE-L": 2.0, "Distinct-1": 3.0, "Distinct-2": 4.0,
                             "DBT adherence": 0.25 * i, "DBT adherence (second labeller)": 0.5} for i, r in enumerate(ROWS)])
    wins = pd.DataFrame([{"candidate": r, "win_rate": w, "ci_low": lo, "ci_high": hi, "wins": 3, "ties": 1, "losses": 0}
                         for r, w, lo, hi in (("sft", 0.5, 0.2, 0.8), ("dpo", float("nan"), float("nan"), float("nan")),
                                              ("sft-dpo", 0.875, 0.625, 1.0))])
    return {"metrics": metrics, "winrates": wins, "judge": "judge J", "test_examples": 4,
            "validity": validity, "accuracy": accuracy}


def test_the_judge_sentences_come_from_what_the_stage_returned():
    cfg = StudyConfig()
    unknown = presenting.glue_facts(cfg, _card(), _report({}, None))
    assert unknown["dbt_judge_statement"] == "Its agreement with human ratings was not measured here."
    assert "not measured" in unknown["dbt_judge_accuracy_statement"]
    known = presenting.glue_facts(cfg, _card(), _report({"statement": "Validated on the selection set."}, None))
    assert known["dbt_judge_statement"] == "Validated on the selection set."
    assert known["dbt_sft_dpo_vs_base_win_rate"] == 0.875
    assert "preferred +SFT+DPO to the base" in known["dbt_conclusion"]
    assert "(0.0 % for the base, 75.0 % for +SFT+DPO)" in known["dbt_conclusion"]


def test_shares_read_as_the_study_formats_them_and_a_missing_one_as_a_dash():
    report = _report({}, None)
    table = presenting.rows_table(report["metrics"], report["winrates"], "rules")
    rates = table["win rate vs base (CI); W/T/L"]
    assert rates["base"] == "reference"
    # breakable only between rate, interval and counts (a narrow column split "80.0" from its "%")
    assert rates["+SFT"] == "50.0\u00a0% (20.0–\u206080.0\u00a0%); 3/1/0"
    assert rates["+DPO"] == "—; 3/1/0"
    card = presenting.card_table({**_card(), "source": {"name": "embedded", "split": "s",
                                                        "dialogues": {"train": 1, "valid": 1, "test": 1}},
                                  "examples": {"train": 1, "valid": 1, "test": 1}, "example_counts": {"train": {}},
                                  "candidates": {"per_prompt": 2, "dropped_unusable": 0}, "labeller": "rules",
                                  "llm_labeller": {"parsed": 4, "calls": 5, "unparsed": 1},
                                  "pairs": {"pairs": 3, "dropped_ties": 1, "dropped_too_few_labelled": 0,
                                            "candidates_unparsed": 0, "candidates": 20, "chosen_from_dbt_prompt": 2}})
    assert card.loc["labellers agree (same number of stages)", "value"] == "61.5 % of 13 both labelled"
    assert set(presenting.agreement_table(_card())["same answer"]) == {"75.0 %"}


def test_research_data_conversations_are_not_shown(tmp_path):
    cfg = StudyConfig.from_dict({"dbt": {"source": "esconv"}})
    table = presenting.example_table(cfg, tmp_path)  # no run files needed: nothing is read
    assert list(table["text"]) == ["ESConv is research data: its conversations are not shown."]


def test_the_notebook_names_reach_the_stage_and_its_presentation():
    names = [n for n in eu.__all__ if n.startswith("dbt_") or n == "run_dbt"]
    assert len(names) == 13
    for name in names:
        assert getattr(eu, name).__module__ in ("empathy_utils.dbt.stage", "empathy_utils.dbt.presenting"), name


def test_a_short_dbt_row_logs_its_loss_whatever_the_runs_logging_steps():
    from empathy_utils.config import StudyConfig
    from empathy_utils.dbt.stage import training_config

    cfg = StudyConfig.from_dict({"dbt": {"sft_max_steps": 2, "dpo_max_steps": 3}})  # the run logs every 5 steps
    rows = training_config(cfg)
    assert (rows.sft.max_steps, rows.sft.logging_steps) == (2, 2)
    assert (rows.dpo.max_steps, rows.dpo.logging_steps) == (3, 3)
    assert rows.sft.learning_rate == cfg.dbt.sft_learning_rate
