"""The DBT stage on the tiny model with a scripted teacher: preference data with both labellers, the
paper's four rows through the study's own trainers (weights change; DPO on the SFT adapter moves it;
DPO on the base starts from an adapter that is exactly the base), and the evaluation on replies whose
metric value is known."""

from __future__ import annotations

import re

import pytest

from empathy_utils.config import StudyConfig
from empathy_utils.dbt import presenting, stage
from empathy_utils.dbt.stage import DBTPaths
from tests.conftest import ScriptedBackend

GOOD = "It sounds like {topic} has been really hard on you, and it makes sense that you feel this way."
POOR = "Cheer up."


def _answer(conv):
    text = conv[-1]["content"]
    if "Answer in exactly this form" in text:  # the labeller: reads one reply in two, the other unparsed
        return ("Listening: yes\nReflecting: yes\nAcknowledging: yes\nGenuine: yes" if "sounds like" in text
                else "I could not say.")
    utterance = re.search(r"Speaker Utterance: (.*)", text).group(1)
    return GOOD.format(topic=_topic(utterance)) if "dialectical" in text else POOR


def _topic(utterance: str) -> str:
    """The utterance's three longest words: content words the reply picks up."""
    return " ".join(sorted(re.findall(r"[A-Za-z]+", utterance), key=len)[-3:])


@pytest.fixture(scope="module")
def dbt_run(tiny_spec, tmp_path_factory):
    cfg = StudyConfig.from_dict({
        "run": {"name": "dbt-test", "seed": 3},
        "model": {"name_or_path": tiny_spec}, "teacher": {"model": tiny_spec},
        "lora": {"r": 4, "alpha": 8}, "generation": {"batch_size": 8, "max_new_tokens": 8},
        "judge": {"bootstrap_resamples": 100},
        "dbt": {"train_dialogues": 4, "test_dialogues": 3, "history_turns": 4, "labeller": "rules",
                "sft_max_steps": 2, "dpo_max_steps": 2, "sft_learning_rate": 1e-2, "dpo_learning_rate": 1e-2,
                "sft_batch_size": 2, "dpo_batch_size": 2, "bootstrap_resamples": 100},
    })
    run_dir = tmp_path_factory.mktemp("dbt-run")
    teacher = ScriptedBackend(_answer)
    original = stage._teacher
    stage._teacher = lambda cfg: teacher
    try:
        card = stage.prepare_data(cfg, run_dir)
    finally:
        stage._teacher = original
    return cfg, run_dir, card


def test_preference_data_counts_and_both_labellers(dbt_run):
    cfg, run_dir, card = dbt_run
    p = card["pairs"]
    assert card["dpo_contexts"] == card["examples"]["train"] > 0
    assert p["candidates"] == 2 * card["dpo_contexts"] and p["pairs"] == card["dpo_contexts"]
    assert p["chosen_from_dbt_prompt"] == p["pairs"] and p["dropped_ties"] == 0
    # The scripted labeller answered only for the DBT-prompt replies: half its answers unparsed, counted.
    assert card["llm_labeller"]["calls"] == p["candidates"] and card["llm_labeller"]["unparsed"] == p["pairs"]
    assert card["agreement"]["both_labelled"] == p["pairs"] and card["agreement"]["listening_agreement"] == 1.0
    from datasets import load_from_disk

    paths = DBTPaths(run_dir)
    pairs = load_from_disk(str(paths.sft_then_dpo.dpo_data))
    assert len(pairs) == p["pairs"] and pairs[0]["chosen"][0]["content"].startswith("It sounds like")
    assert pairs[0]["rejected"][0]["content"] == POOR and pairs[0]["prompt"][-1]["role"] == "user"
    assert len(load_from_disk(str(paths.dpo_on_base.dpo_data))) == len(pairs)
    from empathy_utils.config import load_config

    for folder in (paths.sft_then_dpo, paths.dpo_on_base):  # ready for `accelerate launch` with the dbt settings
        assert load_config(folder.params).sft.max_steps == cfg.dbt.sft_max_steps == 2
    assert (paths.dpo_on_base.sft_model / "adapter_config.json").exists()
    sft = load_from_disk(str(paths.sft_then_dpo.sft_data))
    assert len(sft) == card["examples"]["train"] and sft[0]["messages"][-1]["role"] == "assistant"


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _moved(a, b) -> bool:
    import torch

    return any(not torch.equal(a[k], b[k]) for k in a)


