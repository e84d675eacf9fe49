"""What a params file would cost, without calling anything: runs, datasets, trainings, teacher and
judge calls and their tokens.

Counts of rows come from the same selection code the runs use (so they need the research data for
LLMs-vs-Humans runs). Tokens are counted with the student's tokenizer when it is available offline
(the embedded model's otherwise): an API model's own tokenizer would count somewhat differently, so
token figures are estimates. Prompt tokens are exact for prompts whose text is known in advance
(P0, improving a human reply); where a prompt contains a reply the teacher has not written yet, that
reply is estimated by the length of the human reply to the same dialogue. Completion tokens are
given as expected (the prompts' ~28 words) and as the maximum the token limit allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from . import distillation as dist
from .config import DATA_REPLIERS, StudyConfig, grid_configs, variant_config
from .data import load_dialogues, subsample
from .prompts import BASE_PROMPT_ID, JUDGE_PROMPT_ID, improvement_prompt, load_prompt

EXPECTED_REPLY_WORDS = 28  # what every prompt asks for (book/methods.md, Building the distillation data)


@dataclass
class Tally:
    calls: int = 0
    prompt_tokens: int = 0
    completion_expected: int = 0
    completion_max: int = 0

    def add(self, calls: int, prompt_tokens: int, expected: int, maximum: int) -> None:
        self.calls += calls
        self.prompt_tokens += prompt_tokens
        self.completion_expected += expected
        self.completion_max += maximum


@dataclass
class RunPlan:
    run: str
    student: str
    teacher: str
    judge: str
    # Runs with the same key ask the teacher the same questions: the response cache answers all
    # but the first.
    teacher_key: str = ""
    datasets: list[dict] = field(default_factory=list)
    teacher_calls: Tally = field(default_factory=Tally)
    judge_calls: Tally = field(default_factory=Tally)
    generation_calls: Tally = field(default_factory=Tally)


class _Counter:
    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.per_word = None
        self._seen: dict[str, int] = {}

    def tokens(self, text: str) -> int:
        if text not in self._seen:  # grid runs render the same prompts again
            self._seen[text] = len(self.tok.encode(text, add_special_tokens=False))
        return self._seen[text]

    def reply_tokens(self, replies: list[str]) -> float:
        """Tokens per word of real replies, to turn the prompts' 28 words into tokens."""
        if self.per_word is None:
            words = sum(len(r.split()) for r in replies) or 1
            self.per_word = sum(self.tokens(r) for r in replies) / words
        return self.per_word


def _improvement_calls(strategy: str) -> list[str]:
    return list(dist.COMBINED_PARTS) if strategy == "combined" else [strategy]


