"""The DBT labellers and the preference pairs: the LLM labeller's parsing (failures counted), the
rule-based scorer on hand-made replies, the metric on labels whose value is known, agreement, and
chosen / rejected construction (ties and unparsed dropped and counted)."""

from __future__ import annotations

import math

import pytest

from empathy_utils.backends import Sampling
from empathy_utils.dbt.conversations import make_examples
from empathy_utils.dbt.labels import (
    DBT_STAGES,
    LabelLog,
    adherence,
    agreement,
    llm_labels,
    parse_adherence,
    rule_labels,
)
from empathy_utils.dbt.preferences import CandidateLog, build_pairs, generate_candidates
from tests.conftest import ScriptedBackend

ALL_YES = "Listening: yes\nReflecting: yes\nAcknowledging: yes\nGenuine: yes"


@pytest.mark.parametrize("text, expected", [
    (ALL_YES, (True, True, True, True)),
    ("Listening: yes\nReflecting: no\nAcknowledging: Yes\nGenuine: NO", (True, False, True, False)),
    ("1. **Listening**: yes\n2. **Reflecting accurately**: no\n3. Acknowledging emotions: yes\n4. Genuine response: yes",
     (True, False, True, True)),
    ("Listening: yes\nReflecting: yes\nAcknowledging: yes", None),  # a stage missing
    ("Listening: maybe\nReflecting: yes\nAcknowledging: yes\nGenuine: yes", None),
    ("The reply is warm and kind.", None),
    ("", None),
])
def test_the_llm_labellers_answers_are_parsed_or_refused(text, expected):
    parsed = parse_adherence(text)
    assert (None if parsed is None else tuple(parsed[s] for s in DBT_STAGES)) == expected


def test_llm_labeller_counts_its_parse_failures():
    answers = iter([ALL_YES, "I think it is good.", "Listening: no\nReflecting: no\nAcknowledging: no\nGenuine: yes"])
    backend = ScriptedBackend(lambda conv: next(answers))
    log = LabelLog()
    items = [{"context": "c", "utterance": f"u{i}", "reply": f"r{i}"} for i in range(3)]
    labels = llm_labels(backend, items, Sampling(40), log)
    assert labels[1] is None and sum(labels[0].values()) == 4 and sum(labels[2].values()) == 1
    assert (log.calls, log.parsed, log.unparsed) == (3, 2, 1) and log.to_json()["parse_rate"] == pytest.approx(2 / 3)
    assert backend.calls == 3


UTTERANCE = "My dog died yesterday and the house feels so quiet."


@pytest.mark.parametrize("reply, expected", [
    ("It sounds like the house feels empty without your dog. Losing him must hurt so much, and it makes sense "
     "that you miss him.", dict(listening=True, reflecting=True, acknowledging=True, genuine=True)),
    ("You should get a new puppy. Don't worry, you will be fine soon enough.",
     dict(listening=False, reflecting=False, acknowledging=False, genuine=True)),
    ("I'm sorry to hear that.", dict(listening=False, reflecting=False, acknowledging=False, genuine=False)),
    ("My dog died yesterday and the house feels so quiet.",  # an echo speaks to no one
     dict(listening=True, reflecting=True, acknowledging=False, genuine=False)),
    ("Your dog was family. You just need to stay busy and the quiet house will feel normal.",
     dict(listening=False, reflecting=True, acknowledging=False, genuine=True)),
    ("That is so sad. Fourteen years together is a long time, and grief like that takes its time with you.",
     dict(listening=False, reflecting=False, acknowledging=True, genuine=True)),
])
def test_the_rule_labeller_on_hand_made_replies(reply, expected):
    assert rule_labels(UTTERANCE, reply) == expected


def _lab(*bits):
    return dict(zip(DBT_STAGES, bits))


def test_adherence_is_the_mean_share_of_stages_met_with_unparsed_left_out():
    labels = [_lab(1, 1, 1, 1), _lab(1, 0, 1, 0), None, _lab(0, 0, 0, 0)]
    m = adherence(labels)
    assert m["adherence"] == pytest.approx((4 + 2 + 0) / 12)
    assert (m["replies"], m["labelled"], m["unparsed"]) == (4, 3, 1)
    assert m["listening"] == pytest.approx(2 / 3) and m["genuine"] == pytest.approx(1 / 3)
    assert math.isnan(adherence([None])["adherence"])


