"""The DBT stage's results as its chapter shows them: the dataset card, the tables (data card, labeller
agreement, the four rows, the paper's Table 1 beside ours, one example), the results figure, and the
facts and sentences the chapter glues.

Built from :mod:`empathy_utils.presentation`'s formatters, so a share reads the same here as in every
other chapter. The stage (:mod:`.stage`) computes; this module only reads what it returns or wrote.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..artifacts import glue_key
from ..config import StudyConfig
from ..presentation import judge_accuracy_sentence, percent, winrate_cell
from .conversations import render
from .labels import DBT_STAGES, STAGE_TITLES
from .paper import PAPER_CITATION, PAPER_COLUMNS, PAPER_TABLE1
from .stage import LABELS, ROWS, DBTPaths


# ------------------------------------------------------------------------------------- the data
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
    """The data card (:func:`.stage.prepare_data`) as a two-column table: what was used, what was dropped."""
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
        ("labellers agree (same number of stages)", percent(a["same_count"]) + f" of {a['both_labelled']} both labelled"),
        ("Cohen's kappa per stage (mean of defined)", f"{sum(kappas) / len(kappas):.2f}" if kappas else "undefined"),
        ("pairs", p["pairs"]),
        ("dropped: ties / too few labelled / unparsed candidates",
         f"{p['dropped_ties']} / {p['dropped_too_few_labelled']} / {p['candidates_unparsed']}"),
        ("chosen reply written with the DBT prompt", f"{p['chosen_from_dbt_prompt']} of {p['pairs']}"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def agreement_table(card: dict) -> pd.DataFrame:
    """How often the two labellers give the same answer on each DBT stage, and Cohen's kappa."""
    a = card["agreement"]
    rows = []
    for s in DBT_STAGES:
        kappa = a[f"{s}_kappa"]
        rows.append({"stage": STAGE_TITLES[s], "same answer": percent(a[f"{s}_agreement"]),
                     "Cohen's kappa": "undefined" if kappa != kappa else f"{kappa:.2f}"})
    return pd.DataFrame(rows).set_index("stage")


def describe(cfg: StudyConfig) -> str:
    """The run's dbt settings in one line, printed above the data card."""
    d = cfg.dbt
    return (f"Source {d.source}; history up to {d.history_turns} turns; {d.candidates_per_prompt} candidate(s) per "
            f"prompt; labeller {d.labeller} (min margin {d.min_margin}); SFT lr {d.sft_learning_rate:g}, "
            f"{'max ' + str(d.sft_max_steps) + ' steps' if d.sft_max_steps > 0 else str(d.sft_epochs) + ' epoch(s)'}; "
            f"DPO lr {d.dpo_learning_rate:g}, beta {d.dpo_beta:g}, "
            f"{'max ' + str(d.dpo_max_steps) + ' steps' if d.dpo_max_steps > 0 else str(d.dpo_epochs) + ' epoch(s)'}; "
            f"LoRA from the lora section (r {cfg.lora.r}).")


# -------------------------------------------------------------------------------- the four rows
def rows_table(metrics: pd.DataFrame, wins: pd.DataFrame, labeller: str) -> pd.DataFrame:
    """The four rows as the book shows them: the paper's columns, our metric and the win rate."""
    w = wins.set_index("candidate")
    out = []
    for _, m in metrics.iterrows():
        r = m["row"]
        rate = "reference" if r == "base" else winrate_cell(
            *(w.loc[r, k] for k in ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses")))
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
        "dbt_labeller": cfg.dbt.labeller, "dbt_judge": report["judge"], "dbt_judge_statement": judge_statement(report),
        "dbt_judge_accuracy_statement": judge_accuracy_sentence(report["accuracy"]),
        "dbt_n_test": report["test_examples"], "dbt_n_train": card["examples"]["train"],
        "dbt_n_pairs": card["pairs"]["pairs"], "dbt_n_ties": card["pairs"]["dropped_ties"],
        "dbt_n_contexts": card["dpo_contexts"], "dbt_n_candidates": card["pairs"]["candidates"],
        "dbt_llm_parsed": card["llm_labeller"]["parsed"], "dbt_llm_calls": card["llm_labeller"]["calls"],
        "dbt_llm_parse_rate": card["llm_labeller"]["parse_rate"] if card["llm_labeller"]["parse_rate"] is not None else float("nan"),
        "dbt_agree_same_count": a["same_count"], "dbt_agree_same_count_text": percent(a["same_count"], 0),
        "dbt_agree_both": a["both_labelled"],
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


def judge_statement(report: dict) -> str:
    """What the judge's own record says about its validity (:func:`.stage.evaluate`'s ``validity``)."""
    return report["validity"].get("statement") or "Its agreement with human ratings was not measured here."


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
            f"({percent(metrics.loc['base', 'DBT adherence'])} for the base, {percent(metrics.loc['sft-dpo', 'DBT adherence'])} "
            "for +SFT+DPO).")


