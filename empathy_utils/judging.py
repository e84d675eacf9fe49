"""Judging a set of comparisons, the one way every method of the study does it (the core students,
PRIDE's, DBT's): items -> verdicts -> summary (win rates, bootstrap CI, length-controlled rate,
position consistency, per-group rates) -> files -> figure.

A method builds its :class:`Comparison` list (who against whom, on which items) and calls
:func:`judge_comparisons` with the run's judge (:func:`make_judge`); what it gets back is plain data
(:class:`JudgedSet`). Turning that into tables and sentences is :mod:`empathy_utils.presentation`'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd

from .artifacts import FileStamp, digest, reuse_or_build
from .config import StudyConfig
from .data import read_jsonl, save_jsonl
from .judges import position_consistency, word_count
from .plotting import save_figure, winrate_figure
from .winrate import by_group, length_controlled, summarize


@dataclass
class Comparison:
    """One candidate against one opponent on the same items. Each item has ``id``, ``context``,
    ``utterance``, ``response_a`` (the candidate's reply) and ``response_b`` (the opponent's);
    ``groups`` (optional, one per item) splits the win rate, e.g. by the speaker's emotion; its
    values are kept under ``group_key`` in the verdicts and the per-group rows."""

    candidate: str
    opponent: str
    label: str
    items: list[dict]
    groups: list[str] | None = None
    group_key: str = "group"


@dataclass
class JudgingOutput:
    """Where the verdicts, the win-rate tables and the figure go."""

    judgment_file: Callable[[str, str], Path]
    results_dir: Path
    figure_file: Path
    figure_title: str
    reuse_verdicts: bool = False  # reuse an earlier run's verdicts when judge and items are unchanged


@dataclass
class JudgedSet:
    """What judging a set of comparisons found: one row per comparison (``results``), the per-group
    rows (``per_group``, empty without groups), the judge's name and the figure (saved already)."""

    results: pd.DataFrame
    per_group: pd.DataFrame
    judge: str
    figure: plt.Figure
    records: dict[tuple[str, str], list[dict]] = field(default_factory=dict)


def verdicts_fingerprint(judge, items: list[dict]) -> str:
    """The same judge (name and measured validity) on the same items gives the same verdicts."""
    return digest({"judge": judge.name, "validity": getattr(judge, "validity", None), "items": items})


def _verdicts(judge, comparison: Comparison, out: JudgingOutput) -> list[dict]:
    target = out.judgment_file(comparison.candidate, comparison.opponent)

    def build(path: Path) -> list[dict]:
        records = judge.judge(comparison.items)
        for i, (rec, it) in enumerate(zip(records, comparison.items)):
            if comparison.groups is not None:
                rec[comparison.group_key] = comparison.groups[i]
            rec.update(words_a=word_count(it["response_a"]), words_b=word_count(it["response_b"]))
        save_jsonl(records, path)
        return records

    if not out.reuse_verdicts:
        return build(target)
    records, _ = reuse_or_build(target, verdicts_fingerprint(judge, comparison.items), build,
                                stamp=FileStamp(target.with_suffix(".fingerprint")), load=read_jsonl)
    return records


def judge_comparisons(comparisons: list[Comparison], judge, out: JudgingOutput, *, resamples: int,
                      confidence: float, seed: int, extra: dict | None = None) -> JudgedSet:
    """Judge every comparison, summarize it, write ``judgments/…jsonl``, ``winrates.csv`` /
    ``winrates.json`` and the win-rate figure.
    ``extra`` adds the same columns to every row (e.g. whether the judge was validated)."""
    rows, group_rows, all_records = [], [], {}
    for c in comparisons:
        records = _verdicts(judge, c, out)
        all_records[(c.candidate, c.opponent)] = records
        verdicts = [r["verdict"] for r in records]
        length_diff = [word_count(it["response_a"]) - word_count(it["response_b"]) for it in c.items]
        rows.append({"candidate": c.candidate, "opponent": c.opponent, "comparison": c.label,
                     **summarize(verdicts, resamples, confidence, seed),
                     **length_controlled(verdicts, length_diff, resamples, confidence, seed),
                     "position_consistency": position_consistency(records), "judge": judge.name,
                     "judge_kind": getattr(judge, "kind", None), **(extra or {})})
        if c.groups is not None:
            for group, g in by_group(verdicts, c.groups).items():
                group_rows.append({"comparison": c.label, "candidate": c.candidate, "opponent": c.opponent,
                                   c.group_key: group, **g})
    results, per_group = pd.DataFrame(rows), pd.DataFrame(group_rows)
    out.results_dir.mkdir(parents=True, exist_ok=True)
    results.to_csv(out.results_dir / "winrates.csv", index=False)
    (out.results_dir / "winrates.json").write_text(json.dumps(rows, indent=2))
    fig = winrate_figure(results, judge.name, title=out.figure_title)
    save_figure(fig, out.figure_file)
    plt.close(fig)  # shown once, where the notebook displays it
    return JudgedSet(results, per_group, judge.name, fig, all_records)


