"""The conclusions chapter: one sentence per question of the study, chosen by the confidence
intervals of the runs that answer it (a clear win, cannot be told apart, a clear loss), naming the
run and its judge; a question no run of the book answers gets a sentence naming the run that would.

:func:`load_results` reads the result files the stages wrote (nothing is recomputed); the sentence
functions take that plain data, so the choice of words is tested on synthetic results
(tests/test_conclusions.py). The conclusions notebook glues :func:`answers`' values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .artifacts import RunPaths, read_manifest
from .presentation import interval, interval_situation, judge_accuracy_sentence, judge_is_trustworthy, percent
from .presentation import short_judge_name as judge_name

# What a missing question needs: the stage, and the profile whose run has it.
MISSING = {
    "core": ("judge", "default"),
    "variants": ("variants", "study"),
    "pride": ("pride", "pride"),
    "dbt": ("dbt", "dbt"),
}
TARGETED_NOTE = "naive"  # the untargeted prompt set; every other strategy is a targeted one


def missing_sentence(part: str) -> str:
    stage, profile = MISSING[part]
    return (f"Not answered in this book: none of its runs has the {stage} stage. The run of the {profile} "
            f"profile answers it: empathy-study run --profile {profile}, then build the book with it.")


# --------------------------------------------------------------------------------- the results
@dataclass
class RunResult:
    """One run's answer to a question: its name, its table, its judge and that judge's accuracy."""

    run: str
    table: pd.DataFrame
    judge: str
    accuracy: object = None  # judging.JudgeAccuracy or None (not measured)
    extra: dict = field(default_factory=dict)


@dataclass
class StudyResults:
    core: RunResult | None = None        # the judge stage: students against the base student
    core_other_data: list[RunResult] = field(default_factory=list)  # the same on other data (LLMs-vs-Humans)
    variants: list[RunResult] = field(default_factory=list)  # the method x strategy grids
    pride: RunResult | None = None
    dbt: RunResult | None = None
    runs: list[str] = field(default_factory=list)


def _stages_done(run_dir: Path) -> set[str]:
    return {s for s, r in read_manifest(run_dir).get("stages", {}).items() if r.get("status") == "ok"}


def _accuracy(run_dir: Path, judge: str):
    from .judging import read_judge_accuracy

    return read_judge_accuracy(run_dir, judge)


def load_results(run_dirs: list[str | Path]) -> StudyResults:
    """The result files of the book's runs: for each question, the first run (in the book's order)
    whose stage wrote it; every grid of variants."""
    out, judged = StudyResults(), []
    for run_dir in map(Path, run_dirs):
        manifest = read_manifest(run_dir)
        name = manifest.get("params", {}).get("run", {}).get("name") or run_dir.name
        out.runs.append(name)
        done = _stages_done(run_dir)
        results = RunPaths(run_dir).results
        if "judge" in done and (results / "winrates.json").exists():
            table = pd.DataFrame(json.loads((results / "winrates.json").read_text()))
            judge = str(table["judge"].iloc[0])
            judged.append(RunResult(name, table, judge, _accuracy(run_dir, judge),
                                    {"setting": _setting(run_dir, table), "method_run": bool(done & {"pride", "dbt"})}))
        if "variants" in done and (results / "variants.csv").exists():
            table = pd.read_csv(results / "variants.csv")
            judge = str(table["judge"].iloc[0])
            out.variants.append(RunResult(name, table, judge, _accuracy(run_dir, judge)))
        pride = run_dir / "pride" / "results" / "winrates.json"
        if out.pride is None and "pride" in done and pride.exists():
            table = pd.DataFrame(json.loads(pride.read_text()))
            judge = str(table["judge"].iloc[0])
            out.pride = RunResult(name, table, judge, _accuracy(run_dir, judge))
        dbt = run_dir / "dbt" / "results" / "evaluation.json"
        if out.dbt is None and "dbt" in done and dbt.exists():
            report = json.loads(dbt.read_text())
            out.dbt = RunResult(name, pd.DataFrame(report["winrates"]), report["judge"],
                                _accuracy(run_dir, report["judge"]), {"metrics": pd.DataFrame(report["metrics"])})
    # The core question, from the first judged run on each data source; the PRIDE and DBT runs' own
    # core stages are shrunk smoke runs, so they answer it only when no other run does.
    plain = [r for r in judged if not r.extra["method_run"]] or judged
    sources: set = set()
    for r in plain:
        if r.extra["setting"]["data"] not in sources:
            sources.add(r.extra["setting"]["data"])
            if out.core is None:
                out.core = r
            else:
                out.core_other_data.append(r)
    return out


DATA_NAMES = {"embedded-corpus": "the embedded corpus", "llms-vs-humans": "LLMs-vs-Humans"}


def _setting(run_dir: Path, table: pd.DataFrame) -> dict:
    params = read_manifest(run_dir).get("params", {})
    card_file = RunPaths(run_dir).card
    counts = json.loads(card_file.read_text()).get("counts", {}) if card_file.exists() else {}
    from .models import model_label

    row = table.iloc[0]
    teacher, student = params.get("teacher", {}), params.get("model", {}).get("name_or_path")
    teacher_name = model_label(teacher["model"]) if teacher.get("model") else "none"
    if teacher.get("backend") == "local":
        teacher_name = f"the local teacher ({teacher_name}, run on this machine)"
    if params.get("dataset", {}).get("method") == "direct":
        teacher_name = "the LLM replies the data holds (no teacher run here)"
    return {"student": model_label(student) if student else None, "teacher": teacher_name,
            "data": DATA_NAMES.get(params.get("data", {}).get("source"), params.get("data", {}).get("source")),
            "seed": params.get("run", {}).get("seed"),
            "sft_examples": counts.get("sft_examples"), "dpo_pairs": counts.get("dpo_pairs"),
            "n_test": int(row["wins"] + row["ties"] + row["losses"])}


# ------------------------------------------------------------------------------- the sentences
def versus(low, high) -> str:
    """A win rate's interval against an even split: "win", "tie" (cannot be told apart), "loss"."""
    return {"above": "win", "below": "loss", "includes": "tie"}.get(interval_situation(low, high), "unknown")