def test_agreement_per_stage_with_kappa():
    first = [_lab(1, 1, 0, 1), _lab(0, 1, 0, 1), _lab(1, 0, 1, 1), None]
    second = [_lab(1, 0, 0, 1), _lab(0, 1, 1, 1), _lab(0, 0, 1, 1), _lab(1, 1, 1, 1)]
    a = agreement(first, second)
    assert a["both_labelled"] == 3
    assert a["listening_agreement"] == pytest.approx(2 / 3) and a["genuine_agreement"] == 1.0
    # listening: first 1,0,1 / second 1,0,0 -> po 2/3, pe = (2/3)(1/3) + (1/3)(2/3) = 4/9, kappa = (2/9)/(5/9)
    assert a["listening_kappa"] == pytest.approx(0.4)
    assert math.isnan(a["genuine_kappa"])  # one answer throughout: kappa undefined
    assert a["same_count"] == 0.0  # stages met: 3, 2, 3 against 2, 3, 2
    assert agreement(first, first)["same_count"] == 1.0


def _example(eid):
    d = {"dialogue_id": eid, "situation": "s", "problem_type": "p", "emotion_type": "sadness",
         "turns": [{"speaker": "seeker", "text": f"I feel low ({eid})."}, {"speaker": "supporter", "text": "ref"}]}
    return make_examples([d], 6)[0]


def _cand(eid, kind, usable=True):
    return {"example_id": f"{eid}-t01", "kind": kind, "k": 0, "text": f"{kind} reply to {eid}", "flags": [],
            "usable": usable}


def test_pairs_take_the_best_over_the_worst_and_count_every_drop():
    examples = [_example(e) for e in ("a", "b", "c", "d")]
    candidates = [_cand("a", "dbt"), _cand("a", "plain"), _cand("b", "dbt"), _cand("b", "plain"),
                  _cand("c", "dbt", usable=False), _cand("c", "plain"), _cand("d", "dbt"), _cand("d", "plain")]
    labels = [_lab(1, 1, 1, 0), _lab(0, 0, 1, 0), _lab(1, 1, 0, 0), _lab(0, 1, 1, 0),
              None, _lab(1, 1, 1, 1), None, _lab(1, 0, 0, 0)]
    pairs, counts = build_pairs(examples, candidates, labels)
    assert len(pairs) == 1 and pairs[0]["example_id"] == "a-t01"
    p = pairs[0]
    assert p["chosen"] == [{"role": "assistant", "content": "dbt reply to a"}]
    assert p["rejected"] == [{"role": "assistant", "content": "plain reply to a"}]
    assert (p["chosen_stages"], p["rejected_stages"]) == (3, 1)
    assert p["prompt"][-1] == {"role": "user", "content": "I feel low (a)."} and p["prompt"][0]["role"] == "system"
    assert counts == {"contexts": 4, "candidates": 8, "candidates_unusable": 1, "candidates_unparsed": 1,
                      "dropped_ties": 1, "dropped_too_few_labelled": 2, "pairs": 1, "chosen_from_dbt_prompt": 1}
    # A wider margin turns the 3-vs-1 pair into a tie as well.
    assert build_pairs(examples, candidates, labels, min_margin=3)[1]["dropped_ties"] == 2


def test_candidates_come_from_both_prompts_and_empty_replies_are_dropped():
    def answer(conv):
        text = conv[-1]["content"]
        return "" if "dialectical" not in text else "It sounds like a hard day; that makes sense."

    examples = [_example("a"), _example("b")]
    backend = ScriptedBackend(answer)
    log = CandidateLog()
    cands = generate_candidates(backend, examples, per_prompt=2, max_new_tokens=40, temperature=0.8, seed=1, log=log)
    assert len(cands) == 2 * 2 * 2 and log.calls == 8 == backend.calls
    assert {(c["kind"], c["usable"]) for c in cands} == {("dbt", True), ("plain", False)}
    assert log.dropped == 4 and log.flags["empty"] == 4


def test_a_dbt_candidate_that_copies_the_stage_list_is_an_unusable_echo():
    listing = ("1. Listening: Show that you've taken in what they said.\n"
               "2. Reflecting accurately: Put what they told you in your own words.")
    backend = ScriptedBackend(lambda conv: listing if "dialectical" in conv[-1]["content"] else "That sounds hard for you.")
    log = CandidateLog()
    cands = generate_candidates(backend, [_example("a")], per_prompt=1, max_new_tokens=40, temperature=0.8, seed=1,
                                log=log)
    assert [(c["kind"], c["usable"]) for c in cands] == [("dbt", False), ("plain", True)]
    assert "echo" in cands[0]["flags"] and log.flags["echo"] == 1 and log.dropped == 1