def test_four_rows_train_through_the_study_trainers(dbt_run):
    import torch

    cfg, run_dir, _ = dbt_run
    table = stage.train_rows(cfg, run_dir)
    assert list(table.index) == ["+SFT", "+DPO", "+SFT+DPO"] and (table["steps"] == 2).all()
    paths = DBTPaths(run_dir)
    sft, sft_dpo = _tensors(paths.adapter("sft")), _tensors(paths.adapter("sft-dpo"))
    untrained, dpo = _tensors(paths.dpo_on_base.sft_model), _tensors(paths.adapter("dpo"))
    # LoRA starts with B = 0: SFT moved it away from the base; the untrained adapter still is the base.
    assert any(k.endswith("lora_B.weight") and sft[k].abs().sum() > 0 for k in sft)
    assert all(untrained[k].abs().sum() == 0 for k in untrained if k.endswith("lora_B.weight"))
    assert _moved(sft, sft_dpo), "DPO on the SFT adapter should move it"
    assert _moved(untrained, dpo), "DPO on the base should move its fresh adapter"
    assert any(not torch.equal(sft_dpo[k], dpo[k]) for k in dpo)
    # The same settings and data: a second call reuses every adapter (the study's fingerprints).
    again = stage.train_rows(cfg, run_dir)
    assert (again["reused"].str.startswith("yes")).all()


def test_evaluation_on_replies_whose_metric_is_known(dbt_run):
    from empathy_utils.data import read_jsonl, save_jsonl
    from empathy_utils.judges import LongerReplyJudge

    cfg, run_dir, _ = dbt_run
    replies = stage.generate_replies(cfg, run_dir)
    assert list(replies.index) == ["base", "+SFT", "+DPO", "+SFT+DPO"]
    paths = DBTPaths(run_dir)
    # Overwrite the rows' replies with ones whose rule-labelled adherence is known: 0 and 1.
    for row, reply in (("base", "I'm sorry to hear that."), ("sft", "I'm sorry to hear that."),
                       ("dpo", "I'm sorry to hear that."), ("sft-dpo", None)):
        rows = read_jsonl(paths.generation(row))
        test = read_jsonl(paths.examples("test"))
        for r, e in zip(rows, test):
            r["reply"] = reply or GOOD.format(topic=_topic(e["utterance"]))
        save_jsonl(rows, paths.generation(row))
    original = stage._teacher
    stage._teacher = lambda cfg: ScriptedBackend(_answer)
    try:
        report = stage.evaluate(cfg, run_dir, judge=LongerReplyJudge())
    finally:
        stage._teacher = original
    m = report["metrics"].set_index("row")
    assert m.loc["base", "DBT adherence"] == 0.0 and m.loc["sft-dpo", "DBT adherence"] == 1.0
    assert m.loc["sft-dpo", "DBT adherence (second labeller)"] == 1.0  # the scripted LLM labeller agrees
    assert m.loc["base", "unlabelled"] == 0
    w = report["winrates"].set_index("candidate")
    assert w.loc["sft-dpo", "win_rate"] == 1.0 and w.loc["sft", "win_rate"] == 0.5
    assert report["judge"] == LongerReplyJudge().name
    facts = presenting.glue_facts(cfg, dbt_run[2], report)
    assert facts["dbt_sft_dpo_adherence"] == 1.0 and "preferred +SFT+DPO to the base" in facts["dbt_conclusion"]
    assert (run_dir / "figures" / "dbt_rows.png").exists()
    example = presenting.example_table(cfg, run_dir)
    assert example.loc["+SFT+DPO reply", "text"].startswith("It sounds like")


def test_the_training_folders_serve_the_accelerate_entry_point(dbt_run):
    """`python -m empathy_utils.training` (what `accelerate launch` runs) on a DBT training folder finds the
    stage's adapter under the same fingerprint: the same settings and data, whichever way it was trained."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    cfg, run_dir, _ = dbt_run
    stage.train_rows(cfg, run_dir)  # trained (or reused) by the stage
    folder = DBTPaths(run_dir).dpo_on_base.root
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "empathy_utils.training", "dpo", "--params", str(folder / "params.yaml"),
                           "--run-dir", str(folder)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["reused"] is True
