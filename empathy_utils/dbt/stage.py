"""The DBT method as a stage of the study, in four steps the notebook ``09_dbt`` calls in turn:

1. :func:`prepare_data` — multi-turn examples (embedded conversations or ESConv), the SFT dataset,
   the teacher's candidates with and without the DBT prompt, both labellers, the preference pairs;
2. :func:`train_rows` — the paper's rows through the study's one training path
   (:mod:`empathy_utils.training`): SFT, DPO continuing SFT (+SFT+DPO), and DPO on the base (+DPO:
   the same ``train_dpo``, started from an untrained LoRA adapter, so its reference is the base model);
3. :func:`generate_replies` — base and trained rows answer the test conversations' last turns;
4. :func:`evaluate` — BLEU-4, ROUGE-L, Distinct-1/2 against the reference turn, DBT adherence by
   both labellers, and each row's win rate against the base by the run's judge.

Artifacts go to ``<run>/dbt/`` and figures to ``<run>/figures/dbt_*.png``. The steps return plain
results; the chapter's tables, figure and sentences are built in :mod:`.presenting`, which imports
this module's names. The stage imports it only inside two steps (the dataset card it writes beside the
data, the results figure it saves), so importing the stage never imports its presentation.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from ..artifacts import MethodPaths, RunPaths
from ..backends import Sampling
from ..config import StudyConfig
from ..data import save_jsonl
from ..errors import StudyError
from ..models import model_label, release_memory
from ..prompts import load_prompt
from .conversations import make_examples, sft_record, student_messages
from .labels import DBT_STAGES, LABEL_PROMPT_ID, LabelLog, adherence, agreement, llm_labels, rule_labels
from .preferences import CANDIDATE_PROMPTS, CandidateLog, build_pairs, generate_candidates

ROWS = ("base", "sft", "dpo", "sft-dpo")
LABELS = {"base": "base", "sft": "+SFT", "dpo": "+DPO", "sft-dpo": "+SFT+DPO"}
WHAT = {"base": "the untuned student", "sft": "LoRA SFT on the reference supporter turns",
        "dpo": "DPO on the DBT pairs, from the base (reference policy: the base)",
        "sft-dpo": "DPO on the DBT pairs, continuing the SFT adapter (reference: the SFT model)"}


class DBTPaths(MethodPaths):
    """``<run>/dbt``: the method folder's files, the teacher's candidates, and two training folders."""

    folder = "dbt"
    stage = "DBT"
    candidates = property(lambda s: s.root / "data" / "candidates.jsonl")
    # Each is laid out as a run folder, so the study's train_sft / train_dpo work on it unchanged.
    sft_then_dpo = property(lambda s: RunPaths(s.root / "train" / "sft-then-dpo"))
    dpo_on_base = property(lambda s: RunPaths(s.root / "train" / "dpo-on-base"))

    def examples(self, split: str) -> Path:
        return self.data / f"{split}.jsonl"

    def adapter(self, row: str) -> Path | None:
        return {"base": None, "sft": self.sft_then_dpo.sft_model, "dpo": self.dpo_on_base.dpo_model,
                "sft-dpo": self.sft_then_dpo.dpo_model}[row]


def _teacher(cfg: StudyConfig):
    from ..backends import make_backend
    from ..stages import response_cache_path

    return make_backend(cfg.teacher, cache_path=response_cache_path(), dtype=cfg.model.dtype)


def teacher_name(cfg: StudyConfig) -> str:
    from ..stages import teacher_label

    return teacher_label(cfg)


def _label_all(cfg: StudyConfig, teacher, items: list[dict], log: LabelLog) -> tuple[list, list, dict]:
    """Both labellers on ``items`` (context, utterance, reply, usable); None for unusable replies.
    Returns the LLM labels, the rule labels and their timings."""
    usable = [i for i, it in enumerate(items) if it.get("usable", True)]
    start = time.time()
    answers = llm_labels(teacher, [items[i] for i in usable], Sampling(cfg.dbt.label_max_new_tokens, 0.0,
                                                                       seed=cfg.run.seed), log)
    llm_seconds = time.time() - start
    start = time.time()
    rules = [rule_labels(items[i]["utterance"], items[i]["reply"]) for i in usable]
    rule_seconds = time.time() - start
    llm_out: list = [None] * len(items)
    rule_out: list = [None] * len(items)
    for i, a, r in zip(usable, answers, rules):
        llm_out[i], rule_out[i] = a, r
    return llm_out, rule_out, {"llm_seconds": llm_seconds, "rule_seconds": rule_seconds, "labelled": len(usable)}


def _primary(cfg: StudyConfig, llm: list, rules: list) -> tuple[list, list]:
    return (llm, rules) if cfg.dbt.labeller == "llm" else (rules, llm)


# ------------------------------------------------------------------------------------- 1. data
def prepare_data(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Examples, the SFT data, candidates, labels and DPO pairs; a card that counts every drop."""
    from datasets import Dataset

    from ..training import quiet_libraries
    from .conversations import load_splits
    from .presenting import card_markdown  # the card that travels with the datasets

    quiet_libraries()
    d, seed = cfg.dbt, cfg.run.seed
    paths = DBTPaths(run_dir)
    splits, source = load_splits(d, seed, cfg.data.data_dir or None)
    counts = {s: Counter() for s in splits}
    examples = {
        "train": make_examples(splits["train"], d.history_turns, d.train_examples_per_dialogue, seed,
                               counts=counts["train"]),
        "valid": make_examples(splits["valid"], d.history_turns, last_only=True, counts=counts["valid"]),
        "test": make_examples(splits["test"], d.history_turns, last_only=True, counts=counts["test"]),
    }
    for split, rows in examples.items():
        if not rows and split != "valid":
            raise StudyError(f"DBT: no {split} examples from {source['name']} ({dict(counts[split])}); "
                             f"raise dbt.{split}_dialogues or check the data")
        save_jsonl(rows, paths.examples(split))
    sft_paths = paths.sft_then_dpo
    Dataset.from_list([sft_record(e) for e in examples["train"]]).save_to_disk(str(sft_paths.sft_data))

    contexts = examples["train"]
    if 0 < d.dpo_contexts < len(contexts):
        keep = set(random.Random(seed).sample(range(len(contexts)), d.dpo_contexts))
        contexts = [e for i, e in enumerate(contexts) if i in keep]
    teacher = _teacher(cfg)
    cand_log = CandidateLog()
    start = time.time()
    candidates = generate_candidates(teacher, contexts, d.candidates_per_prompt, d.candidate_max_new_tokens,
                                     d.candidate_temperature, seed, cand_log, cfg.teacher.on_truncated)
    candidate_seconds = time.time() - start
    by_id = {e["example_id"]: e for e in contexts}
    items = [{"context": by_id[c["example_id"]]["earlier"], "utterance": by_id[c["example_id"]]["utterance"],
              "reply": c["text"], "usable": c["usable"]} for c in candidates]
    label_log = LabelLog()
    llm, rules, timing = _label_all(cfg, teacher, items, label_log)
    primary, second = _primary(cfg, llm, rules)
    pairs, pair_counts = build_pairs(contexts, candidates, primary, d.min_margin)
    save_jsonl([{**c, "llm_labels": a, "rule_labels": r} for c, a, r in zip(candidates, llm, rules)], paths.candidates)
    stats = getattr(teacher, "stats", None)
    del teacher  # free the local teacher before training loads the student
    release_memory()
    card = {
        "source": source,
        "examples": {s: len(v) for s, v in examples.items()},
        "example_counts": {s: dict(c) for s, c in counts.items()},
        "history_turns": d.history_turns,
        "student_model": model_label(cfg.model.name_or_path),
        "teacher": teacher_name(cfg),
        "prompts": {kind: load_prompt(pid).record() for kind, pid in
                    {**CANDIDATE_PROMPTS, "labeller": LABEL_PROMPT_ID}.items()},
        "dpo_contexts": len(contexts),
        "candidates": {**cand_log.to_json(), "per_prompt": d.candidates_per_prompt, "seconds": round(candidate_seconds, 1)},
        "labeller": d.labeller,
        "llm_labeller": {**label_log.to_json(), "backend": teacher_name(cfg), "seconds": round(timing["llm_seconds"], 2),
                         "unparsed_examples": label_log.examples_unparsed},
        "rule_labeller": {"labelled": timing["labelled"], "seconds": round(timing["rule_seconds"], 4)},
        "agreement": agreement(llm, rules),
        "pairs": pair_counts,
        "cache": {"new_calls": stats.new_calls, "answered_from_cache": stats.from_cache} if stats else None,
    }
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.card.write_text(json.dumps(card, indent=2))
    if not pairs:
        raise StudyError(f"DBT: no preference pair survived ({pair_counts}); see {paths.card}. With the "
                         f"'{d.labeller}' labeller every context was a tie or unlabelled: try dbt.labeller, more "
                         "dbt.candidates_per_prompt or another teacher")
    tcfg = training_config(cfg)
    for target in (sft_paths, paths.dpo_on_base):
        Dataset.from_list(pairs).save_to_disk(str(target.dpo_data))
        (target.data / "README.md").write_text(card_markdown(card))
        # Each training folder is complete for `accelerate launch -m empathy_utils.training sft|dpo
        # --params <folder>/params.yaml --run-dir <folder>`; the stage then reuses what it trained.
        target.params.write_text(yaml.safe_dump(tcfg.to_dict(), sort_keys=False))
    save_untrained_adapter(tcfg, paths.dpo_on_base.sft_model)
    return card


