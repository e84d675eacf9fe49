"""Dataset construction: the paper's counts on the real data, and what each method puts where."""

from __future__ import annotations

import pandas as pd
import pytest

from empathy_utils import distillation as dist
from empathy_utils.backends import Completion, Sampling
from empathy_utils.data import load_embedded_corpus
from empathy_utils.prompts import load_prompt

# methods.md A.4 / E
M1_SFT_ROWS = {"gpt4": 639, "llama2": 617, "gemini": 551, "mixtral": 587, "all": 2394}
M1_DPO_INTENDED = {"gpt4": 593, "llama2": 563, "gemini": 500, "mixtral": 575, "all": 2231}
M1_DPO_RELEASED = {"gpt4": 730, "llama2": 712, "gemini": 700, "mixtral": 726, "all": 2868}


@pytest.fixture(scope="module")
def train(lvh):
    return lvh[lvh["split"] == "train"]


@pytest.mark.data
def test_m1_counts_equal_the_papers(train):
    counts = dist.selection_counts(train)["M1"]
    for src in M1_SFT_ROWS:
        assert counts["corrected"][src]["sft_rows"] == M1_SFT_ROWS[src]
        assert counts["faithful"][src]["sft_rows"] == M1_SFT_ROWS[src]
        assert counts["corrected"][src]["dpo_pairs"] == M1_DPO_INTENDED[src]
        assert counts["faithful"][src]["dpo_pairs"] == M1_DPO_RELEASED[src]


@pytest.mark.data
def test_m2_and_m3_counts_equal_the_papers(train):
    counts = dist.selection_counts(train)
    assert (counts["M2"]["sft_rows"], counts["M2"]["dpo_pairs"]) == (950, 800)
    assert counts["M2"]["sft_examples"] == 1900
    assert (counts["M3"]["sft_rows"], counts["M3"]["dpo_pairs"]) == (950, 800)


@pytest.mark.data
def test_m1_builds_two_sft_examples_per_row_and_llm_chosen_pairs(train):
    sft, dpo = dist.direct_distillation(train, "gpt4", "corrected")
    assert len(sft) == 2 * 639
    assert len(dpo) == 593
    assert {e["target_source"] for e in sft} == {"human", "gpt4"}
    assert all(p["chosen_source"] == "gpt4" and p["rejected_source"] == "human" for p in dpo)
    row = train[train["dialogue_id"] == dpo[0]["dialogue_id"]].iloc[0]
    assert dpo[0]["chosen"][0]["content"] == row["response_gpt4"]
    assert dpo[0]["rejected"][0]["content"] == row["reference_reply"]
    # Every example's prompt is the base prompt P0 filled with this row.
    assert dpo[0]["prompt"] == load_prompt("base-response").messages(context=row["situation"], utterance=row["utterance"])


def test_faithful_filter_reproduces_the_precedence_slip():
    frame = pd.DataFrame({"rating_human": [2, 2, 1, 1, 3], "rating_gpt4": [1, 3, 3, 2, 3]})
    _, faithful = dist.m1_masks(frame, "gpt4", "faithful")
    _, corrected = dist.m1_masks(frame, "gpt4", "corrected")
    assert list(faithful) == [True, True, True, False, False]  # human Okay with a Bad LLM reply slips in
    assert list(corrected) == [False, True, True, False, False]


def _small_train(n=10):
    corpus = load_embedded_corpus()
    return corpus[corpus["split"] == "train"].head(n)


def test_m3_corrected_rejects_the_teachers_initial_reply(scripted_backend):
    train = _small_train()
    log = dist.TeacherLog()
    sft, dpo = dist.improve_initial(train, scripted_backend, "cognitive", "corrected", Sampling(), log, 0.5, 42)
    assert len(dpo) == 5
    assert len(sft) == 10  # 5 SFT rows x (human + improved)
    assert all(p["rejected_source"] == "teacher-initial" for p in dpo)
    assert all(p["rejected"][0]["content"].startswith("Reply initial") for p in dpo)
    assert all(p["chosen"][0]["content"].startswith("Reply improved") for p in dpo)
    assert log.calls == scripted_backend.calls == 20  # 10 initial + 10 improved, no retries
    assert log.prompts.keys() == {"base-response", "improve-cognitive"}


