"""`empathy-study plan`: the paper's grid counted without calling anything, from the same selection
code the runs use."""

from __future__ import annotations

import pytest

from empathy_utils.config import grid_configs, load_config, profile_path
from empathy_utils.plan import distinct_teacher_calls, plan_file, plan_tables


def test_paper_profile_describes_two_students_two_judges_and_21_datasets():
    cfg = load_config(profile_path("paper"))
    runs = grid_configs(cfg)
    assert len(runs) == 4
    assert len({r.run.name for r in runs}) == 4
    assert {r.model.name_or_path for r in runs} == {"meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.3"}
    assert {r.judge.model for r in runs} == {"gpt-4o", "gemini-2.0-flash"}
    assert {r.teacher.model for r in runs} == {"gpt-4o"}
    assert len(cfg.variants.runs) + 1 == 21
    assert (cfg.sft.learning_rate, cfg.sft.epochs, cfg.sft.batch_size, cfg.lora.r, cfg.dpo.beta) == (5e-5, 3, 2, 8, 0.1)


@pytest.mark.data
def test_plan_counts_match_the_selection_and_the_paper(data_dir, monkeypatch):
    monkeypatch.setenv("EMPATHY_DATA_DIR", str(data_dir))
    cfg = load_config(profile_path("paper"), ["data.test_rows=20"])
    plans = plan_file(cfg)
    runs, datasets = plan_tables(plans)
    one = datasets[datasets["run"] == "paper-llama-gpt4o"].set_index("dataset")
    # M1 as released (faithful): the paper's counts (methods.md E)
    assert one.loc["this run", "sft_examples"] == 2 * 2394
    assert one.loc["this run", "dpo_pairs"] == 2868
    assert one.loc["m1-gpt4", "dpo_pairs"] == 730
    assert (one.loc["m2-naive", "sft_examples"], one.loc["m2-naive", "dpo_pairs"]) == (1900, 800)
    # one teacher call per train row and strategy; three for the sequential chat
    assert one.loc["m2-naive", "teacher_calls"] == 1750
    assert one.loc["m2-sequential", "teacher_calls"] == 3 * 1750
    # the teacher's first replies are counted once, with the first M3 dataset
    assert one.loc["m3-naive", "teacher_calls"] == 2 * 1750
    assert one.loc["m3-all-three", "teacher_calls"] == 1750
    per_run = runs.set_index("run")
    # 21 datasets x (SFT + DPO); judged: 3 comparisons + 20 variants x 2 students, both orders
    assert per_run.loc["paper-llama-gpt4o", "trainings (SFT + DPO)"] == 42
    assert per_run.loc["paper-llama-gpt4o", "judge calls"] == 2 * 20 * (3 + 20 * 2)
    assert (per_run["teacher prompt tokens"] > 0).all()
    # all four runs ask the teacher the same questions: the cache answers three of them
    assert distinct_teacher_calls(plans).calls == per_run.loc["paper-llama-gpt4o", "teacher calls"]