# ---------------------------------------------------------------------------------- 2. training
def training_config(cfg: StudyConfig) -> StudyConfig:
    """The run's config with the dbt section's training settings in place of the sft and dpo sections
    (model, LoRA and seed stay the run's), so the study's own trainers run this stage's rows."""
    raw = cfg.to_dict()
    d = cfg.dbt
    raw["sft"].update(learning_rate=d.sft_learning_rate, epochs=d.sft_epochs, max_steps=d.sft_max_steps,
                      batch_size=d.sft_batch_size, max_length=d.max_length)
    raw["dpo"].update(learning_rate=d.dpo_learning_rate, epochs=d.dpo_epochs, max_steps=d.dpo_max_steps,
                      batch_size=d.dpo_batch_size, max_length=d.max_length, beta=d.dpo_beta)
    for section, steps in (("sft", d.sft_max_steps), ("dpo", d.dpo_max_steps)):
        if steps > 0:  # a short row still logs its loss (the run's logging_steps may exceed its steps)
            raw[section]["logging_steps"] = min(raw[section]["logging_steps"], steps)
    return StudyConfig.from_dict(raw, source="dbt training settings")


def save_untrained_adapter(cfg: StudyConfig, folder: Path) -> Path:
    """A fresh LoRA adapter (B = 0: the model is exactly the base) with the run's LoRA settings, seeded.
    DPO continuing it is DPO on the base, and TRL's frozen copy of it — the reference — is the base."""
    import torch
    from peft import get_peft_model

    from ..models import load_model
    from ..training import lora_config

    if (folder / "adapter_config.json").exists():
        return folder
    torch.manual_seed(cfg.run.seed)
    model = get_peft_model(load_model(cfg.model.name_or_path), lora_config(cfg))
    model.save_pretrained(str(folder))
    return folder


