"""Distillation datasets (Xie et al. 2025, book/methods.md, Building the distillation data): which rows, which replies, which pairs.

Three methods over the train dialogues:

- **M1 direct** (``direct``): the rated replies of an LLM; no teacher call.
  SFT rows: human Good and LLM Good -> two examples (P0 -> human reply, P0 -> LLM reply).
  DPO rows: human Bad/Okay and LLM Good -> chosen LLM reply, rejected human reply.
  ``faithful`` reproduces the released code's precedence bug: human Okay, or (human Bad and LLM Good).
- **M2 improve-human** (``improve-human``): human Good rows -> SFT (original + improved human reply);
  human Bad/Okay rows -> DPO (chosen improved, rejected original).
- **M3 improve-initial** (``improve-initial``): the teacher answers with P0 (initial reply), then
  improves it; a seeded share of rows (950/1,750) -> SFT (human reply + improved reply), the rest -> DPO,
  chosen = improved, rejected = the human reply (``faithful``, as released) or the teacher's own
  initial reply (``corrected``, as the paper describes it).

Selection (which rows go where) is pure and tested against the paper's counts; the teacher only
fills in text. SFT examples are chat ``messages``; DPO pairs are conversational prompt/chosen/rejected.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .backends import ChatBackend, Sampling
from .data import GOOD, LVH_SOURCES, SOURCE_LABELS
from .errors import StudyError
from .prompts import BASE_PROMPT_ID, Prompt, improvement_prompt, load_prompt
from .quality import FLAGS, check_reply, clean_reply, trim_to_sentence, usable

LLM_SOURCES = [s for s in LVH_SOURCES.values() if s != "human"]
COMBINED_PARTS = ("cognitive", "affective", "compassionate")
RETRY_SAMPLING_TEMPERATURE = 0.7


# ------------------------------------------------------------------------------------ selection
def m1_masks(frame: pd.DataFrame, source_llm: str, construction: str) -> tuple[pd.Series, pd.Series]:
    """Boolean masks of M1's SFT rows and DPO rows for one source LLM."""
    human = frame["rating_human"]
    llm = frame[f"rating_{source_llm}"]
    sft = (human == GOOD) & (llm == GOOD)
    if construction == "faithful":
        # As released: `human == 2 or human == 1 and llm == 3` — `and` binds tighter than `or`.
        dpo = (human == 2) | ((human == 1) & (llm == GOOD))
    else:
        dpo = human.isin([1, 2]) & (llm == GOOD)
    return sft, dpo


def m2_masks(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    sft = frame["rating_human"] == GOOD
    return sft, ~sft


def m3_masks(frame: pd.DataFrame, sft_share: float, seed: int) -> tuple[pd.Series, pd.Series]:
    """A seeded random ``sft_share`` of rows for SFT (the paper: 950 of 1,750 with seed 42)."""
    n_sft = int(round(sft_share * len(frame)))
    order = np.random.default_rng(seed).permutation(len(frame))
    sft = np.zeros(len(frame), dtype=bool)
    sft[order[:n_sft]] = True
    sft_series = pd.Series(sft, index=frame.index)
    return sft_series, ~sft_series


def selection_counts(train: pd.DataFrame, sft_share: float = 950 / 1750, seed: int = 42) -> dict:
    """Row counts of every method on a train frame (no teacher needed): what ``data stats`` prints."""
    out: dict = {"M1": {}}
    for mode in ("corrected", "faithful"):
        per = {}
        for src in LLM_SOURCES:
            sft, dpo = m1_masks(train, src, mode)
            per[src] = {"sft_rows": int(sft.sum()), "sft_examples": 2 * int(sft.sum()), "dpo_pairs": int(dpo.sum())}
        per["all"] = {k: sum(v[k] for v in per.values()) for k in ("sft_rows", "sft_examples", "dpo_pairs")}
        out["M1"][mode] = per
    sft, dpo = m2_masks(train)
    out["M2"] = {"sft_rows": int(sft.sum()), "sft_examples": 2 * int(sft.sum()), "dpo_pairs": int(dpo.sum())}
    sft, dpo = m3_masks(train, sft_share, seed)
    out["M3"] = {"sft_rows": int(sft.sum()), "sft_examples": 2 * int(sft.sum()), "dpo_pairs": int(dpo.sum())}
    return out


# ------------------------------------------------------------------------------------- records
def base_prompt_messages(row, prompt: Prompt | None = None) -> list[dict]:
    prompt = prompt or load_prompt(BASE_PROMPT_ID)
    return prompt.messages(context=row["situation"], utterance=row["utterance"])


def sft_example(row, target: str, source: str, flags: list[str] | None = None) -> dict:
    return {
        "messages": base_prompt_messages(row) + [{"role": "assistant", "content": target}],
        "dialogue_id": row["dialogue_id"],
        "emotion": row["emotion"],
        "target_source": source,
        "flags": list(flags or []),
    }


def dpo_pair(row, chosen: str, rejected: str, chosen_source: str, rejected_source: str,
             flags: list[str] | None = None) -> dict:
    return {
        "prompt": base_prompt_messages(row),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "dialogue_id": row["dialogue_id"],
        "emotion": row["emotion"],
        "chosen_source": chosen_source,
        "rejected_source": rejected_source,
        "flags": list(flags or []),
    }


# ---------------------------------------------------------------------------------- teacher use
@dataclass
class TeacherLog:
    """What the teacher was asked and how its answers fared (goes into the dataset card).
    ``flags`` count the final answers, after the one retry of unusable ones."""

    on_truncated: str = "trim"  # the policy for answers cut at the token limit: trim, keep or drop
    calls: int = 0
    retried: int = 0
    dropped: int = 0
    flags: Counter = field(default_factory=Counter)
    prompts: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"on_truncated": self.on_truncated, "calls": self.calls, "retried": self.retried, "dropped": self.dropped,
                "flags": {f: int(self.flags.get(f, 0)) for f in FLAGS}, "prompts": self.prompts}


