"""Results as the book shows them: formatted numbers, tables, and the sentences the pages glue.

The stages compute and return plain data (DataFrames, dicts, dataclasses); this module is the one
place that turns such data into text. One formatter per kind of number (:func:`percent`,
:func:`interval`, :func:`plain`), one sentence per statistical situation (:func:`interval_situation`
says which situation a confidence interval is in; the sentence functions choose their words from it).
A method's own tables and sentences (``pride/presenting.py``, ``judge_validation/presenting.py``) are
built from these, so a number or an interval reads the same in every chapter.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# ----------------------------------------------------------------------------------- numbers
DASH = "—"


def is_missing(x) -> bool:
    """None, NaN, or a value that is no number: shown as a dash, glued as NaN."""
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def percent(x, digits: int = 1) -> str:
    """A share as a percentage ("61.5 %"); a missing value (None, NaN) as a dash."""
    return DASH if is_missing(x) else f"{100 * float(x):.{digits}f} %"


def interval(low, high, digits: int = 1) -> str:
    """A confidence interval as "47.7 % – 68.6 %"; a missing bound as one dash."""
    if is_missing(low) or is_missing(high):
        return DASH
    return f"{percent(low, digits)} – {percent(high, digits)}"


def interval_cell(low, high, digits: int = 1) -> str:
    """A confidence interval for a table cell, "47.7–68.6 %", with nowhere a line may break (a no-break
    space before "%", a word joiner after the dash): a narrow column wrapped "47.7 % – 68.6 %" over
    three lines; a missing bound as a dash."""
    if is_missing(low) or is_missing(high):
        return DASH
    return f"{100 * float(low):.{digits}f}–\u2060{100 * float(high):.{digits}f}\u00a0%"


def percent_cell(x, digits: int = 1) -> str:
    """:func:`percent` for a table cell: "61.5 %" with a no-break space, so it never wraps before "%"."""
    return percent(x, digits).replace(" ", "\u00a0")


def winrate_cell(rate, low, high, wins, ties, losses, digits: int = 1) -> str:
    """A win rate, its interval and its W/T/L counts in one table cell, "39.1 % (23.4–68.6 %); 11/3/18",
    breakable only between the three parts (a narrow column had split "54.7 %" from its "%"); a
    missing rate as a dash beside the counts."""
    counts = f"{wins}/{ties}/{losses}"
    if is_missing(rate):
        return f"{DASH}; {counts}"
    return f"{percent_cell(rate, digits)} ({interval_cell(low, high, digits)}); {counts}"


def winrate_texts(row) -> dict[str, str]:
    """A comparison's rates as the book's sentences print them, for glue: ``win_rate_text``
    ("29.7 %"), ``paper_win_rate_text`` and ``ci_text`` ("15.6 % – 45.3 %"). The chapters glue these
    rather than format numbers themselves (a glue format spec wrote "29.7%" beside the package's
    "95 % CI" in one sentence)."""
    texts = {"win_rate_text": percent(row.get("win_rate")), "ci_text": interval(row.get("ci_low"), row.get("ci_high"))}
    if "paper_win_rate" in row:
        texts["paper_win_rate_text"] = percent(row.get("paper_win_rate"))
    return texts


def plain(value, nan=float("nan")):
    """Plain Python values (NumPy scalars unwrapped, dicts and lists walked) for myst-nb glue and
    JSON; NaN becomes ``nan`` (glue keeps NaN; JSON files pass ``nan=None``)."""
    if isinstance(value, dict):
        return {k: plain(v, nan) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, nan) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return nan if math.isnan(float(value)) else float(value)
    return value


# ------------------------------------------------------------------------ statistical situations
def interval_situation(low, high, reference: float = 0.5) -> str:
    """Where a confidence interval lies with respect to ``reference``: "above", "below",
    "includes" (the data cannot tell it from the reference) or "unknown" (not estimated)."""
    if is_missing(low) or is_missing(high):
        return "unknown"
    if low > reference:
        return "above"
    if high < reference:
        return "below"
    return "includes"


def short_judge_name(judge: str) -> str:
    """A judge's short name for sentences and figure titles ("the likelihood judge (SmolLM2-135M-Instruct)",
    "the writer-style judge"); its full description (what it scores, and how) is printed once, where the
    page presents the judge."""
    head = str(judge).split(" (", 1)[0].strip()
    if not head:
        return "an unnamed judge"
    if head.endswith(" wins"):  # a baseline ("longer reply wins")
        return f'the baseline "{head}"'
    words = head.split()
    served = [i for i, w in enumerate(words) if ":" in w]
    if served:  # "<kind> local:<model> ...": the kind and the model it runs on
        i = served[0]
        kind = " ".join(words[:i]) or "model"
        model = words[i].split(":", 1)[1]
        return f"the {kind} judge ({model})"
    return f"the {head}" if "judge" in head.split() or head.split()[0] in ("learned", "cross-encoder") \
        else f"the {head} judge"


def baselines_sentence(accuracy) -> str:
    """After a judge that beats chance: whether its interval also lies above the two simple rules measured on
    the same pairs. A judge that does not clear one has not shown it reads more than that rule does, and the
    reader should know before taking a win rate as a verdict on empathy."""
    rules = [(accuracy.longer_wins, "the longer reply wins", "on every pair", "the longer reply"),
             (accuracy.llm_wins, "the LLM's reply wins", "on the pairs that set an LLM's reply against a person's",
              "the reply an LLM wrote")]
    measured = [rule for rule in rules if rule[0] is not None]
    if not measured:
        return ""
    short = [rule for rule in measured if accuracy.ci_low <= rule[0]]
    if not short:
        return (" Its interval also lies above " + " and ".join(f"\u201c{name}\u201d ({percent(value)} {where})"
                                                      for value, name, where, _ in measured) + ".")
    return (" But its interval does not lie above " + " or ".join(f"\u201c{name}\u201d ({percent(value)} {where})"
                                                         for value, name, where, _ in short)
            + ": it has not been shown to do better than preferring " + " or ".join(prefer for *_, prefer in short)
            + ", so its win rates show what these raters favoured, not that the judge reads more in a reply "
              "than that.")


def judge_accuracy_sentence(accuracy, named: bool = True) -> str:
    """Beside every set of win rates: how often the judge agreed with people on the report set
    (``judging.JudgeAccuracy``, or None when nothing was measured), and whether that licenses
    reading its win rates as findings. ``named=False`` when the sentence before already names it."""
    if accuracy is None:
        return ("Warning: this judge's agreement with human ratings was not measured, so the win rates below are "
                "the opinion of a judge of unknown accuracy, not findings.")
    where = ("in this run's validation" if accuracy.source == "run" else
             "by the project's own validation, shipped with the code" + (f" ({accuracy.detail})" if accuracy.detail
                                                                       else ""))
    who = f"The judge ({accuracy.name})" if named else "It"
    measured = (f"{who} agreed with people on {percent(accuracy.accuracy)} of the "
                f"{accuracy.set}-set pairs (95 % CI {interval(accuracy.ci_low, accuracy.ci_high)}), measured {where}.")
    situation = interval_situation(accuracy.ci_low, accuracy.ci_high)
    if situation == "above":
        return (measured + " Its interval lies above 50 %, so its verdicts carry information about people's "
                "preferences." + baselines_sentence(accuracy))
    if situation == "below":
        return (measured + " Warning: its interval lies below 50 %: it disagrees with people more often than a coin "
                "would, so the win rates below are not findings.")
    return (measured + " Warning: its interval includes 50 %: it has not been shown to do better than a coin, so the "
            "win rates below are not findings.")


def judge_is_trustworthy(accuracy) -> bool:
    return accuracy is not None and interval_situation(accuracy.ci_low, accuracy.ci_high) == "above"


def winrate_sentence(row, accuracy) -> str:
    """One comparison's win rate in words: a finding only when the judge was measured above chance
    and the win rate's own interval excludes 50 %."""
    label = row["comparison"]
    if is_missing(row["win_rate"]):
        return f"{label}: no pair could be judged."
    rate = f"{label}: {percent(row['win_rate'])} (CI {interval(row['ci_low'], row['ci_high'])})"
    if not judge_is_trustworthy(accuracy):
        return f"{rate} — warning: by a judge not shown to beat chance, so not a finding."
    situation = interval_situation(row["ci_low"], row["ci_high"])
    if situation == "above":
        return f"{rate}: the first-named is preferred, and the interval excludes 50 %."
    if situation == "below":
        return f"{rate}: the second-named is preferred, and the interval excludes 50 %."
    return f"{rate}: the interval includes 50 %, so no difference is shown."


