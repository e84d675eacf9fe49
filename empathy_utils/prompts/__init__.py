"""The prompt library: every prompt is a versioned YAML file in this folder.

A prompt file has an ``id``, a ``version``, a ``purpose`` (response, improve, dbt, reasoning, judge),
the paper element it implements, an optional ``system`` message and one or more user ``turns``
(several turns make a multi-turn chat, e.g. the sequential strategy). ``<<name>>`` splices a block
from ``fragments.yaml``; ``{field}`` is filled per example. The content hash covers the expanded
text, so a dataset built with a prompt records exactly which wording it used.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import ConfigError

PROMPTS_DIR = Path(__file__).resolve().parent
_FRAGMENT = re.compile(r"<<(\w+)>>")


@dataclass(frozen=True)
class Prompt:
    id: str
    version: int
    purpose: str
    paper: str
    description: str
    turns: tuple[str, ...]
    system: str | None = None
    strategy: str | None = None

    @property
    def sha256(self) -> str:
        payload = {"id": self.id, "version": self.version, "system": self.system, "turns": list(self.turns)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def fields(self) -> list[str]:
        names: list[str] = []
        for turn in self.turns:
            for _, name, _, _ in string.Formatter().parse(turn):
                if name and name not in names:
                    names.append(name)
        return names

    def render(self, **values: str) -> list[str]:
        """The user turns with every ``{field}`` filled; a missing field is an error."""
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise KeyError(f"prompt {self.id}: missing field(s) {missing}")
        return [turn.format(**{k: values[k] for k in self.fields}) for turn in self.turns]

    def messages(self, **values: str) -> list[dict]:
        """A single-turn chat (system + first user turn) ready for a chat template."""
        if len(self.turns) != 1:
            raise ValueError(f"prompt {self.id} has {len(self.turns)} turns; drive it with a multi-turn helper")
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": "user", "content": self.render(**values)[0]}]

    def record(self) -> dict:
        """What a dataset card or manifest stores about this prompt."""
        return {"id": self.id, "version": self.version, "sha256": self.sha256}


@lru_cache(maxsize=1)
def _fragments() -> dict[str, str]:
    data = yaml.safe_load((PROMPTS_DIR / "fragments.yaml").read_text(encoding="utf-8"))
    return dict(data["fragments"])


def _expand(text: str, source: Path) -> str:
    frags = _fragments()

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in frags:
            raise ConfigError(f"{source}: unknown fragment <<{name}>>; known: {', '.join(sorted(frags))}")
        return frags[name]

    for _ in range(5):  # fragments may use fragments (improve_stem uses length)
        new = _FRAGMENT.sub(sub, text)
        if new == text:
            break
        text = new
    return text


@lru_cache(maxsize=None)
def load_prompt(prompt_id: str) -> Prompt:
    path = PROMPTS_DIR / f"{prompt_id}.yaml"
    if not path.exists():
        raise ConfigError(f"no prompt {prompt_id!r} (looked for {path}); known: {', '.join(prompt_ids())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("id", "version", "purpose", "paper", "description", "turns"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}")
    if data["id"] != prompt_id:
        raise ConfigError(f"{path}: id {data['id']!r} does not match the file name")
    return Prompt(
        id=data["id"],
        version=int(data["version"]),
        purpose=data["purpose"],
        paper=data["paper"],
        description=data["description"],
        turns=tuple(_expand(t, path) for t in data["turns"]),
        system=data.get("system"),
        strategy=data.get("strategy"),
    )


def prompt_ids() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml") if p.stem != "fragments")


def all_prompts() -> list[Prompt]:
    return [load_prompt(i) for i in prompt_ids()]


# The paper's strategies, in the order its tables list them: the order of display only. Which
# strategies exist is read from the files: every ``improve-NAME.yaml`` whose purpose is ``improve``
# makes NAME a valid ``dataset.strategy``, with no code to change.
PAPER_STRATEGY_ORDER = ("naive", "all-three", "identify-lacking", "cognitive", "affective", "compassionate",
                        "sequential", "combined")
IMPROVE_PREFIX = "improve-"
# Not a prompt: the union of the cognitive, affective and compassionate datasets (distillation.py).
COMBINED = "combined"


def strategy_names() -> list[str]:
    """Every valid ``dataset.strategy``: one per improvement prompt file, plus ``combined``."""
    names = [i[len(IMPROVE_PREFIX):] for i in prompt_ids()
             if i.startswith(IMPROVE_PREFIX) and load_prompt(i).purpose == "improve"] + [COMBINED]
    order = {s: k for k, s in enumerate(PAPER_STRATEGY_ORDER)}
    return sorted(names, key=lambda s: (order.get(s, len(order)), s))


def improvement_prompt(strategy: str) -> Prompt:
    """The improvement prompt of a strategy (``combined`` is a union of datasets, not a prompt)."""
    if strategy == "combined":
        raise ValueError("'combined' is the union of the cognitive, affective and compassionate datasets")
    return load_prompt(f"improve-{strategy}")


BASE_PROMPT_ID = "base-response"
JUDGE_PROMPT_ID = "judge-pairwise"


PURPOSE_TITLES = {
    "response": "Response prompts (the student's input)",
    "improve": "Improvement prompts (the teacher)",
    "dbt": "DBT-stage prompts",
    "reasoning": "Empathy-reasoning prompt (PRIDE's teacher)",
    "judge": "Judge prompts",
}


def _wrapped(text: str, width: int = 92) -> str:
    """Wrap long lines for reading (display only: the hash covers the text as sent)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) if len(line) > width else line for line in text.splitlines())


def library_markdown() -> str:
    """Every prompt, expanded from its file, as MyST Markdown (the book's prompts chapter)."""
    parts = []
    by_purpose: dict[str, list[Prompt]] = {}
    order = {f"{IMPROVE_PREFIX}{s}": i for i, s in enumerate(strategy_names())}
    for p in sorted(all_prompts(), key=lambda p: (order.get(p.id, -1), p.id)):
        by_purpose.setdefault(p.purpose, []).append(p)
    for purpose in [k for k in PURPOSE_TITLES if k in by_purpose] + sorted(set(by_purpose) - set(PURPOSE_TITLES)):
        parts.append(f"**{PURPOSE_TITLES.get(purpose, purpose)}**\n")
        for p in by_purpose[purpose]:
            fields = ", ".join(f"`{{{f}}}`" for f in p.fields)
            body = [f"````{{admonition}} {p.id} · version {p.version} · sha256 {p.short_hash}",
                    ":class: dropdown", "",
                    f"{p.description} *Implements:* {p.paper}. *Filled per example:* {fields}.", ""]
            if p.system:
                body += ["System message:", "", "```text", _wrapped(p.system), "```", ""]
            for i, turn in enumerate(p.turns, start=1):
                if len(p.turns) > 1:
                    body += [f"Turn {i} of {len(p.turns)}:", ""]
                body += ["```text", _wrapped(turn), "```", ""]
            body.append("````")
            parts.append("\n".join(body) + "\n")
    return "\n".join(parts)
