"""Two labellers of DBT adherence: does a reply meet each of the four validation stages the paper
names (listening, reflecting accurately, acknowledging emotions, responding genuinely)?

- :func:`llm_labels` asks a chat model with the ``dbt-adherence`` prompt through any
  :class:`~empathy_utils.backends.ChatBackend` (local, served, API) and parses its four
  ``Stage: yes/no`` lines; an answer that does not give all four is *unparsed* and counted, never
  guessed.
- :func:`rule_labels` is a cheap lexical scorer: word overlap with the speaker's message, restatement
  and validation phrases, an emotion lexicon, advice and stock-phrase markers. It reads words, not
  meaning; it is here as a second opinion whose agreement with the first is reported
  (:func:`agreement`), and as a labeller that never fails to parse.

The DBT-adherence metric of the book is :func:`adherence`: the mean share of the four stages a
labeller says the replies meet (0 to 1, higher is better).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..backends import ChatBackend, Sampling
from ..prompts import load_prompt

DBT_STAGES = ("listening", "reflecting", "acknowledging", "genuine")
STAGE_TITLES = {"listening": "listening", "reflecting": "reflecting accurately",
                "acknowledging": "acknowledging emotions", "genuine": "responding genuinely"}
LABEL_PROMPT_ID = "dbt-adherence"
_ANSWER = {s: re.compile(rf"(?im)^[\s*#>\-\d.]*{s}[^:\n]{{0,30}}:[\s*]*(yes|no)\b") for s in DBT_STAGES}


def parse_adherence(text: str) -> dict[str, bool] | None:
    """'Listening: yes\\nReflecting: no\\n…' -> {stage: bool}; None unless all four stages are answered
    (the first answer of each stage counts; capitals, bullets and bold are tolerated)."""
    out = {}
    for stage, pattern in _ANSWER.items():
        m = pattern.search(text or "")
        if not m:
            return None
        out[stage] = m.group(1).lower() == "yes"
    return out


@dataclass
class LabelLog:
    """What the LLM labeller did: calls made, answers parsed, answers that could not be read."""

    calls: int = 0
    parsed: int = 0
    unparsed: int = 0
    examples_unparsed: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"calls": self.calls, "parsed": self.parsed, "unparsed": self.unparsed,
                "parse_rate": self.parsed / self.calls if self.calls else None}


def label_messages(context: str, utterance: str, reply: str) -> list[dict]:
    return load_prompt(LABEL_PROMPT_ID).messages(context=context, utterance=utterance, response=reply)


def llm_labels(backend: ChatBackend, items: list[dict], sampling: Sampling, log: LabelLog) -> list[dict | None]:
    """Label each item (``context``, ``utterance``, ``reply``); None where the answer was unparsed."""
    if not items:
        return []
    answers = backend.chat([label_messages(i["context"], i["utterance"], i["reply"]) for i in items], sampling)
    out = []
    for item, answer in zip(items, answers):
        log.calls += 1
        labels = parse_adherence(answer.text)
        if labels is None:
            log.unparsed += 1
            if len(log.examples_unparsed) < 3:
                log.examples_unparsed.append(answer.text[:200])
        else:
            log.parsed += 1
        out.append(labels)
    return out


# ----------------------------------------------------------------------------- the rule labeller
_WORD = re.compile(r"[a-z']+")
_STOP = set("""a an the and or but if so of to in on at by for with from as is are was were be been being am i me my
mine you your yours he she it its we our they them their this that these those there here what which who whom
how why when where do does did doing have has had having not no yes just very really too also all any some can
could would should will shall may might must than then now about into out up down over again more most much
such only own same other off one get got go going im i'm it's that's don't didn't can't won't i've i'll i'd
you're you've you'll you'd feel feeling felt like know think said say says""".split())
_ADVICE = re.compile(r"\b(you should|you (?:just |really )?need to|you have to|you must|why don't you|have you tried|try to|"
                     r"calm down|don't worry|get over|at least|look on the bright side|cheer up|just (?:try|stop|relax|ignore))\b")
_REFLECT = re.compile(r"\b(it sounds|sounds like|so you|you're saying|you said|what i'm hearing|you've been|"
                      r"you feel|you're feeling|you are feeling|it seems|seems like|you're (?:worried|scared|"
                      r"caught|trying|carrying))\b")
_EMOTION = re.compile(r"\b(sad\w*|hurt\w*|pain\w*|scar\w*|frighten\w*|terrif\w*|afraid|fear\w*|anxi\w*|worr\w*|"
                      r"stress\w*|overwhelm\w*|lonel\w*|alone|ang(?:ry|er)|furious|infuriat\w*|frustrat\w*|upset\w*|"
                      r"heartbr\w*|devastat\w*|exhaust\w*|ashamed|shame\w*|guilt\w*|jealous\w*|disappoint\w*|"
                      r"grie\w*|nerv\w*|humiliat\w*|shock\w*|discourag\w*|dread\w*|tough|hard|difficult|heavy|"
                      r"sting\w*|confus\w*|miss(?:ing)?|loss)\b")
_VALIDATE = re.compile(r"\b(makes? (?:complete |total |a lot of )?sense|understandable|no wonder|of course you|"
                       r"it's (?:ok|okay) to|natural to|valid|that's a lot|human)\b")
_STOCK = re.compile(r"\b(as an ai|language model|i am sorry to hear that\.?$|i'm sorry to hear that\.?$|"
                    r"i understand how you feel|everything happens for a reason|stay positive)\b")
_SECOND_PERSON = re.compile(r"\byou(?:r|rs|rself|'re|'ve|'ll|'d)?\b")
MIN_WORDS, MAX_WORDS = 6, 97


def _content(text: str) -> set[str]:
    """Content words, cut to five letters (a crude stem: 'worried' and 'worries' meet as 'worri')."""
    return {w[:5] for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP}


def rule_labels(utterance: str, reply: str) -> dict[str, bool]:
    """The four stages by lexical rules (see the module docstring; the tests show each rule on
    hand-made replies)."""
    text = " ".join((reply or "").lower().split())
    shared = _content(utterance) & _content(text)
    words = len(text.split())
    advice = bool(_ADVICE.search(text))
    unadvised = _ADVICE.sub(" ", text)  # "don't worry" names no feeling of the speaker's
    own = _content(text)
    copied = bool(own) and len(own & _content(utterance)) / len(own) > 0.8
    return {
        # Takes in what was said (picks up its words) without fixing or judging it.
        "listening": bool(shared) and not advice,
        # Puts it back in its own words: a restatement phrase about the same things, or several shared words.
        "reflecting": (bool(_REFLECT.search(text)) and bool(shared)) or len(shared) >= 2,
        # Names or accepts a feeling.
        "acknowledging": bool(_EMOTION.search(unadvised)) or bool(_VALIDATE.search(unadvised)),
        # Speaks to the person, at a human length, not in stock phrases, not an echo.
        "genuine": (bool(_SECOND_PERSON.search(text)) and MIN_WORDS <= words <= MAX_WORDS
                    and not _STOCK.search(text) and not copied),
    }


# ------------------------------------------------------------------------------ metric, agreement
def stages_met(labels: dict[str, bool] | None) -> int | None:
    return None if labels is None else sum(bool(labels[s]) for s in DBT_STAGES)


def adherence(labels: list[dict | None]) -> dict:
    """The DBT-adherence metric: the mean share of the four stages met over the labelled replies
    (unparsed ones left out and counted), and the share meeting each stage."""
    known = [lab for lab in labels if lab is not None]
    out = {"replies": len(labels), "labelled": len(known), "unparsed": len(labels) - len(known),
           "adherence": sum(stages_met(lab) for lab in known) / (4 * len(known)) if known else float("nan")}
    for s in DBT_STAGES:
        out[s] = sum(lab[s] for lab in known) / len(known) if known else float("nan")
    return out


def agreement(first: list[dict | None], second: list[dict | None]) -> dict:
    """How far two labellers agree on the same replies, over those both labelled: per stage the share
    of equal answers and Cohen's kappa (scikit-learn), and the share with the same number of stages met."""
    from sklearn.metrics import cohen_kappa_score

    both = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    out = {"replies": len(first), "both_labelled": len(both)}
    for s in DBT_STAGES:
        x = [int(a[s]) for a, _ in both]
        y = [int(b[s]) for _, b in both]
        out[f"{s}_agreement"] = sum(i == j for i, j in zip(x, y)) / len(both) if both else float("nan")
        # Kappa is undefined when both labellers give one answer throughout.
        out[f"{s}_kappa"] = float(cohen_kappa_score(x, y)) if len(set(x) | set(y)) > 1 else float("nan")
    out["same_count"] = (sum(stages_met(a) == stages_met(b) for a, b in both) / len(both)) if both else float("nan")
    return out