def winrate_sentences(results: pd.DataFrame, accuracy) -> str:
    """The judge's accuracy, then each comparison's sentence: what a page prints beside its win rates."""
    lines = [judge_accuracy_sentence(accuracy)]
    lines += [winrate_sentence(r, accuracy) for _, r in results.iterrows()]
    return "\n".join(lines)


def lc_statement(row) -> str:
    """The length-controlled win rate of one comparison as a phrase, or why it was not estimated."""
    rate = row.get("lc_win_rate")
    if is_missing(rate):
        return row.get("lc_note") or "not estimated"
    return f"{percent(rate)} (bootstrap CI {interval(row['lc_ci_low'], row['lc_ci_high'])})"


def position_statement(row) -> str:
    """How far the judge agreed with itself across the two orders of a pair, for one comparison
    (a results row; None: nothing judged)."""
    if row is None:
        return "No comparison was judged."
    value = row["position_consistency"]
    if is_missing(value):
        return ("This judge scores each reply on its own, so the order in which two replies are shown cannot "
                "change its verdict.")
    return (f"This judge sees each pair in both orders; on the {row['comparison']} pairs the two orders agreed "
            f"{percent(value, 0)} of the time, and every disagreement became a tie. A judge that mostly follows "
            "position rather than content produces mostly ties, and a win rate near 50 % then says more about the "
            "judge than about the students.")


