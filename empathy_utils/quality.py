"""Checks on teacher output, and the policy that acts on them.

A teacher reply can be empty, cut off at the token limit (truncated), longer than the prompts' 97-word
limit (over_long), a refusal, or an echo of the prompt or of the reply it was asked to improve.

Policy (applies to every dataset; the dataset card counts every flag):
- ``empty``, ``refusal``, ``echo``: unusable; asked once more with sampling (temperature 0.7, a new
  seed); if the retry is still unusable the row is dropped.
- ``truncated`` (cut at the token limit), by ``teacher.on_truncated``: ``trim`` (default) cuts it
  back to its last complete sentence and keeps it with the flag, and with no complete sentence it
  counts as ``empty``; ``keep`` keeps it as is; ``drop`` treats it as unusable. A half sentence is a
  poor training target: a student trained on them learns to stop mid-thought.
- ``over_long`` (more than 97 words): kept with the flag (the text is still a reply; a user can
  filter on the flag).
"""

from __future__ import annotations

import re

WORD_LIMIT = 97
UNUSABLE = ("empty", "refusal", "echo")
KEPT_WITH_FLAG = ("truncated", "over_long")
FLAGS = UNUSABLE + KEPT_WITH_FLAG

_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:improved response|new response|improved|response|reply|answer|listener)\s*(?:\d+)?\s*:(?:\*\*)?\s*",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:as an ai(?: language model)?|i(?:'m| am) (?:an ai|not able to|unable to)|i can(?:no|')t (?:help|assist|provide|do that)"
    r"|i (?:won't|will not) (?:help|provide))\b",
    re.IGNORECASE,
)
_PROMPT_MARKERS = ("Speaker Utterance:", "Improved Response:", "Context:")


def clean_reply(text: str) -> str:
    """Strip the scaffolding small models add: a leading label ("Improved Response:"), wrapping
    quotes, and anything after the model starts writing a new prompt field."""
    text = (text or "").strip()
    for _ in range(2):
        text = _LABEL.sub("", text, count=1).strip()
    for marker in _PROMPT_MARKERS:
        pos = text.find(marker)
        if pos > 0:
            text = text[:pos].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """The text up to its last complete sentence ('' if no sentence is complete)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def word_count(text: str) -> int:
    """Words of a reply (whitespace-separated); the judges' length baseline and length bias count the same way."""
    return len(str(text).split())


def check_reply(text: str, finish_reason: str = "stop", original: str | None = None,
                prompt_text: str | None = None) -> list[str]:
    """The flags that apply to a cleaned reply (empty list = fine)."""
    flags = []
    stripped = text.strip()
    if not stripped:
        return ["empty"]
    if _REFUSAL.search(stripped):
        flags.append("refusal")
    norm = _normalise(stripped)
    if original is not None and norm == _normalise(original):
        flags.append("echo")
    elif prompt_text is not None and len(norm) > 20 and norm in _normalise(prompt_text) and original is None:
        flags.append("echo")
    elif any(m in stripped for m in _PROMPT_MARKERS):
        flags.append("echo")
    if finish_reason == "length":
        flags.append("truncated")
    if word_count(stripped) > WORD_LIMIT:
        flags.append("over_long")
    return flags


def usable(flags: list[str]) -> bool:
    return not any(f in UNUSABLE for f in flags)


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