def test_m3_faithful_rejects_the_human_reply(scripted_backend):
    train = _small_train()
    _, dpo = dist.improve_initial(train, scripted_backend, "naive", "faithful", Sampling(), dist.TeacherLog(), 0.5, 42)
    human = dict(zip(train["dialogue_id"], train["reference_reply"]))
    assert all(p["rejected"][0]["content"] == human[p["dialogue_id"]] for p in dpo)


def test_sequential_is_one_three_turn_chat_and_keeps_the_third_answer(scripted_backend):
    train = _small_train(4)
    _, dpo = dist.improve_human(train.assign(rating_human=1), scripted_backend, "sequential", Sampling(),
                                dist.TeacherLog())
    assert len(dpo) == 4
    assert all("turn 3" in p["chosen"][0]["content"] for p in dpo)
    assert scripted_backend.calls == 12


def test_combined_is_the_union_of_the_three_single_dimension_sets(scripted_backend):
    train = _small_train(4).assign(rating_human=[3, 3, 1, 1])
    log = dist.TeacherLog()
    sft, dpo = dist.improve_human(train, scripted_backend, "combined", Sampling(), log)
    assert len(dpo) == 2 * 3
    assert sum(e["target_source"] == "human" for e in sft) == 2  # originals once, not three times
    assert {e["target_source"] for e in sft} == {"human", "teacher-improved:cognitive",
                                                 "teacher-improved:affective", "teacher-improved:compassionate"}
    assert set(log.prompts) == {"improve-cognitive", "improve-affective", "improve-compassionate"}


def test_unusable_teacher_answers_are_retried_once_then_dropped():
    from conftest import ScriptedBackend

    train = _small_train(2).assign(rating_human=1)
    # First answer is an echo of the original reply; the retry (sampled) answers properly for row 0 only.
    state = {"n": 0}

    def answer(conv):
        state["n"] += 1
        original = conv[-1]["content"].split("Response: ", 1)[1].split("\n")[0]
        return "A genuinely new reply." if state["n"] == 3 else original

    backend = ScriptedBackend(answer)
    log = dist.TeacherLog()
    _, dpo = dist.improve_human(train, backend, "naive", Sampling(), log)
    assert log.retried == 2
    assert log.dropped == 1
    assert len(dpo) == 1
    assert log.flags["echo"] == 1  # flags describe the final answers (after the retry)
    assert dpo[0]["chosen"][0]["content"] == "A genuinely new reply."


def test_truncated_answers_are_cut_to_their_last_sentence():
    conv = [{"role": "user", "content": "x"}]
    text, flags = dist._checked(Completion("That sounds hard. I hope you get some rest and", "length"), None, conv)
    assert text == "That sounds hard."
    assert flags == ["truncated"]
    text, flags = dist._checked(Completion("no sentence ends here", "length"), None, conv)
    assert text == ""
    assert "empty" in flags


def test_card_records_prompt_hashes_and_counts(scripted_backend):
    train = _small_train()
    log = dist.TeacherLog()
    sft, dpo = dist.improve_initial(train, scripted_backend, "all-three", "corrected", Sampling(), log, 0.5, 42)
    card = dist.describe("improve-initial", "all-three", "corrected", "all", "scripted", sft, dpo, log,
                         {"name": "embedded-corpus", "sha256": "0" * 64})
    assert card["counts"] == {"sft_examples": len(sft), "dpo_pairs": len(dpo)}
    assert card["prompts"]["improve-all-three"]["sha256"] == load_prompt("improve-all-three").sha256
    assert sum(card["per_emotion"]["dpo"].values()) == len(dpo)
    assert "SFT examples" in dist.card_markdown(card)