def train_rows(cfg: StudyConfig, run_dir: str | Path) -> pd.DataFrame:
    """+SFT, +SFT+DPO and +DPO with the study's train_sft / train_dpo; a summary row per trained row."""
    from ..training import train_dpo, train_sft

    paths = DBTPaths(run_dir)
    tcfg = training_config(cfg)
    summaries = {"sft": train_sft(tcfg, paths.sft_then_dpo.root)}
    summaries["sft-dpo"] = train_dpo(tcfg, paths.sft_then_dpo.root)
    save_untrained_adapter(tcfg, paths.dpo_on_base.sft_model)
    summaries["dpo"] = train_dpo(tcfg, paths.dpo_on_base.root)
    paths.results.mkdir(parents=True, exist_ok=True)
    (paths.results / "training.json").write_text(json.dumps(summaries, indent=2))
    return training_frame(summaries)


def training_frame(summaries: dict) -> pd.DataFrame:
    def num(v):
        return "—" if v is None else f"{v:.3f}"

    rows = [{"row": LABELS[r], "what": WHAT[r], "examples or pairs": s.get("examples", s.get("pairs")),
             "steps": s["steps"], "seconds": s["seconds"], "first → last loss": f"{num(s['first_loss'])} → {num(s['last_loss'])}",
             "reused": "yes (same settings and data)" if s.get("reused") else "no"}
            for r, s in ((r, summaries[r]) for r in ("sft", "dpo", "sft-dpo"))]
    return pd.DataFrame(rows).set_index("row")


# ----------------------------------------------------------------------------------- 3. replies
def generate_replies(cfg: StudyConfig, run_dir: str | Path) -> pd.DataFrame:
    """Each row answers the test examples (the student's chat, batched, greedy unless configured)."""
    from ..backends import LocalBackend
    from ..quality import clean_reply
    from ..stages import reply_summary

    paths = DBTPaths(run_dir)
    test = paths.read(paths.examples("test"))
    convs = [student_messages(e) for e in test]
    sampling = Sampling(cfg.generation.max_new_tokens, cfg.generation.temperature, seed=cfg.run.seed)
    summary = []
    for row in ROWS:
        adapter = paths.adapter(row)
        if adapter is not None and not (adapter / "adapter_config.json").exists():
            raise StudyError(f"{adapter}: no trained {LABELS[row]} adapter; run train_rows first")
        backend = LocalBackend(cfg.model.name_or_path, adapter=adapter, batch_size=cfg.generation.batch_size,
                               progress=False, dtype=cfg.model.dtype)
        answers = backend.chat(convs, sampling)
        rows = [{"example_id": e["example_id"], "row": row, "reply": clean_reply(a.text), "raw": a.text,
                 "finish_reason": a.finish_reason, "tokens": a.completion_tokens} for e, a in zip(test, answers)]
        save_jsonl(rows, paths.generation(row))
        summary.append(reply_summary(LABELS[row], rows))
        del backend
        release_memory()
    return pd.DataFrame(summary).set_index("student").rename_axis("row")


