"""The DBT method as a stage of the study, in four steps the notebook ``09_dbt`` calls in turn:

1. :func:`prepare_data` — multi-turn examples (embedded conversations or ESConv), the SFT dataset,
   the teacher's candidates with and without the DBT prompt, both labellers, the preference pairs;
2. :func:`train_rows` — the paper's rows through the study's one training path
   (:mod:`empathy_utils.training`): SFT, DPO continuing SFT (+SFT+DPO), and DPO on the base (+DPO:
   the same ``train_dpo``, started from an untrained LoRA adapter, so its reference is the base model);
3. :func:`generate_replies` — base and trained rows answer the test conversations' last turns;
4. :func:`evaluate` — BLEU-4, ROUGE-L, Distinct-1/2 against the reference turn, DBT adherence by
   both labellers, and each row's win rate against the base by the run's judge.

Artifacts go to ``<run>/dbt/`` and figures to ``<run>/figures/dbt_*.png``.
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

from ..artifacts import MethodPaths, RunPaths, glue_key
from ..backends import Sampling
from ..config import StudyConfig
from ..data import save_jsonl
from ..errors import StudyError
from ..models import model_label
from ..prompts import load_prompt
from .conversations import make_examples, render, sft_record, student_messages
from .labels import DBT_STAGES, LABEL_PROMPT_ID, STAGE_TITLES, LabelLog, adherence, agreement, llm_labels, rule_labels
from .paper import PAPER_CITATION, PAPER_COLUMNS, PAPER_TABLE1
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


def card_markdown(card: dict) -> str:
    """The dataset card that travels with the SFT and DPO datasets."""
    p, c = card["pairs"], card["candidates"]
    prompts = ", ".join(f"{k}={v['id']} v{v['version']}" for k, v in card["prompts"].items())
    return "\n".join([
        "# DBT preference data (Son & So's method, re-implemented)", "",
        f"- Source: {card['source']['name']}; split: {card['source']['split']}; examples {card['examples']}.",
        f"- SFT: the reference supporter turn after up to {card['history_turns']} turns of history.",
        f"- Teacher: {card['teacher']}; prompts {prompts}.",
        f"- Candidates: {card['dpo_contexts']} contexts x 2 prompts x {c['per_prompt']}; unusable dropped {c['dropped_unusable']}.",
        f"- Labeller deciding the pairs: {card['labeller']}; LLM labeller parsed {card['llm_labeller']['parsed']} of "
        f"{card['llm_labeller']['calls']} answers.",
        f"- Pairs {p['pairs']}; ties dropped {p['dropped_ties']}; contexts with fewer than two labelled candidates "
        f"{p['dropped_too_few_labelled']}; unparsed candidates {p['candidates_unparsed']}.", ""])


def card_table(card: dict) -> pd.DataFrame:
    p, c, llm = card["pairs"], card["candidates"], card["llm_labeller"]
    a = card["agreement"]
    kappas = [a[f"{s}_kappa"] for s in DBT_STAGES if a[f"{s}_kappa"] == a[f"{s}_kappa"]]
    rows = [
        ("data", f"{card['source']['name']} — {card['source']['split']}"),
        ("dialogues (train / valid / test)", " / ".join(str(card["source"]["dialogues"][s]) for s in ("train", "valid", "test"))),
        ("examples (train / valid / test)", " / ".join(str(card["examples"][s]) for s in ("train", "valid", "test"))),
        ("dialogues without a supporter reply (dropped)",
         sum(card["example_counts"][s].get("no_supporter_turn", 0) for s in card["example_counts"])),
        ("teacher", card["teacher"]),
        ("candidates (DBT prompt + plain prompt)", f"{card['dpo_contexts']} contexts × 2 × {c['per_prompt']} = "
                                                   f"{p['candidates']}; unusable {c['dropped_unusable']}"),
        ("LLM labeller answers parsed", f"{llm['parsed']} of {llm['calls']} (unparsed {llm['unparsed']})"),
        ("labeller deciding chosen / rejected", card["labeller"]),
        ("labellers agree (same number of stages)", _pct(a["same_count"]) + f" of {a['both_labelled']} both labelled"),
        ("Cohen's kappa per stage (mean of defined)", f"{sum(kappas) / len(kappas):.2f}" if kappas else "undefined"),
        ("pairs", p["pairs"]),
        ("dropped: ties / too few labelled / unparsed candidates",
         f"{p['dropped_ties']} / {p['dropped_too_few_labelled']} / {p['candidates_unparsed']}"),
        ("chosen reply written with the DBT prompt", f"{p['chosen_from_dbt_prompt']} of {p['pairs']}"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def _pct(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f} %"


def agreement_table(card: dict) -> pd.DataFrame:
    a = card["agreement"]
    rows = []
    for s in DBT_STAGES:
        kappa = a[f"{s}_kappa"]
        rows.append({"stage": STAGE_TITLES[s], "same answer": _pct(a[f"{s}_agreement"]),
                     "Cohen's kappa": "undefined" if kappa != kappa else f"{kappa:.2f}"})
    return pd.DataFrame(rows).set_index("stage")


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
                               progress=False)
        answers = backend.chat(convs, sampling)
        rows = [{"example_id": e["example_id"], "row": row, "reply": clean_reply(a.text), "raw": a.text,
                 "finish_reason": a.finish_reason, "tokens": a.completion_tokens} for e, a in zip(test, answers)]
        save_jsonl(rows, paths.generation(row))
        summary.append(reply_summary(LABELS[row], rows))
        del backend
    return pd.DataFrame(summary).set_index("student").rename_axis("row")


# --------------------------------------------------------------------------------- 4. evaluation
def evaluate(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Reference metrics, DBT adherence (both labellers) and win rates against the base."""
    from ..judging import Comparison, JudgingOutput, judge_comparisons, make_judge, read_judge_accuracy
    from ..presentation import judge_accuracy_sentence
    from ..reference_metrics import reference_metrics

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
    from ..plotting import save_figure

    save_figure(fig, paths.figures / "dbt_rows.png")
    plt.close(fig)
    validity = getattr(judge, "validity", None) or {}
    return {"metrics": metrics, "winrates": wins, "judge": judge.name, "figure": fig, "test_examples": len(test),
            "test_label_log": log.to_json(), "test_agreement": test_agreement,
            "judge_statement": validity.get("statement") or "Its agreement with human ratings was not measured here.",
            "judge_accuracy_statement": judge_accuracy_sentence(read_judge_accuracy(run_dir, judge.name))}