# ------------------------------------------------------------------------ the judge's measured accuracy
@dataclass
class JudgeAccuracy:
    """The judge's accuracy against human ratings on the report set (pairs it was not chosen on),
    as the run's ``results/judge_validation.json`` records it in its ``selected`` entry.
    ``source``: "run" (measured by this run's validate-judges stage) or "packaged" (the project's
    own measurement, shipped with the code, for runs without the research data); ``detail`` names
    that measurement (date, commit) when the file says. ``longer_wins`` and ``llm_wins``: the two
    baselines on the same report set ("the longer reply wins" on every pair, "the LLM's reply wins" on
    its human-vs-LLM pairs), None where the file does not record them."""

    name: str
    accuracy: float
    ci_low: float
    ci_high: float
    source: str = "run"
    set: str = "report"
    detail: str = ""
    longer_wins: float | None = None
    llm_wins: float | None = None


def _source(raw) -> tuple[str, str]:
    """("run" | "packaged", detail) from the ``source`` entry, which may be a word or a mapping."""
    if raw is None:
        return "run", ""
    if isinstance(raw, dict):
        kind = str(raw.get("kind") or raw.get("type") or raw.get("name") or "")
        detail = ", ".join(f"{k} {raw[k]}" for k in ("measured", "date", "commit") if raw.get(k))
    else:
        kind, detail = str(raw), ""
    return ("packaged" if "packag" in kind.lower() else "run"), detail


def read_judge_accuracy(run_dir: str | Path | None, judge_name: str | None = None) -> JudgeAccuracy | None:
    """The ``selected`` judge's accuracy from the run's validation file; None when nothing was measured
    (no file, no selected entry, no accuracy) or when the selected judge is not ``judge_name``."""
    from .judge_validation import read_validation

    report = read_validation(run_dir) if run_dir else None
    if report is None and run_dir:
        return _recorded_accuracy(run_dir, judge_name)
    selected = (report or {}).get("selected")
    if not selected or selected.get("accuracy") is None or selected.get("ci_low") is None:
        return None
    if judge_name is not None and selected["name"] not in judge_name:
        return None  # the judge that judged is not the one that was measured
    return _accuracy_from(selected)


def _accuracy_from(entry: dict) -> JudgeAccuracy:
    """A validation file's ``selected`` entry, or a run's recorded ``judge.json``, as a JudgeAccuracy."""
    source, detail = _source(entry.get("source"))
    baseline = {k: float(entry[k]) if entry.get(k) is not None else None for k in ("longer_wins", "llm_wins")}
    return JudgeAccuracy(name=entry["name"], accuracy=float(entry["accuracy"]), ci_low=float(entry["ci_low"]),
                         ci_high=float(entry["ci_high"]), source=source, set=entry.get("set", "report"), detail=detail,
                         **baseline)


def _recorded_accuracy(run_dir: str | Path, judge_name: str | None) -> JudgeAccuracy | None:
    """For a run without judge validation (no validate-judges stage, as in the ``dbt`` profile): the
    accuracy its judge stage recorded in ``results/judge.json`` for the judge it used (the packaged
    measurement of the data-free judge), so its later stages state what the judge stage stated."""
    from .artifacts import RunPaths

    f = RunPaths(run_dir).results / "judge.json"
    if not f.exists():
        return None
    recorded = json.loads(f.read_text())
    if not recorded.get("validated") or recorded.get("accuracy") is None or recorded.get("ci_low") is None:
        return None
    if judge_name is not None and recorded["name"] not in judge_name and judge_name not in recorded["name"]:
        return None  # a later stage judged with another judge
    return _accuracy_from(recorded)