# --------------------------------------------------------------------------------- 4. evaluation
def evaluate(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Reference metrics, DBT adherence (both labellers) and win rates against the base."""
    from ..judging import Comparison, JudgingOutput, judge_comparisons, make_judge, read_judge_accuracy
    from ..plotting import save_figure
    from ..reference_metrics import reference_metrics
    from .presenting import results_figure  # saved with the results, as judging saves its win-rate figure

    paths = DBTPaths(run_dir)
    test = paths.read(paths.examples("test"))
    replies = {row: [r["reply"] for r in paths.read(paths.generation(row))] for row in ROWS}
    references = [e["reference"] for e in test]
    teacher = _teacher(cfg)
    metrics, labels, log = [], {}, LabelLog()
    for row in ROWS:
        items = [{"context": e["earlier"], "utterance": e["utterance"], "reply": r, "usable": bool(r.strip())}
                 for e, r in zip(test, replies[row])]
        llm, rules, _ = _label_all(cfg, teacher, items, log)
        labels[row] = {"llm": llm, "rules": rules}
        primary, second = _primary(cfg, llm, rules)
        ap, a2 = adherence(primary), adherence(second)
        metrics.append({"row": row, **reference_metrics(replies[row], references),
                        "DBT adherence": ap["adherence"], "DBT adherence (second labeller)": a2["adherence"],
                        "labelled": ap["labelled"], "unlabelled": ap["unparsed"],
                        **{f"stage {s}": ap[s] for s in DBT_STAGES}})
    del teacher  # the labeller's model, before the judge loads its own
    release_memory()
    judge = judge or make_judge(cfg, run_dir)
    # The study's one way of judging a set of comparisons (judging.judge_comparisons).
    comparisons = [Comparison(candidate=row, opponent="base", label=f"{LABELS[row]} vs base", items=[
        {"id": e["example_id"], "context": e["earlier"], "utterance": e["utterance"], "response_a": a, "response_b": b}
        for e, a, b in zip(test, replies[row], replies["base"])]) for row in ROWS[1:]]
    judged = judge_comparisons(
        comparisons, judge,
        JudgingOutput(judgment_file=paths.judgment,
                      results_dir=paths.results, figure_file=paths.figures / "dbt_winrates.png",
                      figure_title="DBT rows against the base student"),
        resamples=cfg.dbt.bootstrap_resamples, confidence=cfg.judge.confidence, seed=cfg.run.seed)
    metrics = pd.DataFrame(metrics)
    wins = judged.results
    all_llm = [lab for row in ROWS for lab in labels[row]["llm"]]
    all_rules = [lab for row in ROWS for lab in labels[row]["rules"]]
    test_agreement = agreement(all_llm, all_rules)
    paths.results.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(paths.results / "metrics.csv", index=False)
    (paths.results / "evaluation.json").write_text(json.dumps(
        {"metrics": metrics.to_dict("records"), "winrates": wins.to_dict("records"), "test_label_log": log.to_json(),
         "test_agreement": test_agreement, "judge": judge.name, "labeller": cfg.dbt.labeller}, indent=2, default=str))
    fig = results_figure(metrics, wins, judge.name, cfg.dbt.labeller, len(test))
    save_figure(fig, paths.figures / "dbt_rows.png")
    plt.close(fig)
    return {"metrics": metrics, "winrates": wins, "judge": judge.name, "figure": fig, "test_examples": len(test),
            "test_label_log": log.to_json(), "test_agreement": test_agreement,
            "validity": getattr(judge, "validity", None) or {}, "accuracy": read_judge_accuracy(run_dir, judge.name)}


def run_dbt(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """All four steps (tests, scripts and benchmarks; the notebook calls them one by one)."""
    card = prepare_data(cfg, run_dir)
    training = train_rows(cfg, run_dir)
    replies = generate_replies(cfg, run_dir)
    report = evaluate(cfg, run_dir, judge=judge)
    return {"card": card, "training": training, "replies": replies, **report}


__all__ = ["ROWS", "LABELS", "WHAT", "DBTPaths", "prepare_data", "train_rows", "generate_replies", "evaluate",
           "run_dbt", "training_config", "training_frame", "save_untrained_adapter", "teacher_name"]