def _checked(answer, original: str | None, conv: list[dict], on_truncated: str = "trim") -> tuple[str, list[str]]:
    """Clean a teacher answer, apply the truncation policy, and flag it (see quality.py)."""
    text = clean_reply(answer.text)
    flags = check_reply(text, answer.finish_reason, original, conv[-1]["content"])
    if "truncated" in flags and on_truncated != "keep":
        text = trim_to_sentence(text) if on_truncated == "trim" else ""
        if not text:
            flags = ["empty", "truncated"]
    return text, flags


def _ask(teacher: ChatBackend, convs: list[list[dict]], sampling: Sampling, log: TeacherLog,
         originals: list[str | None]) -> list[tuple[str, list[str]]]:
    """One teacher turn for many chats, cleaned and checked; unusable answers are retried once."""
    answers = teacher.chat(convs, sampling)
    log.calls += len(convs)
    out = [_checked(ans, orig, conv, log.on_truncated) for conv, ans, orig in zip(convs, answers, originals)]
    retry = [i for i, (_, flags) in enumerate(out) if not usable(flags)]
    if retry:
        resampling = Sampling(sampling.max_new_tokens, RETRY_SAMPLING_TEMPERATURE, 0.95, sampling.seed + 1)
        again = teacher.chat([convs[i] for i in retry], resampling)
        log.calls += len(retry)
        log.retried += len(retry)
        for i, ans in zip(retry, again):
            out[i] = _checked(ans, originals[i], convs[i], log.on_truncated)
    for _, flags in out:
        log.flags.update(flags)
    return out


def initial_replies(teacher: ChatBackend, rows: pd.DataFrame, sampling: Sampling, log: TeacherLog):
    prompt = load_prompt(BASE_PROMPT_ID)
    log.prompts[prompt.id] = prompt.record()
    convs = [base_prompt_messages(r, prompt) for _, r in rows.iterrows()]
    return _ask(teacher, convs, sampling, log, [None] * len(convs))


def improved_replies(teacher: ChatBackend, rows: pd.DataFrame, originals: list[str], strategy: str,
                     sampling: Sampling, log: TeacherLog):
    """Rewrite ``originals`` with one strategy; ``sequential`` is a three-turn chat (third answer kept)."""
    prompt = improvement_prompt(strategy)
    log.prompts[prompt.id] = prompt.record()
    turns = [prompt.render(context=r["situation"], utterance=r["utterance"], response=o)
             for (_, r), o in zip(rows.iterrows(), originals)]
    system = [{"role": "system", "content": prompt.system}] if prompt.system else []
    convs = [system + [{"role": "user", "content": t[0]}] for t in turns]
    answers = _ask(teacher, convs, sampling, log, list(originals))
    for k in range(1, len(prompt.turns)):
        convs = [c + [{"role": "assistant", "content": a[0]}, {"role": "user", "content": t[k]}]
                 for c, a, t in zip(convs, answers, turns)]
        answers = _ask(teacher, convs, sampling, log, [a[0] for a in answers])
    return answers


# ------------------------------------------------------------------------------------- methods
def direct_distillation(train: pd.DataFrame, source_llm: str, construction: str):
    sources = LLM_SOURCES if source_llm == "all" else [source_llm]
    sft, dpo = [], []
    for src in sources:
        sft_mask, dpo_mask = m1_masks(train, src, construction)
        for _, row in train[sft_mask].iterrows():
            sft.append(sft_example(row, row["reference_reply"], "human"))
            sft.append(sft_example(row, row[f"response_{src}"], src))
        for _, row in train[dpo_mask].iterrows():
            dpo.append(dpo_pair(row, row[f"response_{src}"], row["reference_reply"], src, "human"))
    return sft, dpo


def _strategies(strategy: str) -> list[str]:
    return list(COMBINED_PARTS) if strategy == "combined" else [strategy]


