"""DBT preference data: the teacher writes candidate replies with the DBT prompt and without it
(the plain base prompt P0); a labeller scores each on the four stages; chosen = the candidate that
meets the most stages, rejected = the one that meets the fewest. Contexts whose best and worst
candidates are level (a tie), or that lack two labelled candidates (empty teacher replies,
unparsed labels), give no pair — each such drop is counted on the card."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..backends import ChatBackend, Sampling
from ..prompts import BASE_PROMPT_ID, load_prompt
from ..quality import FLAGS, check_reply, clean_reply, trim_to_sentence, usable
from .conversations import student_messages
from .labels import stages_met

# The two ways the teacher is asked: with the four DBT stages spelled out, and with the study's P0.
CANDIDATE_PROMPTS = {"dbt": "dbt-response", "plain": BASE_PROMPT_ID}
# The DBT prompt's own stage headings; a small teacher often copies the list instead of replying.
_STAGE_HEADING = re.compile(r"(?im)^\W*\d*\.?\s*(listening|reflecting accurately|acknowledging emotions|genuine response)\s*:")


def copies_stage_list(text: str) -> bool:
    """Does the reply reproduce the prompt's list of stages (two headings or more) rather than reply?"""
    return len({m.lower() for m in _STAGE_HEADING.findall(text)}) >= 2


@dataclass
class CandidateLog:
    calls: int = 0
    flags: Counter = field(default_factory=Counter)
    dropped: int = 0  # unusable replies (empty, refusal, echo): never labelled, never trained on

    def to_json(self) -> dict:
        return {"calls": self.calls, "dropped_unusable": self.dropped,
                "flags": {f: int(self.flags.get(f, 0)) for f in FLAGS}}


def teacher_messages(example: dict, kind: str) -> list[dict]:
    """The teacher's prompt for one example: the earlier conversation as Context and the seeker's
    last message as the Speaker Utterance."""
    return load_prompt(CANDIDATE_PROMPTS[kind]).messages(context=example["earlier"], utterance=example["utterance"])


def generate_candidates(teacher: ChatBackend, examples: list[dict], per_prompt: int, max_new_tokens: int,
                        temperature: float, seed: int, log: CandidateLog, on_truncated: str = "trim") -> list[dict]:
    """``per_prompt`` candidates per example and prompt kind: the first greedy, the others sampled
    (seed + k). Replies cut at the limit follow ``on_truncated`` (the teacher section's policy: trim
    to the last sentence, keep, or drop); unusable ones are kept
    in the list with ``usable: False`` so the card can count them."""
    out = []
    for kind in CANDIDATE_PROMPTS:
        convs = [teacher_messages(e, kind) for e in examples]
        for k in range(per_prompt):
            sampling = Sampling(max_new_tokens, 0.0 if k == 0 else temperature, 0.95 if k else 1.0, seed + k)
            answers = teacher.chat(convs, sampling)
            log.calls += len(convs)
            for e, conv, a in zip(examples, convs, answers):
                text = clean_reply(a.text)
                flags = check_reply(text, a.finish_reason, None, conv[-1]["content"])
                if "truncated" in flags and on_truncated != "keep":
                    text = trim_to_sentence(text) if on_truncated == "trim" else ""
                    flags = flags if text else ["empty", "truncated"]
                if kind == "dbt" and copies_stage_list(text) and "echo" not in flags:
                    flags = flags + ["echo"]  # the prompt's stage list, not a reply: unusable, counted
                log.flags.update(flags)
                ok = usable(flags)
                log.dropped += not ok
                out.append({"example_id": e["example_id"], "kind": kind, "k": k, "text": text, "flags": flags,
                            "usable": ok})
    return out


def build_pairs(examples: list[dict], candidates: list[dict], labels: list[dict | None],
                min_margin: int = 1) -> tuple[list[dict], dict]:
    """Chosen / rejected pairs from labelled candidates (``labels[i]`` belongs to ``candidates[i]``,
    None = unusable or unparsed). Returns the pairs (TRL's conversational preference format: the
    student's chat as ``prompt``) and the counts of every drop."""
    by_example: dict[str, list[tuple[dict, int]]] = {}
    counts = Counter(contexts=len(examples), candidates=len(candidates))
    for cand, lab in zip(candidates, labels):
        if not cand["usable"]:
            counts["candidates_unusable"] += 1
            continue
        if lab is None:
            counts["candidates_unparsed"] += 1
            continue
        by_example.setdefault(cand["example_id"], []).append((cand, stages_met(lab)))
    pairs = []
    for e in examples:
        scored = by_example.get(e["example_id"], [])
        if len(scored) < 2:
            counts["dropped_too_few_labelled"] += 1
            continue
        # Best first, worst last; among equals the DBT prompt's and the earlier candidate first (stable).
        ranked = sorted(scored, key=lambda cs: -cs[1])
        (chosen, c_score), (rejected, r_score) = ranked[0], ranked[-1]
        if c_score - r_score < min_margin:
            counts["dropped_ties"] += 1
            continue
        prompt = student_messages(e)
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen["text"]}],
                      "rejected": [{"role": "assistant", "content": rejected["text"]}],
                      "example_id": e["example_id"], "emotion": e["emotion"],
                      "chosen_kind": chosen["kind"], "rejected_kind": rejected["kind"],
                      "chosen_stages": c_score, "rejected_stages": r_score})
    counts["pairs"] = len(pairs)
    counts["chosen_from_dbt_prompt"] = sum(p["chosen_kind"] == "dbt" for p in pairs)
    for key in ("candidates_unusable", "candidates_unparsed", "dropped_too_few_labelled", "dropped_ties"):
        counts.setdefault(key, 0)
    return pairs, dict(counts)