def overlap_situation(first, second) -> str:
    """Two estimates with intervals (rows with ci_low / ci_high): "first below", "first above" or
    "overlap" (their intervals overlap, so they are not ranked)."""
    if first["ci_high"] < second["ci_low"]:
        return "first below"
    if second["ci_high"] < first["ci_low"]:
        return "first above"
    return "overlap"


# -------------------------------------------------------------------------------------- tables
def winrate_table(results: pd.DataFrame) -> pd.DataFrame:
    """The win-rate table as the book shows it (percentages, CI, counts, the paper's definition, the
    length-controlled rate); the caller names the judge in the caption (one judge per table)."""
    out = pd.DataFrame({
        "comparison": results["comparison"],
        "win rate (ties ½)": results["win_rate"].map(percent_cell),
        f"{round(100 * results['confidence'].iloc[0])} % CI": [
            interval_cell(lo, hi) for lo, hi in zip(results["ci_low"], results["ci_high"])],
        "paper's rate (wins ÷ all)": results["paper_win_rate"].map(percent_cell),
        "length-controlled": results["lc_win_rate"].map(percent_cell) if "lc_win_rate" in results else DASH,
        # no-break spaces: a narrow column wrapped "12 / 10 / 10" over five lines
        "W / T / L": [f"{w}\u00a0/\u00a0{t}\u00a0/\u00a0{n}" for w, t, n in zip(results["wins"], results["ties"], results["losses"])],
        "unparsed": results["unparsed"],
        "orders agree": ["order-free" if is_missing(x) else percent_cell(x) for x in results["position_consistency"]],
    })
    return out.set_index("comparison")


def emotion_table(per_emotion: pd.DataFrame) -> pd.DataFrame:
    """Per-emotion win rates (ties ½) with the number of dialogues, one column per comparison."""
    if per_emotion is None or not len(per_emotion):
        return pd.DataFrame()
    cells = [f"{percent_cell(w, 0)} (n={n})" if not is_missing(w) else f"{DASH} (n={n})"
             for w, n in zip(per_emotion["win_rate"], per_emotion["n"])]
    table = per_emotion.assign(cell=cells).pivot(index="emotion", columns="comparison", values="cell")
    table.columns.name = None
    return table[list(dict.fromkeys(per_emotion["comparison"]))]


def training_table(summary: dict) -> pd.DataFrame:
    """A training summary (from train_sft / train_dpo) as a two-column table."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else v

    # nested records (prefix_sharing's counts) stay in train_log.json; their sentence is a row of its own
    return pd.DataFrame([(k.replace("_", " "), fmt(v)) for k, v in summary.items()
                         if v is not None and not isinstance(v, (dict, list))],
                        columns=["", "value"]).set_index("")


def card_table(card: dict) -> pd.DataFrame:
    """A dataset card (stages.build_datasets) as a two-column table."""
    rows = [
        ("method", card["method"]),
        ("strategy", card["strategy"] or DASH),
        ("construction", card["construction"]),
        ("teacher", card["teacher"] or "none (replies come from the data)"),
        ("source data", f"{card['source_data']['name']} ({card['source_data']['train_rows_used']} train dialogues used)"),
        ("SFT examples", card["counts"]["sft_examples"]),
        ("DPO pairs", card["counts"]["dpo_pairs"]),
        ("test dialogues", card["counts"]["test_dialogues"]),
    ]
    if card.get("teacher_output"):
        t = card["teacher_output"]
        rows.append(("teacher calls", f"{t['calls']} (retried {t['retried']}, rows dropped {t['dropped']})"))
        rows.append(("teacher output flags", ", ".join(f"{k}: {v}" for k, v in t["flags"].items())))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


STUDENT_LABEL_SHORT = {"sft": "SFT", "dpo": "SFT→DPO"}


def variants_table(table: pd.DataFrame, candidate: str) -> pd.DataFrame:
    """The grid as the book shows it: one row per dataset, its size and its student's win rate."""
    out = pd.DataFrame({
        "method": table["method"], "strategy": table["strategy"], "construction": table["construction"],
        "replies from": table["source"], "SFT examples": table["sft_examples"], "DPO pairs": table["dpo_pairs"],
    })
    for student in ("sft", "dpo"):
        if f"{student}_win_rate" in table:
            label = STUDENT_LABEL_SHORT[student]
            out[f"{label} win rate"] = table[f"{student}_win_rate"].map(percent_cell)
            out[f"{label} CI"] = [interval_cell(a, b) for a, b in zip(table[f"{student}_ci_low"], table[f"{student}_ci_high"])]
    return out.set_axis(table["variant"].to_list()).rename_axis("dataset")