def rows_table(metrics: pd.DataFrame, wins: pd.DataFrame, labeller: str) -> pd.DataFrame:
    """The four rows as the book shows them: the paper's columns, our metric and the win rate."""
    w = wins.set_index("candidate")
    out = []
    for _, m in metrics.iterrows():
        r = m["row"]
        rate = "reference" if r == "base" else (
            f"{_pct(w.loc[r, 'win_rate'])} ({_pct(w.loc[r, 'ci_low'])} – {_pct(w.loc[r, 'ci_high'])}); "
            f"{w.loc[r, 'wins']}/{w.loc[r, 'ties']}/{w.loc[r, 'losses']}")
        out.append({"row": LABELS[r], "BLEU-4": round(m["BLEU-4"], 2), "ROUGE-L": round(m["ROUGE-L"], 2),
                    "Distinct-1": round(m["Distinct-1"], 2), "Distinct-2": round(m["Distinct-2"], 2),
                    f"DBT adherence ({labeller}) ↑": round(m["DBT adherence"], 3),
                    "DBT adherence (other labeller) ↑": round(m["DBT adherence (second labeller)"], 3),
                    "win rate vs base (CI); W/T/L": rate})
    return pd.DataFrame(out).set_index("row")


def paper_table() -> pd.DataFrame:
    """Son & So's Table 1 as they printed it: their models, their metric (direction: lower looks better)."""
    rows = [{"model (theirs)": model, "row": row, **dict(zip(PAPER_COLUMNS, values))}
            for model, by_row in PAPER_TABLE1.items() for row, values in by_row.items()]
    return pd.DataFrame(rows).set_index(["model (theirs)", "row"])


def side_by_side(metrics: pd.DataFrame, student: str) -> pd.DataFrame:
    """Our four rows beside the paper's: same row names; B-4 and R-L comparable in kind (not in data
    or model); their Dist (n unstated) beside our Distinct-2; their unnamed metric beside our adherence."""
    rows = []
    for _, m in metrics.iterrows():
        rows.append({"whose": f"this run: {student}", "row": LABELS[m["row"]], "B-4": round(m["BLEU-4"], 2),
                     "R-L": round(m["ROUGE-L"], 2), "Dist (ours: Distinct-2)": round(m["Distinct-2"], 2),
                     "DBT metric": f"{m['DBT adherence']:.3f} (adherence, ↑)"})
    for model, by_row in PAPER_TABLE1.items():
        for row, (b4, rl, dist, metric) in by_row.items():
            rows.append({"whose": f"{PAPER_CITATION}: {model} (their numbers)", "row": row, "B-4": b4, "R-L": rl,
                         "Dist (ours: Distinct-2)": dist, "DBT metric": f"{metric:.4f} (theirs, ↓)"})
    return pd.DataFrame(rows).set_index(["whose", "row"])