def improve_human(train, teacher, strategy, sampling, log):
    sft_mask, dpo_mask = m2_masks(train)
    sft, dpo = [], []
    for strat in _strategies(strategy):
        for mask, kind in ((sft_mask, "sft"), (dpo_mask, "dpo")):
            rows = train[mask]
            improved = improved_replies(teacher, rows, list(rows["reference_reply"]), strat, sampling, log)
            for (_, row), (text, flags) in zip(rows.iterrows(), improved):
                if kind == "sft":
                    sft.append(sft_example(row, row["reference_reply"], "human"))
                if not usable(flags):
                    log.dropped += 1
                    continue
                if kind == "sft":
                    sft.append(sft_example(row, text, f"teacher-improved:{strat}", flags))
                else:
                    dpo.append(dpo_pair(row, text, row["reference_reply"], f"teacher-improved:{strat}", "human", flags))
    return _dedupe(sft), dpo


def improve_initial(train, teacher, strategy, construction, sampling, log, sft_share, seed):
    sft_mask, _ = m3_masks(train, sft_share, seed)
    initial = initial_replies(teacher, train, sampling, log)
    sft, dpo = [], []
    for strat in _strategies(strategy):
        improved = improved_replies(teacher, train, [t for t, _ in initial], strat, sampling, log)
        for (idx, row), (init, init_flags), (text, flags) in zip(train.iterrows(), initial, improved):
            in_sft = bool(sft_mask.loc[idx])
            if in_sft:
                sft.append(sft_example(row, row["reference_reply"], "human"))
            if not usable(flags) or (not in_sft and construction == "corrected" and not usable(init_flags)):
                log.dropped += 1
                continue
            if in_sft:
                sft.append(sft_example(row, text, f"teacher-improved:{strat}", flags))
            elif construction == "corrected":
                dpo.append(dpo_pair(row, text, init, f"teacher-improved:{strat}", "teacher-initial",
                                    sorted(set(flags) | set(init_flags))))
            else:
                dpo.append(dpo_pair(row, text, row["reference_reply"], f"teacher-improved:{strat}", "human", flags))
    return _dedupe(sft), dpo


def _dedupe(examples: list[dict]) -> list[dict]:
    """``combined`` repeats each human example once per part; keep one copy of identical examples."""
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex["messages"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


# --------------------------------------------------------------------------------------- cards
def per_emotion(rows: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r["emotion"] for r in rows).items()))


def reply_lengths(rows: list[dict], key: str) -> list[int]:
    return [len(r[key][-1]["content"].split()) for r in rows]


def describe(method: str, strategy: str, construction: str, source_llm: str, teacher_name: str | None,
             sft: list[dict], dpo: list[dict], log: TeacherLog | None, source: dict) -> dict:
    """The dataset card: everything needed to know what a dataset is and how it was made."""
    card = {
        "method": {"direct": "M1 direct distillation", "improve-human": "M2 improve human replies",
                   "improve-initial": "M3 improve the teacher's initial replies"}[method],
        "method_id": method,
        "strategy": None if method == "direct" else strategy,
        "construction": construction,
        "source_llm": SOURCE_LABELS.get(source_llm, source_llm) if method == "direct" else None,
        "teacher": teacher_name if method != "direct" else None,
        "counts": {"sft_examples": len(sft), "dpo_pairs": len(dpo)},
        "sft_sources": dict(Counter(r["target_source"] for r in sft)),
        "dpo_sources": dict(Counter(f"{r['chosen_source']} > {r['rejected_source']}" for r in dpo)),
        "per_emotion": {"sft": per_emotion(sft), "dpo": per_emotion(dpo)},
        "prompts": {BASE_PROMPT_ID: load_prompt(BASE_PROMPT_ID).record()},
        "source_data": source,
        "teacher_output": log.to_json() if log else None,
    }
    if log:
        card["prompts"].update(log.prompts)
    return card


def card_markdown(card: dict) -> str:
    lines = [f"# Distillation dataset: {card['method']}", ""]
    for key in ("strategy", "construction", "source_llm", "teacher"):
        if card.get(key):
            lines.append(f"- **{key.replace('_', ' ')}**: {card[key]}")
    lines.append(f"- **SFT examples**: {card['counts']['sft_examples']}; **DPO pairs**: {card['counts']['dpo_pairs']}")
    lines.append(f"- **source data**: {card['source_data'].get('name')} (sha256 {card['source_data'].get('sha256', '')[:16]}…)")
    lines.append("- **prompts**: " + ", ".join(f"{p['id']} v{p['version']} ({p['sha256'][:12]})" for p in card["prompts"].values()))
    if card.get("teacher_output"):
        t = card["teacher_output"]
        flags = ", ".join(f"{k} {v}" for k, v in t["flags"].items())
        lines.append(f"- **teacher calls**: {t['calls']} (retried {t['retried']}, dropped {t['dropped']}); flags: {flags}")
    lines += ["", "Policy for teacher output: see `empathy_utils/quality.py`.", ""]
    return "\n".join(lines)


def check_not_empty(sft: list[dict], dpo: list[dict], what: str) -> None:
    if not sft:
        raise StudyError(f"{what}: no SFT examples were built; use more rows (data.train_rows) or another method")
    if not dpo:
        raise StudyError(f"{what}: no DPO pairs were built; use more rows (data.train_rows) or another method")