# ------------------------------------------------------------------------------ glued values
def judge_glue_values(report: dict) -> dict:
    """Values the judge notebook glues besides glue_winrates: the length-controlled win rates, the
    judge's validity and how it was chosen, its report-set accuracy, and a sentence on position bias."""
    results, validity = report["results"], report["validity"]
    values = {"judge_kind": validity["kind"], "judge_validity": validity["statement"],
              "judge_how_chosen": validity.get("how_chosen", "passed in by the caller"),
              "judge_validated": "yes" if validity["validated"] else "no",
              "judge_accuracy_statement": judge_accuracy_sentence(report.get("accuracy"))}
    for _, r in results.iterrows():
        prefix = f"{r['candidate']}_vs_{r['opponent']}_"
        values.update({prefix + k: r[k] for k in ("lc_win_rate", "lc_ci_low", "lc_ci_high", "length_slope")})
        values[prefix + "lc_statement"] = lc_statement(r)
    values["position_statement"] = position_statement(results.iloc[0] if len(results) else None)
    return values


def validation_glue_values(result: dict) -> dict:
    """What the validation notebook glues (the same keys whether or not anything was measured)."""
    report = result["report"]
    sel = report.get("selected") or {}
    values = {"validation_status": report["status"], "validation_summary": result["validation_summary"],
              "selected_judge": result["selected_judge"], "adversarial_summary": result["adversarial_summary"]}
    if report["status"] == "ok":
        full = report["full_set"]
        values.update(validation_pairs=report["data"]["test_pairs"], validation_dialogues=report["data"]["test_dialogues"],
                      longer_wins_accuracy=report["baselines"]["longer_wins"]["accuracy"],
                      llm_wins_accuracy=report["baselines"]["llm_wins"]["accuracy"],
                      full_set_longer_wins=full["longer_wins"], full_set_llm_wins=full["llm_wins"],
                      full_set_unequal_pairs=full["unequal_length_pairs"], full_set_hl_pairs=full["human_vs_llm_pairs"])
        if sel:
            values.update(selected_accuracy=sel["accuracy"], selected_ci_low=sel["ci_low"], selected_ci_high=sel["ci_high"])
    return values


def validation_displays(report: dict, table: pd.DataFrame, adversarial: pd.DataFrame | None, figure) -> dict:
    """What the validation page shows, whether or not anything was measured (the same glue keys
    either way). HTML, not Markdown: pasted into another page, a Markdown output would show as text."""
    from IPython.display import HTML

    from html import escape

    from .judge_validation import judge_labels, packaged_labels

    packaged = report["status"] != "ok" and report.get("packaged")
    if report["status"] == "ok":
        caption, labels = ("Candidate judges and baselines against human ratings (LLMs-vs-Humans test split)",
                           judge_labels(report))
    elif packaged:  # measured, but not in this run: the caption must not say "nothing measured"
        caption = ("Data-free candidate judges and baselines against human ratings (LLMs-vs-Humans test split), "
                   f"measured by the project, not in this run (the packaged measurement of {packaged.get('date', '?')}, "
                   f"commit {str(packaged.get('git_commit', '?'))[:7]})")
        labels = packaged_labels(packaged)
    else:
        caption, labels = "Candidate judges: nothing measured in this run", {}
    styled = table.style.set_caption(caption)
    items = "".join(f"<li><strong>{escape(label)}</strong>: {escape(name)}</li>"
                    for name, label in labels.items() if label != name)
    if items:  # the short row labels, in full under the table
        styled = HTML(styled.to_html() + f"<p>The judges in the table:</p><ul>{items}</ul>")
    return {
        "table_display": styled,
        "figure_display": figure if figure is not None else HTML(
            "<p><em>No figure: nothing was measured in this run.</em></p>"),
        "adversarial_display": (adversarial.style.set_caption(
            "Flip rate of injected instructions (flips / verdicts that could flip), by judge and defense")
            if adversarial is not None else HTML("<p><em>No table: no injected-instruction check was run.</em></p>")),
    }
