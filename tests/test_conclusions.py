"""The conclusions chapter's sentences, chosen by the confidence intervals (synthetic results)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from empathy_utils import conclusions as c
from empathy_utils.judging import JudgeAccuracy

TRUSTED = JudgeAccuracy(name="embedding-head", accuracy=0.7, ci_low=0.62, ci_high=0.78)
COIN = JudgeAccuracy(name="pairwise-llm", accuracy=0.52, ci_low=0.44, ci_high=0.6)


def _pairs(rows):
    return pd.DataFrame([{"candidate": a, "opponent": b, "win_rate": w, "ci_low": lo, "ci_high": hi, "wins": 10,
                          "ties": 2, "losses": 8, "judge": "embedding-head"} for a, b, w, lo, hi in rows])


def _core(win, low, high, accuracy=TRUSTED):
    return c.RunResult("study", _pairs([("dpo", "base", win, low, high), ("dpo", "sft", 0.5, 0.4, 0.6)]),
                       "embedding-head", accuracy)


def test_a_clear_win_is_called_one():
    text = c.pair_answer(_core(0.8, 0.7, 0.9), "dpo", "base", "the SFT→DPO student", "the base student")
    assert "a clear win" in text
    assert "study" in text and "embedding-head" in text
    assert "not a finding" not in text


def test_an_interval_over_an_even_split_cannot_be_told_apart():
    text = c.pair_answer(_core(0.55, 0.45, 0.65), "dpo", "base", "the SFT→DPO student", "the base student")
    assert "cannot be told apart" in text
    assert "clear" not in text


def test_a_clear_loss_is_called_one():
    text = c.pair_answer(_core(0.2, 0.1, 0.3), "dpo", "base", "the SFT→DPO student", "the base student")
    assert "a clear loss" in text


def test_a_judge_not_shown_to_beat_chance_is_no_finding():
    text = c.pair_answer(_core(0.8, 0.7, 0.9, COIN), "dpo", "base", "the SFT→DPO student", "the base student")
    assert "not a finding" in text


LONG_JUDGE = ("likelihood local:SmolLM2-135M-Instruct (pointwise mutual information of the reply given a plain "
              "transcript); replies stripped of instructions to the judge")


def test_sentences_name_the_judge_briefly_and_the_judges_section_in_full_once():
    core = c.RunResult("default", _pairs([("dpo", "base", 0.6, 0.5, 0.7)]), LONG_JUDGE, COIN)
    pride = c.RunResult("pride", _pairs([("pride", "base", 0.6, 0.5, 0.7)]), LONG_JUDGE, COIN)
    text = c.pair_answer(core, "dpo", "base", "a", "b")
    assert "judged by the likelihood judge (SmolLM2-135M-Instruct)," in text
    assert "pointwise" not in text
    judges = c.judges_answer(c.StudyResults(core=core, pride=pride))
    assert judges.count("pointwise") == 1  # one judge, two runs: described once
    assert judges.startswith("The runs default and pride used the likelihood judge (SmolLM2-135M-Instruct)")
    assert "It agreed with people on 52.0 %" in judges
    other = c.RunResult("dbt", _pairs([("sft-dpo", "base", 0.5, 0.5, 0.5)]), "pairwise local:SmolLM2-135M-Instruct")
    judges = c.judges_answer(c.StudyResults(core=core, pride=pride, dbt=other))
    assert "The run dbt used the pairwise judge (SmolLM2-135M-Instruct)" in judges
    assert "not measured" in judges


def test_dbt_metrics_keep_their_decimals():
    metrics = pd.DataFrame([{"row": "base", "BLEU-4": 0.451, "ROUGE-L": 10.7, "Distinct-2": 58.4},
                            {"row": "sft-dpo", "BLEU-4": 0.65, "ROUGE-L": 11.0, "Distinct-2": 46.3}])
    text = c.dbt_answer(c.RunResult("dbt", _pairs([("sft", "base", 0.5, 0.4, 0.6)]), "j", None, {"metrics": metrics}))
    assert "BLEU-4 0.45 → 0.65, ROUGE-L 10.7 → 11.0, Distinct-2 58.4 → 46.3" in text


def test_a_missing_run_names_the_run_that_would_answer():
    values = c.answers(c.StudyResults())
    assert "empathy-study run --profile default," in values["q_sft_dpo_vs_base"]
    assert "empathy-study run --profile study," in values["q_targeted_vs_naive"]
    assert "empathy-study run --profile pride," in values["q_pride"]
    assert "empathy-study run --profile dbt," in values["q_dbt"]
    # the prompt-set and method questions share a heading: without a variants run, one pointer, said once
    assert values["q_best_prompt_set_and_method"] == values["q_best_prompt_set"] == values["q_best_method"]


def test_a_comparison_the_run_did_not_judge_says_how_to_add_it():
    core = c.RunResult("r", _pairs([("sft", "base", 0.6, 0.5, 0.7)]), "j")
    assert "judge.comparisons" in c.pair_answer(core, "dpo", "base", "a", "b")


def _grid(rows):
    frame = pd.DataFrame([{"variant": v, "method": m, "strategy": s, "construction": "corrected",
                           "dpo_win_rate": w, "dpo_ci_low": lo, "dpo_ci_high": hi, "judge": "embedding-head"}
                          for v, m, s, w, lo, hi in rows])
    return c.RunResult("study", frame, "embedding-head", TRUSTED)


def test_targeted_prompts_clearly_ahead_of_naive_are_counted():
    grid = _grid([("this run", "M3", "all-three", 0.8, 0.72, 0.88), ("m3-naive", "M3", "naive", 0.5, 0.4, 0.6),
                  ("m3-cognitive", "M3", "cognitive", 0.55, 0.45, 0.65)])
    text = c.targeted_answer([grid])
    assert "1 targeted set(s) are clearly ahead" in text
    assert "1 cannot be told apart" in text
    assert "+17.5 points" in text


def test_targeted_prompts_clearly_behind_naive_are_counted():
    grid = _grid([("m3-naive", "M3", "naive", 0.8, 0.72, 0.88), ("this run", "M3", "all-three", 0.3, 0.2, 0.4)])
    assert "0 targeted set(s) are clearly ahead of the naive one, 1 clearly behind" in c.targeted_answer([grid])


def test_the_best_prompt_set_is_settled_only_when_clearly_ahead_of_all():
    clear = _grid([("a", "M3", "all-three", 0.9, 0.85, 0.95), ("b", "M3", "naive", 0.5, 0.4, 0.6)])
    murky = _grid([("a", "M3", "all-three", 0.6, 0.5, 0.7), ("b", "M3", "naive", 0.55, 0.45, 0.65)])
    assert "clearly ahead of every other" in c.best_answer([clear])
    assert "M3 with the all-three prompt set distils best" in c.best_answer([clear])
    assert "not settled" in c.best_answer([murky])


def test_one_method_cannot_be_compared_and_two_are():
    only_m3 = _grid([("a", "M3", "all-three", 0.6, 0.5, 0.7)])
    assert "cannot compare methods" in c.method_answer([only_m3])
    two = _grid([("a", "M3", "all-three", 0.9, 0.85, 0.95), ("b", "M2", "naive", 0.5, 0.4, 0.6),
                 ("c", "M2", "cognitive", 0.45, 0.35, 0.55)])
    text = c.method_answer([two])
    assert "M3 is clearly ahead of M2" in text
    both = c.answers(c.StudyResults(variants=[two]))["q_best_prompt_set_and_method"]
    assert both == f"{c.best_answer([two])} {text}"


def test_pride_against_its_baselines_and_ablations():
    table = _pairs([("pride", "base", 0.8, 0.7, 0.9), ("pride", "teacher", 0.5, 0.4, 0.6),
                    ("blackbox-sft", "base", 0.3, 0.2, 0.4), ("sdft", "base", 0.75, 0.65, 0.85),
                    ("pride-no-pi", "base", 0.95, 0.91, 0.99)])
    text = c.pride_answer(c.RunResult("pride", table, "embedding-head", TRUSTED))
    assert "clearly ahead of SFT on the teacher's text" in text
    assert "cannot be told apart from SDFT (TRL)" in text
    assert "clearly behind PRIDE without PI" in text
    assert "Against its teacher" in text


def test_dbt_counts_the_metrics_that_move_the_papers_way():
    metrics = pd.DataFrame([{"row": "base", "BLEU-4": 0.01, "ROUGE-L": 0.10, "Distinct-2": 0.5},
                            {"row": "sft-dpo", "BLEU-4": 0.02, "ROUGE-L": 0.08, "Distinct-2": 0.6}])
    result = c.RunResult("dbt", _pairs([("sft-dpo", "base", 0.5, 0.4, 0.6)]), "embedding-head", TRUSTED,
                         {"metrics": metrics})
    text = c.dbt_answer(result)
    assert "2 of 3 move the way Son & So's Table 1 does" in text
    assert "cannot be told apart" in text


def _fake_run(folder, name, stages, source="embedded-corpus"):
    from empathy_utils.artifacts import write_manifest

    (folder / "results").mkdir(parents=True)
    write_manifest(folder, {"params": {"run": {"name": name, "seed": 1}, "data": {"source": source}},
                            "stages": {s: {"status": "ok"} for s in stages}})
    (folder / "results" / "winrates.json").write_text(_pairs([("dpo", "base", 0.6, 0.5, 0.7)]).to_json(
        orient="records"))
    return folder


def test_load_results_reads_each_question_from_the_run_that_holds_it(tmp_path):
    pride = _fake_run(tmp_path / "pride-run", "pr", ["judge", "pride"])
    (pride / "pride" / "results").mkdir(parents=True)
    (pride / "pride" / "results" / "winrates.json").write_text(
        json.dumps(_pairs([("pride", "base", 0.6, 0.5, 0.7)]).to_dict("records")))
    core = _fake_run(tmp_path / "core", "core", ["judge"])
    lvh = _fake_run(tmp_path / "lvh", "lvh", ["judge"], source="llms-vs-humans")
    results = c.load_results([pride, core, lvh])
    assert results.runs == ["pr", "core", "lvh"]
    assert results.core.run == "core"  # not the PRIDE run's shrunk core stages
    assert [r.run for r in results.core_other_data] == ["lvh"]
    assert results.pride.run == "pr"
    assert results.dbt is None and results.variants == []
    assert "In the run lvh" in c.answers(results)["q_sft_dpo_vs_base"]


def test_a_method_run_answers_the_core_question_when_no_other_run_does(tmp_path):
    results = c.load_results([_fake_run(tmp_path / "p", "pr", ["judge", "pride"])])
    assert results.core.run == "pr"


@pytest.mark.parametrize("key", ["claim_xie_base", "claim_xie_targeted", "claim_son_so", "claim_pride"])
def test_every_paper_claim_is_glued(key):
    assert key in c.answers(c.StudyResults())


def test_the_answers_table_has_one_row_per_question():
    table = c.answers_table(c.answers(c.StudyResults()))
    assert table.index.name == "question"
    assert len(table) == 7
    assert table.loc["Does PRIDE beat its baselines and ablations?", "answer"].startswith("Not answered")