# ------------------------------------------------------------------------------------ the run's judge
def judge_validity(cfg: StudyConfig, run_dir: str | Path | None, judge) -> dict:
    """What this run measured about ``judge``: found by its name among the validated candidates."""
    from .judge_validation import KIND_LABELS, read_validation
    from .judges import InstructionStrippingJudge, base_judge

    report = read_validation(run_dir or cfg.run_dir) if (run_dir or cfg.run_dir) else None
    inner = base_judge(judge)
    stripped = isinstance(judge, InstructionStrippingJudge)
    out = {"kind": judge.kind, "name": judge.name, "validated": False, "accuracy": None, "ci_low": None,
           "ci_high": None, "pairs": None, "longer_wins": None, "llm_wins": None}
    row = None
    if report and report.get("status") == "ok":
        row = next((j for j in report["judges"] if j["name"] == inner.name), None)
    if row is None and getattr(inner, "packaged_selection", None):  # judge.fallback auto: measured offline
        from .judge_validation.offline import packaged_validity

        return {**out, **packaged_validity(inner.packaged_selection)}
    if row is None:
        if report is None:
            why = "this run has no judge validation (the validate-judges stage is not in run.stages)"
        elif report.get("status") != "ok":
            why = report["reason"]
        else:
            why = "this exact judge was not among the candidates validated in this run"
        out["statement"] = (f"Its agreement with human ratings is unmeasured: {why}. Read its win rates as the "
                            f"opinion of a {KIND_LABELS.get(judge.kind, judge.kind)} of unknown validity.")
        return out
    acc = row["accuracy_stripped"] if stripped else row["accuracy"]
    base = report["baselines"]
    llm = base.get("llm_wins") or {}
    with_llm = bool(llm.get("pairs")) and llm.get("accuracy") is not None
    out.update(validated=True, accuracy=acc, ci_low=row["ci_low"], ci_high=row["ci_high"], pairs=row["pairs"],
               longer_wins=base["longer_wins"]["accuracy"], llm_wins=llm["accuracy"] if with_llm else None)
    out["statement"] = (
        f"Validated in this run against people: it agreed with the human ratings on {100 * acc:.1f} % of "
        f"{row['pairs']} LLMs-vs-Humans test-split pairs (95 % CI {100 * row['ci_low']:.1f} % – "
        f"{100 * row['ci_high']:.1f} %); on the same pairs \u201cthe longer reply wins\u201d scores "
        f"{100 * base['longer_wins']['accuracy']:.1f} %"
        + (f" and, on their {llm['pairs']} human-vs-LLM pairs, \u201cthe LLM's reply wins\u201d "
           f"{100 * llm['accuracy']:.1f} %" if with_llm else "") + ". "
        + interval_against_baselines(row["ci_low"], base["longer_wins"]["accuracy"],
                                     llm["accuracy"] if with_llm else None))
    return out


def interval_against_baselines(ci_low: float, longer_wins: float, llm_wins: float | None) -> str:
    """Whether a judge's interval lies above each baseline's point estimate: the bar a judge must clear before
    its win rates say more than length or authorship would (book/judges.md)."""
    rules = [("\u201cthe longer reply wins\u201d", longer_wins)] + (
        [("\u201cthe LLM's reply wins\u201d", llm_wins)] if llm_wins is not None else [])
    above = [name for name, value in rules if ci_low > value]
    below = [name for name, value in rules if ci_low <= value]
    if not below:
        return "Its interval lies above " + ("both." if len(rules) == 2 else f"{above[0]}.")
    if not above:
        return "Its interval lies above neither." if len(rules) == 2 else f"Its interval does not lie above {below[0]}."
    return f"Its interval lies above {above[0]} but not above {below[0]}."


def make_judge(cfg: StudyConfig, run_dir: str | Path | None = None):
    """The judge of the judge stage (judge.kind): ``auto`` takes the candidate that validated best in
    this run's validate-judges stage, exactly as it was validated, else ``judge.fallback``. Wrapped in
    instruction stripping when judge.strip_instructions. ``.validity`` says what was measured."""
    from .judge_validation import build_judge, judge_from_selection, read_validation
    from .judges import InstructionStrippingJudge

    run_dir = run_dir if run_dir is not None else cfg.run_dir
    how = "named in judge.kind"
    if cfg.judge.kind == "auto":
        report = read_validation(run_dir) if run_dir else None
        selected = (report or {}).get("selected")
        if selected:
            judge = judge_from_selection(selected, cfg)
            how = ("chosen automatically: the best-validated candidate of this run" if selected.get("source") !=
                   "packaged measurement" else "the packaged measurement's best data-free judge: nothing was validated")
        else:
            judge = build_judge(cfg.judge.fallback, cfg, "judge")
            how = ("the configured fallback (judge.fallback): nothing was validated" if cfg.judge.fallback != "auto" else
                   "judge.fallback auto: nothing was validated here, so the packaged measurement's best data-free judge")
    else:
        judge = build_judge(cfg.judge.kind, cfg, "judge")
    if cfg.judge.strip_instructions:
        judge = InstructionStrippingJudge(judge)
    judge.validity = {**judge_validity(cfg, run_dir, judge), "how_chosen": how}
    return judge