def ahead(a_low, a_high, b_low, b_high) -> str:
    """Two win rates against the same opponent: "win" when a's interval lies wholly above b's,
    "loss" when wholly below, "tie" when they overlap (a conservative reading: no difference shown)."""
    if any(pd.isna(x) for x in (a_low, a_high, b_low, b_high)):
        return "unknown"
    if a_low > b_high:
        return "win"
    if a_high < b_low:
        return "loss"
    return "tie"


VERSUS_WORDS = {"win": "a clear win: the interval lies above 50 %",
                "tie": "the two cannot be told apart: the interval includes 50 %",
                "loss": "a clear loss: the interval lies below 50 %",
                "unknown": "not estimated (no pair could be judged)"}
AHEAD_WORDS = {"win": "is clearly ahead of", "tie": "cannot be told apart from", "loss": "is clearly behind",
               "unknown": "cannot be compared with"}


def _rate(rate, low, high) -> str:
    return f"{percent(rate)} (CI {interval(low, high)})"


def _caveat(accuracy) -> str:
    return "" if judge_is_trustworthy(accuracy) else (
        " Its judge has not been shown to beat chance against human ratings, so this is not a finding.")


def _row(table: pd.DataFrame, candidate: str, opponent: str):
    hit = table[(table["candidate"] == candidate) & (table["opponent"] == opponent)]
    return None if hit.empty else hit.iloc[0]


def pair_answers(results: StudyResults, candidate: str, opponent: str, who: str, whom: str) -> str:
    """The pair's answer in the core run, and in each run on other data."""
    return " ".join(pair_answer(r, candidate, opponent, who, whom)
                    for r in [results.core, *results.core_other_data])


def pair_answer(result: RunResult | None, candidate: str, opponent: str, who: str, whom: str) -> str:
    """Does ``candidate`` beat ``opponent`` in the run that judged them?"""
    if result is None:
        return missing_sentence("core")
    row = _row(result.table, candidate, opponent)
    if row is None:
        return (f"The run {result.run} did not judge {who} against {whom}; add [{candidate}, {opponent}] to "
                "judge.comparisons to answer it.")
    verdict = versus(row["ci_low"], row["ci_high"])
    return (f"In the run {result.run}, judged by {judge_name(result.judge)}, {who} against {whom} wins "
            f"{_rate(row['win_rate'], row['ci_low'], row['ci_high'])}: {VERSUS_WORDS[verdict]}."
            + _caveat(result.accuracy))


