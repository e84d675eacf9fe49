"""Judges that run a model, on the tiny random model: the likelihood judge's arithmetic, the TRL
reward model, scoring each reply once, and the judge stage's full win-rate analysis."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pandas as pd
import pytest

from empathy_utils.judges import LikelihoodJudge, LongerReplyJudge, RewardModelJudge, ScoreJudge, word_count

ITEMS = [
    {"id": 1, "context": "I lost my job.", "utterance": "I don't know what to do now.",
     "response_a": "That is so hard; I am here for you.", "response_b": "Ok."},
    {"id": 2, "context": "I lost my job.", "utterance": "I don't know what to do now.",
     "response_a": "Ok.", "response_b": "That is so hard; I am here for you."},
    {"id": 3, "context": "My sister is visiting!", "utterance": "I have not seen her in years.",
     "response_a": "How wonderful, you must be so excited!", "response_b": "How wonderful, you must be so excited!"},
]


@pytest.fixture(scope="module")
def likelihood(tiny_spec):
    return LikelihoodJudge(tiny_spec, batch_size=4)


def test_likelihood_is_the_mean_log_probability_of_the_reply(likelihood):
    import torch

    tok, model = likelihood.tokenizer, likelihood.model
    prompt = tok.apply_chat_template([{"role": "user", "content": "I miss him."}], add_generation_prompt=True,
                                     tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    reply = tok.encode("He sounds like a wonderful friend.", add_special_tokens=False) + [tok.eos_token_id]
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + reply])).logits[0], -1)
    expected = float(np.mean([logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(reply)]))
    got = likelihood.score([("ignored context", "I miss him.")], ["He sounds like a wonderful friend."])
    assert got[0] == pytest.approx(expected, abs=1e-4)
    # Padding in a batch changes nothing: scored alone or beside longer replies, the same number.
    batch = likelihood.score([("c", "I miss him.")] * 3, ["He sounds like a wonderful friend.", "No.",
                                                          "A much longer reply " * 8])
    assert batch[0] == pytest.approx(expected, abs=1e-4)


def test_scoring_runs_the_prefix_a_batch_shares_once_and_gets_the_same_numbers(likelihood):
    """The rows of a scoring batch that begin alike (a chat template's system turn; PMI's speaker-free
    prompt) run those tokens once: fewer positions through the decoder, the same log-probabilities."""
    from empathy_utils.judges import mean_log_probabilities

    model, tok = likelihood.model, likelihood.tokenizer
    prefix = tok.encode("Speaker: my dog died last week and the house feels empty. Listener:",
                        add_special_tokens=False)
    assert len(prefix) >= 16
    rows = [(prefix + tok.encode(f" turn {i}", add_special_tokens=False),
             tok.encode(reply, add_special_tokens=False))
            for i, reply in enumerate(["I am so sorry.", "That must hurt a lot, losing a friend.", "Oh no.",
                                       "He was lucky to have you."])]
    positions = []
    hook = model.model.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: positions.append(kwargs.get("hidden_states", args[0] if args else None)
                                                      .shape[:2].numel()), with_kwargs=True)
    try:
        plain = mean_log_probabilities(model, tok, rows, batch_size=4, share_prefix=False)
        plain_positions = sum(positions)
        positions.clear()
        shared = mean_log_probabilities(model, tok, rows, batch_size=4)
    finally:
        hook.remove()
    assert shared == pytest.approx(plain, abs=1e-5)
    width = max(len(p) + len(a) for p, a in rows)
    assert plain_positions == 4 * width
    common = len(os.path.commonprefix([p for p, _ in rows]))  # the prefix and the word " turn"
    assert common > len(prefix)
    assert sum(positions) == 4 * width - 3 * common, "the shared prefix ran once, not once per row"


def test_a_chat_framing_on_a_model_without_a_chat_template_is_a_clear_error(likelihood, tiny_spec):
    import copy

    from empathy_utils.errors import StudyError

    base_tokenizer = copy.deepcopy(likelihood.tokenizer)
    base_tokenizer.chat_template = None  # what a base model (e.g. Gemma 3 270M) ships
    with pytest.raises(StudyError, match="needs a chat template.*'plain' framing"):
        LikelihoodJudge(tiny_spec, condition="context", model=likelihood.model, tokenizer=base_tokenizer)
    plain = LikelihoodJudge(tiny_spec, condition="plain", model=likelihood.model, tokenizer=base_tokenizer)
    assert np.isfinite(plain.score([("c", "I miss him.")], ["He sounds kind."])).all()


def test_scoring_judges_are_order_free_and_score_each_reply_once(likelihood):
    calls = []

    class Counting(ScoreJudge):
        name = "counting"

        def score(self, prompts, replies):
            calls.append(len(replies))
            return np.array([word_count(r) for r in replies], dtype=float)

    out = Counting().judge(ITEMS)
    assert calls == [3], "each distinct (context, utterance, reply) is scored once"
    assert [r["verdict"] for r in out] == ["a", "b", "tie"]
    records = likelihood.judge(ITEMS)
    assert records[0]["verdict"] == {"a": "b", "b": "a"}[records[1]["verdict"]], "swapping the sides swaps the verdict"
    assert records[2]["verdict"] == "tie" and records[0]["p_a"] is None and likelihood.order_free
    assert records[0]["judge"].startswith("likelihood local:tiny random Llama")


def test_a_likelihood_judge_reads_back_what_an_earlier_one_scored_and_loads_no_model(tiny_spec, tmp_path,
                                                                                       monkeypatch):
    """A re-run after a judge setting scores nothing again: the scores persist (ScoreStore) under the
    scoring model's identity, read back bit for bit, and the model is loaded only when one is missing."""
    import empathy_utils.judges.scoring as scoring
    from empathy_utils.stores import ScoreStore

    first = LikelihoodJudge(tiny_spec, batch_size=4, score="pmi", memo=ScoreStore("tiny@fp32", tmp_path / "s.sqlite"))
    before = first.judge(ITEMS)
    # three distinct (turn, reply) rows, and the same three replies without the speaker (PMI)
    assert len(ScoreStore("tiny@fp32", tmp_path / "s.sqlite")) == 6

    def no_forward_passes(*args, **kwargs):
        raise AssertionError("a stored score was computed again")

    monkeypatch.setattr(scoring, "mean_log_probabilities", no_forward_passes)
    again = LikelihoodJudge(tiny_spec, batch_size=4, score="pmi", tie_margin=0.5,
                            memo=ScoreStore("tiny@fp32", tmp_path / "s.sqlite"))
    after = again.judge(ITEMS)
    assert again._model is None, "every score was stored: the model was never loaded"
    assert [(r["score_a"], r["score_b"]) for r in after] == [(r["score_a"], r["score_b"]) for r in before]
    # Another model's store (another identity) holds none of these numbers.
    other = LikelihoodJudge(tiny_spec, batch_size=4, memo=ScoreStore("another model", tmp_path / "s.sqlite"))
    with pytest.raises(AssertionError, match="computed again"):
        other.judge(ITEMS)


