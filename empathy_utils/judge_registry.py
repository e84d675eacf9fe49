"""One registry of judges by name. The judge command line (``empathy-study judge --judge NAME``) and
``judge_validation.build_judge`` look names up here, so a new judge is one ``register_judge`` call:

    from empathy_utils.judge_registry import register_judge
    register_judge("shorter", lambda cfg, section, log: ShorterReplyJudge(), "shorter reply wins")

A factory takes the run's config, the section it is built for (``judge`` or ``judge_validation``)
and a log function, and returns a :class:`empathy_utils.judges.Judge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config_loader import did_you_mean
from .errors import StudyError

JudgeFactory = Callable[..., object]  # (cfg, section, log) -> Judge


@dataclass(frozen=True)
class RegisteredJudge:
    name: str
    factory: JudgeFactory
    description: str
    # A baseline (e.g. longer-reply-wins) is used as is; a judge that reads the replies gets them
    # stripped of instructions to the judge when judge.strip_instructions is on.
    baseline: bool = False


_JUDGES: dict[str, RegisteredJudge] = {}


def register_judge(name: str, factory: JudgeFactory, description: str = "", baseline: bool = False,
                   replace: bool = False) -> None:
    """Make ``name`` a judge the command line and ``build_judge`` know."""
    if name in _JUDGES and not replace:
        raise StudyError(f"a judge named {name!r} is registered already (pass replace=True to change it)")
    if not name or name == "default":
        raise StudyError(f"{name!r} cannot name a judge")
    _JUDGES[name] = RegisteredJudge(name, factory, description, baseline)


def unregister_judge(name: str) -> None:
    _JUDGES.pop(name, None)


def judge_names() -> list[str]:
    return list(_JUDGES)


def registered(name: str) -> RegisteredJudge:
    if name not in _JUDGES:
        raise StudyError(f"unknown judge {name!r}{did_you_mean(name, judge_names())}")
    return _JUDGES[name]


def build_registered_judge(name: str, cfg, section: str = "judge", log=print):
    """The judge registered as ``name``, built for ``cfg``'s ``section``."""
    return registered(name).factory(cfg, section, log)


# ------------------------------------------------------------------------------- the study's own
def _candidate(kind: str) -> JudgeFactory:
    def build(cfg, section, log):
        from .judge_validation import build_judge

        return build_judge(kind, cfg, section, log=log)

    return build


def _longer(cfg, section, log):
    from .judges import LongerReplyJudge

    return LongerReplyJudge()


for _kind, _what in (("pairwise-llm", "a chat model asked which reply is more empathetic"),
                     ("likelihood", "a local model's mean token log-probability of each reply"),
                     ("embedding-head", "a logistic head on sentence embeddings, trained on human ratings"),
                     ("reward-model", "TRL's reward model with a LoRA adapter, trained on human ratings"),
                     ("writer-style", "which writer a reply reads like, times that writer's mean human rating"),
                     ("cross-encoder", "all-MiniLM-L6-v2 reading the turn and the reply together, fine-tuned on human ratings")):
    register_judge(_kind, _candidate(_kind), _what)
register_judge("longer", _longer, "the longer reply wins (a baseline, not a judge of empathy)", baseline=True)