def _score_column(table: pd.DataFrame) -> str:
    return "dpo" if "dpo_win_rate" in table.columns else "sft"


def _label(row) -> str:
    strategy = row.get("strategy")
    return f"{row['method']} with the {strategy} prompt set" if isinstance(strategy, str) and strategy not in ("—", "") \
        else f"{row['method']} ({row.get('construction', '')})".replace(" ()", "")


def targeted_answer(grids: list[RunResult]) -> str:
    """Do targeted prompt sets beat the naive one? Per grid and method: the naive set's win rate,
    the targeted sets' mean and its difference in points, and how many targeted sets are clearly
    ahead of or behind the naive one by their intervals."""
    if not grids:
        return missing_sentence("variants")
    sentences = []
    for grid in grids:
        t, s = grid.table, _score_column(grid.table)
        for method in sorted(t["method"].unique()):
            rows = t[t["method"] == method]
            naive = rows[rows["strategy"] == TARGETED_NOTE]
            targeted = rows[(rows["strategy"] != TARGETED_NOTE) & (rows["strategy"] != "—")]
            if naive.empty or targeted.empty:
                continue
            n = naive.iloc[0]
            verdicts = [ahead(r[f"{s}_ci_low"], r[f"{s}_ci_high"], n[f"{s}_ci_low"], n[f"{s}_ci_high"])
                        for _, r in targeted.iterrows()]
            diff = 100 * (targeted[f"{s}_win_rate"].mean() - n[f"{s}_win_rate"])
            sentences.append(
                f"{method} in the run {grid.run} (judged by {judge_name(grid.judge)}): the naive prompt set's student wins "
                f"{_rate(n[f'{s}_win_rate'], n[f'{s}_ci_low'], n[f'{s}_ci_high'])} against the base student, and "
                f"the {len(targeted)} targeted sets {percent(targeted[f'{s}_win_rate'].mean())} on average "
                f"({diff:+.1f} points); by their intervals, {verdicts.count('win')} targeted set(s) are clearly "
                f"ahead of the naive one, {verdicts.count('loss')} clearly behind, and {verdicts.count('tie')} "
                f"cannot be told apart from it." + _caveat(grid.accuracy))
    if not sentences:
        return ("No grid of this book has both the naive prompt set and a targeted one for the same method; "
                "the study profile's run has them (empathy-study run --profile study).")
    return " ".join(sentences)


def best_answer(grids: list[RunResult]) -> str:
    """Which prompt set distils best, and is it clearly ahead of the others?"""
    if not grids:
        return missing_sentence("variants")
    sentences = []
    for grid in grids:
        t, s = grid.table.reset_index(drop=True), _score_column(grid.table)
        best_i = t[f"{s}_win_rate"].idxmax()
        best = t.loc[best_i]
        others = t.drop(index=best_i)
        verdicts = [ahead(best[f"{s}_ci_low"], best[f"{s}_ci_high"], r[f"{s}_ci_low"], r[f"{s}_ci_high"])
                    for _, r in others.iterrows()]
        settled = ("it is clearly ahead of every other" if verdicts and all(v == "win" for v in verdicts) else
                   f"it is clearly ahead of {verdicts.count('win')} of the other {len(verdicts)} and cannot be told "
                   "apart from the rest, so the ranking is not settled")
        sentences.append(f"In the run {grid.run} (judged by {judge_name(grid.judge)}), {_label(best)} distils best: its student "
                         f"wins {_rate(best[f'{s}_win_rate'], best[f'{s}_ci_low'], best[f'{s}_ci_high'])} against "
                         f"the base student; {settled}." + _caveat(grid.accuracy))
    return " ".join(sentences)