def test_the_judge_stage_scores_nothing_again_after_a_judge_setting_changes(tiny_spec, tmp_path, monkeypatch):
    """The likelihood judge the stage builds keeps its scores in the cache directory: changing a judge
    setting (here the interval's confidence) re-runs the stage without one forward pass."""
    import empathy_utils.judges.scoring as scoring
    from empathy_utils.config import StudyConfig
    from empathy_utils.judging import make_judge
    from empathy_utils.stages import judge_students

    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    _run_folder(tmp_path / "run", {"base": "Ok.", "dpo": "I am so sorry, that sounds hard for you."})
    settings = {"model": {"name_or_path": tiny_spec}, "generation": {"students": ["base", "dpo"]},
                "judge": {"kind": "likelihood", "model": tiny_spec, "comparisons": [["dpo", "base"]],
                          "bootstrap_resamples": 100}}
    cfg = StudyConfig.from_dict(settings)
    first = judge_students(cfg, tmp_path / "run", judge=make_judge(cfg, tmp_path / "run"))["results"]
    recorded = json.loads((tmp_path / "run" / "results" / "judge.json").read_text())
    assert recorded["scores"] == {"computed": 18, "reused": 0}, "9 dialogues x 2 students' replies, each scored"
    monkeypatch.setattr(scoring, "mean_log_probabilities", lambda *a, **k: pytest.fail("scored again"))
    settings["judge"]["confidence"] = 0.9
    cfg = StudyConfig.from_dict(settings)
    judge = make_judge(cfg, tmp_path / "run")
    again = judge_students(cfg, tmp_path / "run", judge=judge)["results"]
    assert getattr(judge, "inner", judge)._model is None, "every score was stored: no model was loaded"
    assert list(again["wins"]) == list(first["wins"]) and list(again["ties"]) == list(first["ties"])
    assert list(first["confidence"]) == [0.95] and list(again["confidence"]) == [0.9]
    recorded = json.loads((tmp_path / "run" / "results" / "judge.json").read_text())
    assert recorded["scores"] == {"computed": 0, "reused": 18}, "the re-run read every score back"
    # The old path (scores kept for one process only) computes them again.
    monkeypatch.setenv("EMPATHY_SCORE_STORE", "0")
    with pytest.raises(pytest.fail.Exception, match="scored again"):
        judge_students(cfg, tmp_path / "run", judge=make_judge(cfg, tmp_path / "run"))