def results_figure(metrics: pd.DataFrame, wins: pd.DataFrame, judge_name: str, labeller: str, n: int) -> plt.Figure:
    """Left: the reference metrics per row. Middle: the share of replies meeting each DBT stage.
    Right: each trained row's win rate against the base with its bootstrap CI."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = [LABELS[r] for r in metrics["row"]]
    x = np.arange(len(names))
    for i, col in enumerate(("BLEU-4", "ROUGE-L", "Distinct-2")):
        axes[0].bar(x + (i - 1) * 0.27, metrics[col], width=0.27, label=col)
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("score (0–100)")
    axes[0].set_title("against the reference turn", fontsize=10)
    axes[0].legend(fontsize=8)
    for i, s in enumerate(DBT_STAGES):
        axes[1].bar(x + (i - 1.5) * 0.2, metrics[f"stage {s}"], width=0.2, label=STAGE_TITLES[s])
    axes[1].set_xticks(x, names)
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("share of replies meeting the stage")
    axes[1].set_title(f"DBT stages ({labeller} labeller)", fontsize=10)
    axes[1].legend(fontsize=7)
    rate = wins["win_rate"].to_numpy(dtype=float)
    low = np.clip(rate - wins["ci_low"].to_numpy(dtype=float), 0, None)
    high = np.clip(wins["ci_high"].to_numpy(dtype=float) - rate, 0, None)
    y = np.arange(len(wins))[::-1]
    axes[2].errorbar(rate, y, xerr=[np.nan_to_num(low), np.nan_to_num(high)], fmt="o", capsize=5)
    axes[2].axvline(0.5, color="grey", linestyle="--", linewidth=1)
    axes[2].set_yticks(y, [f"{LABELS[c]} vs base" for c in wins["candidate"]])
    axes[2].set_xlim(0, 1)
    axes[2].set_xlabel("win rate (ties ½), bootstrap CI")
    import textwrap

    axes[2].set_title("\n".join(textwrap.wrap(f"judge: {judge_name}", 48)), fontsize=8)
    fig.suptitle(f"The DBT method's four rows on {n} test conversations", fontsize=11)
    fig.tight_layout()
    return fig


def example_table(cfg: StudyConfig, run_dir: str | Path, index: int = 0) -> pd.DataFrame:
    """One test conversation and each row's reply — only for the project's own corpus (research data
    is never shown)."""
    if cfg.dbt.source != "embedded":
        return pd.DataFrame([{"who": "—", "text": "ESConv is research data: its conversations are not shown."}]
                            ).set_index("who")
    paths = DBTPaths(run_dir)
    test = paths.read(paths.examples("test"))
    e = test[min(index, len(test) - 1)]
    rows = [{"who": "conversation so far", "text": render(e["history"])},
            {"who": "reference (the corpus's supporter turn)", "text": e["reference"]}]
    for row in ROWS:
        reply = paths.read(paths.generation(row))[min(index, len(test) - 1)]["reply"]
        rows.append({"who": f"{LABELS[row]} reply", "text": reply})
    return pd.DataFrame(rows).set_index("who")


def glue_facts(cfg: StudyConfig, card: dict, report: dict) -> dict:
    """The scalars the DBT chapter cites (glued by the notebook)."""
    metrics, wins = report["metrics"].set_index("row"), report["winrates"].set_index("candidate")
    a = card["agreement"]
    kappas = [a[f"{s}_kappa"] for s in DBT_STAGES if a[f"{s}_kappa"] == a[f"{s}_kappa"]]
    facts = {
        "dbt_student": card["student_model"], "dbt_teacher": card["teacher"], "dbt_data": card["source"]["name"],
        "dbt_labeller": cfg.dbt.labeller, "dbt_judge": report["judge"], "dbt_judge_statement": report["judge_statement"],
        "dbt_judge_accuracy_statement": report["judge_accuracy_statement"],
        "dbt_n_test": report["test_examples"], "dbt_n_train": card["examples"]["train"],
        "dbt_n_pairs": card["pairs"]["pairs"], "dbt_n_ties": card["pairs"]["dropped_ties"],
        "dbt_n_contexts": card["dpo_contexts"], "dbt_n_candidates": card["pairs"]["candidates"],
        "dbt_llm_parsed": card["llm_labeller"]["parsed"], "dbt_llm_calls": card["llm_labeller"]["calls"],
        "dbt_llm_parse_rate": card["llm_labeller"]["parse_rate"] if card["llm_labeller"]["parse_rate"] is not None else float("nan"),
        "dbt_agree_same_count": a["same_count"], "dbt_agree_both": a["both_labelled"],
        "dbt_mean_kappa": sum(kappas) / len(kappas) if kappas else float("nan"),
        "dbt_chosen_from_dbt_prompt": card["pairs"]["chosen_from_dbt_prompt"],
        "dbt_confidence_pct": int(round(100 * cfg.judge.confidence)),
    }
    for row in ROWS:
        for col, name in (("BLEU-4", "bleu4"), ("ROUGE-L", "rougel"), ("Distinct-2", "distinct2"),
                          ("DBT adherence", "adherence"), ("DBT adherence (second labeller)", "adherence_other")):
            facts[f"dbt_{glue_key(row)}_{name}"] = float(metrics.loc[row, col])
    for row in ROWS[1:]:
        for f in ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses"):
            facts[f"dbt_{glue_key(row)}_vs_base_{f}"] = wins.loc[row, f]
    facts["dbt_conclusion"] = conclusion(metrics, wins)
    return facts


def conclusion(metrics: pd.DataFrame, wins: pd.DataFrame) -> str:
    """What this run's numbers allow one to say about +SFT+DPO against the base, in words."""
    r = wins.loc["sft-dpo"] if "sft-dpo" in wins.index else None
    if r is None or r["win_rate"] != r["win_rate"]:
        return "The judge gave no readable verdict on +SFT+DPO against the base, so this run says nothing about it."
    lo, hi = r["ci_low"], r["ci_high"]
    up = metrics.loc["sft-dpo", "DBT adherence"] - metrics.loc["base", "DBT adherence"]
    judged = ("the judge preferred +SFT+DPO to the base" if lo > 0.5 else
              "the judge preferred the base to +SFT+DPO" if hi < 0.5 else
              "the judge's interval for +SFT+DPO against the base includes an even split")
    moved = "raised" if up > 0 else "lowered" if up < 0 else "left unchanged"
    return (f"In this run {judged}, and the SFT→DPO training {moved} the share of DBT stages the labeller found "
            f"({_pct(metrics.loc['base', 'DBT adherence'])} for the base, {_pct(metrics.loc['sft-dpo', 'DBT adherence'])} "
            "for +SFT+DPO).")