def method_answer(grids: list[RunResult]) -> str:
    """Which method (M1, M2, M3) distils best: each method's best dataset, the best two compared."""
    if not grids:
        return missing_sentence("variants")
    sentences = []
    for grid in grids:
        t, s = grid.table, _score_column(grid.table)
        tops = t.loc[t.groupby("method")[f"{s}_win_rate"].idxmax()].sort_values(f"{s}_win_rate", ascending=False)
        if len(tops) < 2:
            only = tops.iloc[0]["method"]
            sentences.append(f"The run {grid.run} has only {only} datasets, so it cannot compare methods: M1 (rated "
                             "replies) and M2 (improving the human's reply) need LLMs-vs-Humans, which the embedded "
                             "corpus is not; with $EMPATHY_DATA_DIR set, the study-llms-vs-humans run compares them.")
            continue
        first, second = tops.iloc[0], tops.iloc[1]
        verdict = ahead(first[f"{s}_ci_low"], first[f"{s}_ci_high"], second[f"{s}_ci_low"], second[f"{s}_ci_high"])
        listing = "; ".join(f"{r['method']} at best {_rate(r[f'{s}_win_rate'], r[f'{s}_ci_low'], r[f'{s}_ci_high'])}"
                            f" ({_label(r)})" for _, r in tops.iterrows())
        sentences.append(f"In the run {grid.run} (judged by {judge_name(grid.judge)}): {listing}. {first['method']} "
                         f"{AHEAD_WORDS[verdict]} {second['method']}." + _caveat(grid.accuracy))
    return " ".join(sentences)


PRIDE_BASELINES = ("blackbox-sft", "sdft")
PRIDE_ABLATIONS = ("pride-no-pi", "pride-no-rkl", "pride-no-mmd")


def pride_answer(result: RunResult | None) -> str:
    """PRIDE against the base student and its teacher, and against its baselines and ablations (each
    compared through its own win rate against the same base student)."""
    if result is None:
        return missing_sentence("pride")
    from .pride.stage import LABELS

    t = result.table
    main = _row(t, "pride", "base")
    if main is None:
        return f"The run {result.run} did not judge PRIDE against the base student."
    parts = [f"In the run {result.run}, judged by {judge_name(result.judge)}, PRIDE against the base student wins "
             f"{_rate(main['win_rate'], main['ci_low'], main['ci_high'])}: "
             f"{VERSUS_WORDS[versus(main['ci_low'], main['ci_high'])]}."]
    teacher = _row(t, "pride", "teacher")
    if teacher is not None:
        parts.append(f"Against its teacher it wins {_rate(teacher['win_rate'], teacher['ci_low'], teacher['ci_high'])}"
                     f": {VERSUS_WORDS[versus(teacher['ci_low'], teacher['ci_high'])]}.")
    for group, names in (("baselines", PRIDE_BASELINES), ("ablations", PRIDE_ABLATIONS)):
        rows = [(n, _row(t, n, "base")) for n in names]
        rows = [(n, r) for n, r in rows if r is not None]
        if not rows:
            parts.append(f"The run judged none of its {group}.")
            continue
        said = [f"{AHEAD_WORDS[ahead(main['ci_low'], main['ci_high'], r['ci_low'], r['ci_high'])]} "
                f"{LABELS.get(n, n)}, at {_rate(r['win_rate'], r['ci_low'], r['ci_high'])}" for n, r in rows]
        parts.append(f"Against its {group}, each through its own win rate against the same base student, PRIDE "
                     f"{'; '.join(said)}.")
    return " ".join(parts) + _caveat(result.accuracy)


DBT_METRICS = ("BLEU-4", "ROUGE-L", "Distinct-2")  # the paper's "Dist" does not say its n


def _metric(value: float) -> str:
    """One reference metric, with the same decimals before and after (0.45 → 0.65, 10.7 → 11.0)."""
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def dbt_answer(result: RunResult | None) -> str:
    """Does DBT-grounded SFT+DPO move the DBT paper's metrics the way its Table 1 does (up), and does
    the judge prefer its replies to the base student's?"""
    if result is None:
        return missing_sentence("dbt")
    metrics = result.extra["metrics"].set_index("row")
    if not {"base", "sft-dpo"} <= set(metrics.index):
        return f"The run {result.run} has no SFT+DPO row beside its base row."
    base, tuned = metrics.loc["base"], metrics.loc["sft-dpo"]
    moved = [m for m in DBT_METRICS if m in metrics.columns]
    up = [m for m in moved if tuned[m] > base[m]]
    changes = ", ".join(f"{m} {_metric(base[m])} → {_metric(tuned[m])}" for m in moved)
    text = (f"In the run {result.run}, the SFT+DPO student against the base student: {changes}; {len(up)} of "
            f"{len(moved)} move the way Son & So's Table 1 does (up). These scores carry no interval here, so "
            "they give a direction, not a finding.")
    row = _row(result.table, "sft-dpo", "base")
    if row is not None:
        text += (f" Judged by {judge_name(result.judge)}, its win rate against the base student is "
                 f"{_rate(row['win_rate'], row['ci_low'], row['ci_high'])}: "
                 f"{VERSUS_WORDS[versus(row['ci_low'], row['ci_high'])]}." + _caveat(result.accuracy))
    return text