def test_longer_reply_baseline():
    out = LongerReplyJudge().judge(ITEMS)
    assert [r["verdict"] for r in out] == ["a", "b", "tie"] and "baseline" in out[0]["judge"]


def test_reward_model_trains_with_trl_and_judges(tiny_spec, tmp_path):
    from empathy_utils.config import JudgeValidationSettings
    from empathy_utils.judge_validation import train_reward_model

    pairs = pd.DataFrame([{"pair_id": f"p{i}", "dialogue_id": f"d{i}", "split": "train", "context": "c",
                           "utterance": f"Something happened {i}.", "response_a": "I am here for you.",
                           "response_b": "Whatever.", "human": "a" if i % 2 else "b"} for i in range(8)])
    settings = JudgeValidationSettings(reward_max_steps=2, reward_batch_size=4, reward_max_length=512,
                                       reward_lora_r=4, reward_learning_rate=1e-2, reward_lora_layers=1)
    info = train_reward_model(pairs, tiny_spec, tmp_path / "rm", settings, seed=0)
    assert info["steps"] == 2 and info["pairs_used"] == 8
    from safetensors import safe_open

    with safe_open(str(tmp_path / "rm" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    lora_layers = {k.split("layers.")[1].split(".")[0] for k in keys if "lora_" in k}
    assert lora_layers == {"1"}, "LoRA only on the last decoder layer (reward_lora_layers=1)"
    assert any("score" in k for k in keys), "the score head is trained and saved with the adapter"
    judge = RewardModelJudge(tiny_spec, tmp_path / "rm", train_pairs=8, batch_size=2)
    out = judge.judge(ITEMS)
    assert all(0 < r["p_a"] < 1 for r in out) and out[2]["verdict"] == "tie" and out[2]["p_a"] == 0.5
    assert out[0]["p_a"] == pytest.approx(1 - out[1]["p_a"], abs=1e-5)
    assert "RewardTrainer on 8" in judge.name
    # The trained head and adapter were saved and reloaded: scores differ from an untrained head's.
    from empathy_utils.judges import load_reward_model

    untrained = RewardModelJudge(tiny_spec, tmp_path / "rm", 8, model=load_reward_model(tiny_spec)[0],
                                 tokenizer=judge.tokenizer)
    assert not np.allclose(judge.score([("c", "u")], ["Hello there."]), untrained.score([("c", "u")], ["Hello there."]))


def _run_folder(tmp_path, students):
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "generations").mkdir()
    test = [{"dialogue_id": f"d{i}", "emotion": ["sad", "joyful", "afraid"][i % 3], "situation": f"Situation {i}.",
             "utterance": f"Utterance {i}.", "reference_reply": "I am so sorry, that sounds hard."} for i in range(9)]
    (tmp_path / "data" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in test))
    for s, reply in students.items():
        rows = [{"dialogue_id": r["dialogue_id"], "reply": reply + (" really" * (i % 3))} for i, r in enumerate(test)]
        (tmp_path / "generations" / f"{s}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_judge_stage_reports_lc_per_emotion_and_metrics(tmp_path):
    from empathy_utils.config import StudyConfig
    from empathy_utils.stages import emotion_table, judge_glue_values, judge_students, winrate_table

    # Any student of generation.students can be compared (the teacher too, where the config has it).
    _run_folder(tmp_path, {"base": "Ok.", "dpo": "I am so sorry, that sounds hard for you.",
                           "sft": "That sounds hard."})
    cfg = StudyConfig.from_dict({"generation": {"students": ["base", "sft", "dpo"]},
                                 "judge": {"comparisons": [["dpo", "base"], ["dpo", "sft"]], "bootstrap_resamples": 100}})
    judge = LongerReplyJudge()
    report = judge_students(cfg, tmp_path, judge=judge)
    res = report["results"].set_index("comparison")
    assert list(report["results"]["opponent"]) == ["base", "sft"]
    first = report["results"].iloc[0]
    assert first["wins"] == 9 and first["win_rate"] == 1.0 and first["judge"] == judge.name
    assert {"lc_win_rate", "lc_ci_low", "lc_ci_high", "length_slope", "paper_win_rate"} <= set(res.columns)
    assert not report["validity"]["validated"] and "unmeasured" in report["validity"]["statement"]
    assert set(report["per_emotion"]["emotion"]) == {"sad", "joyful", "afraid"}
    assert report["per_emotion"].groupby("comparison")["n"].sum().tolist() == [9, 9]
    metrics = report["metrics"]
    assert list(metrics.index) == ["base student", "SFT student", "SFT→DPO student"]
    assert metrics.loc["SFT→DPO student", "ROUGE-L"] > metrics.loc["base student", "ROUGE-L"]
    for f in ("winrates.csv", "winrates.json", "winrates_by_emotion.csv", "reference_metrics.csv", "judge.json"):
        assert (tmp_path / "results" / f).exists(), f
    assert (tmp_path / "figures" / "winrates.png").exists() and (tmp_path / "figures" / "winrates_by_emotion.png").exists()
    verdicts = [json.loads(x) for x in (tmp_path / "judgments" / "dpo_vs_base.jsonl").read_text().splitlines()]
    assert all(v["judge"] == judge.name and "words_a" in v and v["emotion"] for v in verdicts)
    table = winrate_table(report["results"])
    assert "length-controlled" in table.columns and table["orders agree"].iloc[0] == "order-free"
    # cells a narrow column must not break: the counts, the interval and every percentage
    assert not any(" " in cell for column in table.columns if column != "unparsed" for cell in table[column])
    values = judge_glue_values(report)
    assert "cannot change its verdict" in values["position_statement"]
    # Every SFT->DPO reply is longer than the base one: equal length was never observed, so the
    # length-controlled rate is not read off an extrapolated fit, and the book's phrase says why.
    assert math.isnan(values["dpo_vs_base_lc_win_rate"])
    assert "longer one in 100 % of pairs" in values["dpo_vs_base_lc_statement"]
    emotions = emotion_table(report["per_emotion"])
    assert emotions.shape == (3, 2)
    # a rate keeps its "%" (a no-break space); the cell may wrap only before "(n=...)"
    assert all(re.fullmatch(r"\d+\u00a0% \(n=\d+\)", cell) for cell in emotions.to_numpy().ravel())
