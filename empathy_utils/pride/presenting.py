"""PRIDE's results as its chapter shows them: the data card, the training and ablation tables,
whether the teacher is a ceiling, and the facts and sentences the chapter glues.

Built from :mod:`empathy_utils.presentation`'s formatters and statistical situations, so a number
or an interval reads the same here as in the core study's chapters.
"""

from __future__ import annotations

import pandas as pd

from ..artifacts import glue_key
from ..presentation import (
    DASH,
    is_missing,
    judge_accuracy_sentence,
    overlap_situation,
    percent,
    position_statement,
    short_judge_name,
    winrate_cell,
    winrate_texts,
)


def pride_card_table(card: dict) -> pd.DataFrame:
    """The PRIDE data card (pride.stage.prepare_data) as a two-column table."""
    t = card["teacher_log"]["train"]
    flags = ", ".join(f"{k} {v}" for k, v in t["flags"].items() if v) or "none"
    rows = [
        ("data", f"{card['source']['name']} ({card['train_examples']} train, {card['test_examples']} test examples)"),
        ("privileged information", ", ".join(card["pi_fields"])),
        ("teacher", card["teacher"]),
        ("student", f"{card['student_model']}, prompt {card['student_prompt']} (dialogue only)"),
        ("teacher calls (train)", f"{t['calls']} (retried {t['retried']})"),
        ("usable teacher replies (train)", f"{card['train_usable']} of {card['train_examples']}"),
        ("teacher reply flags (train)", flags),
        ("teacher answers from the cache", f"{card['cache']['answered_from_cache']} (new calls {card['cache']['new_calls']})"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def pride_training_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per PRIDE-chapter student: trainer, steps, precision, losses, the module's gate and attention."""
    from .stage import LABELS

    def num(v, fmt="{:.3f}"):
        return "—" if v is None else fmt.format(v)

    rows = []
    for s in summaries:
        attention = s.get("attention") or {}
        top = max(((k, v) for k, v in attention.items() if k != "null"), key=lambda kv: kv[1], default=None)
        rows.append({
            "student": LABELS[s["variant"]],
            "trainer": s["trainer"] + (" — reused: same settings and data as before" if s.get("reused") else ""),
            "steps": s["steps"],
            "seconds": s["seconds"],
            # what ran (pride.bf16); a log from before the setting existed trained in fp32
            "precision": "bf16 (mixed)" if s.get("mixed_precision") == "bf16" else "fp32",
            "first → last loss": f"{num(s['first_loss'])} → {num(s['last_loss'])}",
            "mean CE / RKL / MMD²": " / ".join(num(s.get(k)) for k in ("mean_ce", "mean_rkl", "mean_mmd")),
            "gate |tanh g|": num(s.get("gate_strength"), "{:.4f}"),
            "most-attended PI source": "—" if top is None else f"{top[0]} ({top[1]:.2f}; null {attention.get('null', 0):.2f})",
        })
    return pd.DataFrame(rows).set_index("student")


def pride_ablation_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per student: what it is, and its win rate (CI; W/T/L) against each opponent."""
    from .stage import LABELS, WHAT

    def cell(r):
        if is_missing(r["win_rate"]):
            return DASH
        return winrate_cell(r["win_rate"], r["ci_low"], r["ci_high"], r["wins"], r["ties"], r["losses"])

    confidence = round(100 * results["confidence"].iloc[0])
    table = {}
    for _, r in results.iterrows():
        row = table.setdefault(r["candidate"], {"student": LABELS[r["candidate"]], "what it is": WHAT[r["candidate"]]})
        row[f"vs {LABELS[r['opponent']]}: win rate ({confidence} % CI); W/T/L"] = cell(r)
    return pd.DataFrame(list(table.values())).set_index("student").fillna("—")


def teacher_role(results: pd.DataFrame) -> str:
    """Whether the teacher's replies bound the students from above, by this run's judge: a teacher
    that loses to students distilled from it is no ceiling, and the book should not call it one.
    Overlapping confidence intervals are said to be overlapping, not ranked."""
    def row(candidate):
        r = results[(results["candidate"] == candidate) & (results["opponent"] == "base")]
        return r.iloc[0] if len(r) and not is_missing(r["win_rate"].iloc[0]) else None

    teacher, pride = row("teacher"), row("pride")
    if teacher is None or pride is None:
        return "This run did not judge both the teacher and PRIDE against the base student."
    situation = overlap_situation(teacher, pride)
    if situation == "first below":
        return (f"That is below PRIDE's {percent(pride['win_rate'])}, and their intervals do not overlap: by this "
                "judge the student outscores the teacher it learned from, so the teacher's own replies are no "
                "ceiling here.")
    if situation == "first above":
        return (f"PRIDE's {percent(pride['win_rate'])} is below it, and their intervals do not overlap: the "
                "teacher's replies remain the ceiling that distilling this teacher can hope to approach.")
    return (f"PRIDE's {percent(pride['win_rate'])} and the teacher's intervals overlap: at this size the judge "
            "cannot tell the student from the teacher it learned from.")


UNMEASURED_JUDGE = ("Its agreement with human ratings was not measured in this run: read its win rates as the opinion "
                    "of a judge of unknown validity.")


def pride_glue_facts(card: dict, report: dict, training: list[dict] | None = None) -> dict:
    """The scalars and sentences the book's PRIDE chapter cites (glued by the notebook), from the
    data card and what pride.stage.judge_students returned."""
    results = report["results"]
    validity = report.get("validity") or {}
    pride_vs_base = results[(results["candidate"] == "pride") & (results["opponent"] == "base")]
    facts = {
        "judge_name": short_judge_name(report["judge"]),
        "judge_description": report["judge"],
        "judge_statement": validity.get("statement") or UNMEASURED_JUDGE,
        "judge_accuracy_statement": judge_accuracy_sentence(report.get("accuracy")),
        "judge_consistency": position_statement(pride_vs_base.iloc[0] if len(pride_vs_base) else None),
        "n_test": report["test_dialogues"],
        "n_train": card["train_usable"],
        "teacher_name": card["teacher"],
        "student_model": card["student_model"],
        "pi_fields": ", ".join(card["pi_fields"]),
        "data_name": card["source"]["name"],
        "confidence_pct": int(round(100 * results["confidence"].iloc[0])),
        "teacher_role": teacher_role(results),
    }
    nan = float("nan")
    for candidate in {*results["candidate"], "pride", "teacher"}:
        for opponent in ("base", "teacher"):  # a comparison the run did not make is glued as NaN
            prefix = f"{glue_key(candidate)}_vs_{glue_key(opponent)}_"
            for f in ("win_rate", "ci_low", "ci_high", "position_consistency"):
                facts[prefix + f] = nan
            facts.update({prefix + k: v for k, v in winrate_texts({}).items()})
    for _, r in results.iterrows():
        prefix = f"{glue_key(r['candidate'])}_vs_{glue_key(r['opponent'])}_"
        for f in ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "unparsed", "pairs"):
            facts[prefix + f] = r[f]
        facts.update({prefix + k: v for k, v in winrate_texts(r).items()})
        consistency = r["position_consistency"]
        facts[prefix + "position_consistency"] = nan if is_missing(consistency) else consistency
    for s in training or []:
        facts[f"{glue_key(s['variant'])}_steps"] = s["steps"]
        facts[f"{glue_key(s['variant'])}_seconds"] = s["seconds"]
    return facts


def _joined(items: list) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def ablation_overlap_sentence(overlap: dict | None) -> str:
    """pride.stage.ablation_overlap in words."""
    if overlap is None:
        return "This run trained no ablation beside PRIDE."
    names = [s.removeprefix("PRIDE ") for s in overlap["students"]]
    text = (f"Word for word, the students {_joined(names)} wrote {_joined(overlap['same_as_pride'])} of their "
            f"{overlap['replies']} test replies exactly as PRIDE did; an ablation that leaves most replies unchanged "
            "cannot move the win rate much.")
    terms = overlap.get("weighted_terms")
    if terms:
        text += (f" In PRIDE's training the weighted terms averaged {terms['CE']:.3f} (CE), "
                 f"{terms['reverse KL']:.3f} (reverse KL) and {terms['MMD²']:.3f} (MMD²).")
    return text


def pride_reply_glue(facts: dict) -> dict:
    """pride.stage.reply_facts as the chapter glues it (the overlap as a sentence)."""
    return {**facts, "ablation_overlap": ablation_overlap_sentence(facts.get("ablation_overlap"))}


def pride_method(cfg) -> str:
    """The run's PRIDE settings in one paragraph (the notebook prints it above the results)."""
    import textwrap

    p = cfg.pride
    return textwrap.fill(
        f"Loss = {p.lambda_ce:g}·CE + {p.lambda_rkl:g}·RKL(T={p.rkl_temperature:g}) + {p.lambda_mmd:g}·MMD² "
        f"(Gaussian kernel, bandwidths {p.mmd_bandwidths} × {'median distance' if p.mmd_bandwidth_mode == 'median' else '1'}, "
        f"{p.mmd_estimator} estimator, features at layer {p.mmd_layer}); multi-source attention after decoder layer "
        f"{p.fusion_layer} ({p.fusion_heads} heads, width {p.fusion_dim}, PI encoded by {p.pi_encoder}, pooled by "
        f"{p.pi_pooling}), PI dropout {p.pi_dropout:g}; LoRA rank from the lora section; lr {p.learning_rate:g} "
        f"(module {p.module_learning_rate or p.learning_rate:g}), batch {p.batch_size}, "
        f"{'max ' + str(p.max_steps) + ' steps' if p.max_steps > 0 else str(p.epochs) + ' epoch(s)'}.", 110)