def setting_answer(result: RunResult | None) -> str:
    """What differs between Xie et al.'s setting and this book's core run."""
    from .book_facts import XIE_2025, XIE_2025_CLAIMS

    paper = (f"Xie et al. distilled from {XIE_2025_CLAIMS['teacher']} into {XIE_2025_CLAIMS['students']} on the "
             f"{XIE_2025['train_dialogues']:,} LLMs-vs-Humans train dialogues and judged with "
             f"{XIE_2025_CLAIMS['judges']} on {XIE_2025['test_dialogues']} test dialogues.")
    if result is None:
        return paper + " " + missing_sentence("core")
    s = result.extra["setting"]
    return (paper + f" Here (the run {result.run}) the teacher is {s['teacher']} and the student {s['student']}, "
            f"trained on {s['sft_examples']} SFT examples and {s['dpo_pairs']} DPO pairs from {s['data']}, and "
            f"judged by {judge_name(result.judge)} on {s['n_test']} test dialogues, with one seed ({s['seed']}): a "
            "teacher and a student far smaller than theirs, far less data, another judge, and no repetition over "
            "seeds.")


def judges_answer(results: StudyResults) -> str:
    """Each answering run's judge and its validated accuracy (the sentence every win rate carries)."""
    by_judge: dict[tuple, list[str]] = {}
    for r in [results.core, *results.core_other_data, *results.variants, results.pride, results.dbt]:
        if r is None:
            continue
        runs = by_judge.setdefault((r.judge, _accuracy_key(r.accuracy)), [r.accuracy])
        if r.run not in runs:
            runs.append(r.run)
    lines = []
    for (judge, _), (accuracy, *runs) in by_judge.items():
        which = f"The run {runs[0]}" if len(runs) == 1 else "The runs " + ", ".join(runs[:-1]) + f" and {runs[-1]}"
        lines.append(f"{which} used {judge_name(judge)}; in full, {judge}. {judge_accuracy_sentence(accuracy, named=False)}")
    return " ".join(lines) if lines else "No run of this book judged anything."


def _accuracy_key(accuracy) -> tuple:
    return () if accuracy is None else (accuracy.accuracy, accuracy.ci_low, accuracy.ci_high, accuracy.source)


def _once(*sentences: str) -> str:
    """Answers that share a heading, each said once (without a variants run both are the same pointer)."""
    return " ".join(dict.fromkeys(sentences))


def answers(results: StudyResults) -> dict[str, str]:
    """Every sentence the conclusions chapter glues, by key."""
    from .book_facts import claim_sentences

    return {
        "runs_in_book": ", ".join(results.runs),
        "q_sft_dpo_vs_base": pair_answers(results, "dpo", "base", "the SFT→DPO student", "the base student"),
        "q_dpo_vs_sft": pair_answers(results, "dpo", "sft", "the SFT→DPO student", "the SFT student"),
        "q_targeted_vs_naive": targeted_answer(results.variants),
        "q_best_prompt_set": best_answer(results.variants),
        "q_best_method": method_answer(results.variants),
        "q_best_prompt_set_and_method": _once(best_answer(results.variants), method_answer(results.variants)),
        "q_pride": pride_answer(results.pride),
        "q_dbt": dbt_answer(results.dbt),
        "setting": setting_answer(results.core),
        "judges": judges_answer(results),
        **claim_sentences(),
    }


def answers_table(values: dict[str, str]) -> pd.DataFrame:
    """The answers as one table (the conclusions notebook shows it)."""
    questions = {"q_sft_dpo_vs_base": "Does SFT→DPO beat the base student?",
                 "q_dpo_vs_sft": "Does DPO add to SFT?",
                 "q_targeted_vs_naive": "Do targeted prompts beat the naive one?",
                 "q_best_prompt_set": "Which prompt set distils best?",
                 "q_best_method": "Which method distils best?",
                 "q_pride": "Does PRIDE beat its baselines and ablations?",
                 "q_dbt": "Does DBT-grounded SFT+DPO move the DBT paper's metrics?"}
    return pd.DataFrame({"answer": [values[k] for k in questions]},
                        index=pd.Index(list(questions.values()), name="question"))
