"""The judge interface, verdict parsing and the pairwise LLM judge."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


from ..backends import ChatBackend, Sampling
from ..prompts import JUDGE_PROMPT_ID, load_prompt

VERDICTS = ("a", "b", "tie", "unparsed")
# The judge kinds a params file can name (judge.kind, judge_validation.candidates).
JUDGE_KINDS = ("pairwise-llm", "likelihood", "embedding-head", "reward-model", "stacked", "writer-style",
               "cross-encoder")
_DIGIT = re.compile(r"^\W*(?:response\s*)?([12])\b", re.IGNORECASE)
_NAMED = re.compile(r"\bresponse\s*([12])\b", re.IGNORECASE)
# Quoting markers of the judge prompt; a reply cannot close its own quotation.
_QUOTE_MARKERS = re.compile(r"<<<|>>>")


def neutralize(reply: str) -> str:
    """Remove the judge prompt's quote markers from a reply, so it cannot break out of its quotes."""
    return _QUOTE_MARKERS.sub("", reply)


def parse_choice(text: str) -> str | None:
    """'1'/'2' (also 'Response 2', '**1**', 'I pick response 2') -> '1'/'2'; anything else -> None.

    A bare digit must open the answer; elsewhere only an unambiguous "response N" counts (an answer
    naming both responses is unparsed)."""
    text = text or ""
    m = _DIGIT.match(text)
    if m:
        return m.group(1)
    named = set(_NAMED.findall(text))
    return named.pop() if len(named) == 1 else None


class Judge:
    """The interface every judge implements (see the module docstring)."""

    kind: str = "judge"
    name: str = "judge"
    # True: the verdict cannot depend on which reply is shown first (each reply is scored alone).
    order_free: bool = False
    # True: records carry p_a, the judge's probability that reply A is the better one.
    gives_probability: bool = False

    def judge(self, items: list[dict]) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError


# ----------------------------------------------------------------------------- pairwise LLM
@dataclass
class PairwiseLLMJudge(Judge):
    backend: ChatBackend
    mode: str = "logprobs"  # or "text"
    prompt_id: str = JUDGE_PROMPT_ID
    # None: a tie when the two orders disagree (FastChat's rule). A number delta (logprobs mode): the
    # verdict follows p_a (both orders averaged), a tie inside |p_a - 0.5| < delta (chosen on the
    # selection set by judge_validation).
    tie_band: float | None = None

    kind = "pairwise-llm"

    def __post_init__(self):
        if self.mode == "logprobs" and not self.backend.supports_logprobs:
            self.mode = "text"
        self.prompt = load_prompt(self.prompt_id)

    @property
    def gives_probability(self) -> bool:  # type: ignore[override]
        return self.mode == "logprobs"

    @property
    def name(self) -> str:  # type: ignore[override]
        how = "token probabilities" if self.mode == "logprobs" else "generated text"
        return f"pairwise {self.backend.name} ({how}, both orders)"

    def _conversation(self, item: dict, first: str, second: str) -> list[dict]:
        return self.prompt.messages(
            context=item["context"], utterance=item["utterance"],
            response_1=neutralize(first), response_2=neutralize(second),
        )

    def _order_verdicts(self, convs: list[list[dict]]) -> list[tuple[str | None, float | None]]:
        """Per conversation: ('1'|'2'|None, P(response 1 is better) or None)."""
        if not convs:
            return []
        if self.mode == "logprobs":
            out = []
            for lp in self.backend.choice_logprobs(convs, ["1", "2"]):
                p1 = 1.0 / (1.0 + math.exp(lp["2"] - lp["1"]))
                out.append(("1" if p1 > 0.5 else "2" if p1 < 0.5 else None, p1))
            return out
        answers = self.backend.chat(convs, Sampling(max_new_tokens=4, temperature=0.0))
        return [(parse_choice(a.text), None) for a in answers]

    def judge(self, items: list[dict]) -> list[dict]:
        """``items``: dicts with id, context, utterance, response_a, response_b.
        Returns one record per item: verdict, p_a (if probabilities), the two per-order choices, judge."""
        ab = [self._conversation(it, it["response_a"], it["response_b"]) for it in items]
        ba = [self._conversation(it, it["response_b"], it["response_a"]) for it in items]
        first = self._order_verdicts(ab)
        second = self._order_verdicts(ba)
        records = []
        for it, (c1, p1), (c2, p2) in zip(items, first, second):
            pick1 = {"1": "a", "2": "b"}.get(c1) if c1 else None  # A shown first
            pick2 = {"1": "b", "2": "a"}.get(c2) if c2 else None  # B shown first
            if pick1 is None or pick2 is None:
                parsed = (c1 is not None or self.mode == "logprobs", c2 is not None or self.mode == "logprobs")
                verdict = "tie" if all(parsed) else "unparsed"
            else:
                verdict = pick1 if pick1 == pick2 else "tie"
            p_a = None if p1 is None else 0.5 * (p1 + (1.0 - p2))
            if self.tie_band is not None and p_a is not None:
                verdict = "tie" if abs(p_a - 0.5) < self.tie_band or p_a == 0.5 else "a" if p_a > 0.5 else "b"
            records.append({"id": it["id"], "verdict": verdict, "p_a": p_a, "a_first": pick1,
                            "b_first": pick2, "judge": self.name})
        return records


def position_consistency(records: list[dict]) -> float | None:
    """Share of pairs where both orders gave the same (parsed) answer; None for order-free judges
    (their records carry no per-order picks: order cannot matter to them)."""
    both = [r for r in records if r.get("a_first") and r.get("b_first")]
    if not both:
        return None
    return sum(r["a_first"] == r["b_first"] for r in both) / len(both)