def describe(cfg: StudyConfig) -> str:
    d = cfg.dbt
    return (f"Source {d.source}; history up to {d.history_turns} turns; {d.candidates_per_prompt} candidate(s) per "
            f"prompt; labeller {d.labeller} (min margin {d.min_margin}); SFT lr {d.sft_learning_rate:g}, "
            f"{'max ' + str(d.sft_max_steps) + ' steps' if d.sft_max_steps > 0 else str(d.sft_epochs) + ' epoch(s)'}; "
            f"DPO lr {d.dpo_learning_rate:g}, beta {d.dpo_beta:g}, "
            f"{'max ' + str(d.dpo_max_steps) + ' steps' if d.dpo_max_steps > 0 else str(d.dpo_epochs) + ' epoch(s)'}; "
            f"LoRA from the lora section (r {cfg.lora.r}).")


def run_dbt(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """All four steps (tests, scripts and benchmarks; the notebook calls them one by one)."""
    card = prepare_data(cfg, run_dir)
    training = train_rows(cfg, run_dir)
    replies = generate_replies(cfg, run_dir)
    report = evaluate(cfg, run_dir, judge=judge)
    return {"card": card, "training": training, "replies": replies, **report}


__all__ = ["ROWS", "LABELS", "DBTPaths", "prepare_data", "train_rows", "generate_replies", "evaluate", "run_dbt",
           "card_table", "agreement_table", "rows_table", "paper_table", "side_by_side", "example_table",
           "glue_facts", "training_config", "save_untrained_adapter", "describe"]

# The names notebooks use through ``empathy_utils`` (eu.dbt_data(cfg, run_dir) …).
dbt_data = prepare_data
dbt_train = train_rows
dbt_generate = generate_replies
dbt_evaluate = evaluate
dbt_card_table = card_table
dbt_agreement_table = agreement_table
dbt_rows_table = rows_table
dbt_paper_table = paper_table
dbt_side_by_side = side_by_side
dbt_example = example_table
dbt_glue_facts = glue_facts
dbt_describe = describe