def plan_run(cfg: StudyConfig, counter: _Counter, frame: pd.DataFrame) -> RunPlan:
    train = subsample(frame[frame["split"] == "train"], cfg.data.train_rows, cfg.run.seed)
    test = subsample(frame[frame["split"] == "test"], cfg.data.test_rows, cfg.run.seed)
    per_word = counter.reply_tokens(list(train["reference_reply"].head(200)))
    expected_reply = int(round(EXPECTED_REPLY_WORDS * per_word))
    p0 = load_prompt(BASE_PROMPT_ID)
    p0_tokens = {r["dialogue_id"]: counter.tokens(p0.render(context=r["situation"], utterance=r["utterance"])[0])
                 for _, r in pd.concat([train, test]).iterrows()}
    import json

    shared = {k: cfg.to_dict()[k] for k in ("data", "teacher", "dataset", "variants")}
    shared["seed"] = cfg.run.seed
    plan = RunPlan(cfg.run.name, cfg.model.name_or_path, f"{cfg.teacher.backend}:{cfg.teacher.model}",
                   f"{cfg.judge.backend}:{cfg.judge.model}", teacher_key=json.dumps(shared, sort_keys=True))
    seen_initial = False
    datasets = [("this run", cfg)] + [(v["name"], variant_config(cfg, v)) for v in cfg.variants.runs]
    for name, dcfg in datasets:
        d = dcfg.dataset
        before = Tally(**vars(plan.teacher_calls))
        if d.method == "direct":
            sft_n = dpo_n = 0
            for src in (dist.LLM_SOURCES if d.source_llm == "all" else [d.source_llm]):
                sft_mask, dpo_mask = dist.m1_masks(train, src, d.construction)
                sft_n += 2 * int(sft_mask.sum())
                dpo_n += int(dpo_mask.sum())
        else:
            if d.method == "improve-human":
                sft_mask, dpo_mask = dist.m2_masks(train)
            else:
                sft_mask, dpo_mask = dist.m3_masks(train, d.sft_share, cfg.run.seed)
                if not seen_initial:  # the teacher's first replies are cached and shared by every M3 dataset
                    plan.teacher_calls.add(len(train), sum(p0_tokens[i] for i in train["dialogue_id"]),
                                           expected_reply * len(train), dcfg.teacher.max_new_tokens * len(train))
                    seen_initial = True
            rows = train[sft_mask | dpo_mask]
            for strategy in _improvement_calls(d.strategy):
                prompt = improvement_prompt(strategy)
                for k in range(len(prompt.turns)):
                    history = k * expected_reply  # earlier answers sent back in a multi-turn chat
                    tokens = sum(counter.tokens(prompt.render(context=r["situation"], utterance=r["utterance"],
                                                              response=r["reference_reply"])[k]) + history
                                 for _, r in rows.iterrows())
                    plan.teacher_calls.add(len(rows), tokens, expected_reply * len(rows),
                                           dcfg.teacher.max_new_tokens * len(rows))
            # each SFT row: its human reply once, plus one improved reply per strategy in the set
            sft_n = int(sft_mask.sum() * (1 + len(_improvement_calls(d.strategy))))
            dpo_n = int(dpo_mask.sum() * len(_improvement_calls(d.strategy)))
        plan.datasets.append({
            "dataset": name, "method": d.method, "strategy": d.strategy if d.method != "direct" else "—",
            "source": d.source_llm if d.method == "direct" else "teacher", "construction": d.construction,
            "sft_examples": sft_n, "dpo_pairs": dpo_n,
            "teacher_calls": plan.teacher_calls.calls - before.calls,
        })
    # Generation: every student of the run, and each variant's students, answer every test dialogue.
    test_prompt_tokens = sum(p0_tokens[i] for i in test["dialogue_id"])
    generated = [s for s in cfg.generation.students if s not in DATA_REPLIERS]  # data replies cost nothing
    answering = len(generated) + len(cfg.variants.runs) * len(cfg.variants.students)
    plan.generation_calls.add(answering * len(test), answering * test_prompt_tokens,
                              answering * expected_reply * len(test), answering * cfg.generation.max_new_tokens * len(test))
    if "teacher" in cfg.generation.students:
        plan.teacher_calls.add(len(test), test_prompt_tokens, expected_reply * len(test),
                               cfg.generation.max_new_tokens * len(test))
    # Judging: each comparison, both orders, one short answer per call.
    judge_prompt = load_prompt(JUDGE_PROMPT_ID)
    skeleton = counter.tokens(judge_prompt.render(context="", utterance="", response_1="", response_2="")[0])
    per_pair = sum(skeleton + counter.tokens(r["situation"]) + counter.tokens(r["utterance"]) + 2 * expected_reply
                   for _, r in test.iterrows())
    comparisons = len(cfg.judge.comparisons) + len(cfg.variants.runs) * len(cfg.variants.students)
    plan.judge_calls.add(2 * comparisons * len(test), 2 * comparisons * per_pair, 2 * comparisons * len(test),
                         2 * comparisons * len(test) * 4)
    return plan


def plan_file(cfg: StudyConfig) -> list[RunPlan]:
    """A plan for every run of a params file (every grid point)."""
    from .models import load_tokenizer

    runs = grid_configs(cfg)
    frame = load_dialogues(cfg.data.source, cfg.data.data_dir or None)
    try:
        tokenizer = load_tokenizer(runs[0].model.name_or_path)
    except Exception:  # a hub id on a machine without the hub: count with the embedded model's tokenizer
        tokenizer = load_tokenizer("embedded:smollm2-135m-instruct")
    counter = _Counter(tokenizer)
    return [plan_run(run, counter, frame) for run in runs]


def distinct_teacher_calls(plans: list[RunPlan]) -> Tally:
    """Teacher work over all runs once the cache shares identical questions between runs."""
    total, seen = Tally(), set()
    for p in plans:
        if p.teacher_key not in seen:
            seen.add(p.teacher_key)
            total.add(p.teacher_calls.calls, p.teacher_calls.prompt_tokens, p.teacher_calls.completion_expected,
                      p.teacher_calls.completion_max)
    return total


def plan_tables(plans: list[RunPlan]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs: one row per run with its calls and tokens, datasets: one row per dataset per run)."""
    runs, datasets = [], []
    for p in plans:
        trainings = sum(1 + (d["dpo_pairs"] > 0) for d in p.datasets)
        runs.append({
            "run": p.run, "student": p.student, "teacher": p.teacher, "judge": p.judge,
            "datasets": len(p.datasets), "trainings (SFT + DPO)": trainings,
            "teacher calls": p.teacher_calls.calls, "teacher prompt tokens": p.teacher_calls.prompt_tokens,
            "teacher completion tokens (expected)": p.teacher_calls.completion_expected,
            "teacher completion tokens (max)": p.teacher_calls.completion_max,
            "student replies": p.generation_calls.calls,
            "judge calls": p.judge_calls.calls, "judge prompt tokens": p.judge_calls.prompt_tokens,
        })
        datasets += [{"run": p.run, **d} for d in p.datasets]
    return pd.DataFrame(runs), pd.DataFrame(datasets)
