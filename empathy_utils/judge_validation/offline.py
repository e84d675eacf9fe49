"""Judges that need no training data, measured once against people and shipped with the package.

A newcomer's ``make study`` has no research data, so nothing can be validated in that run. The
judge it falls back on (``judge.fallback: auto``) is the data-free candidate that measured best in
the project's own validation, recorded by ``benchmarks/measure_offline_judges.py`` in
``empathy_utils/resources/judge_measurements.json`` (aggregates only: accuracies, counts, settings,
the data file's checksum, date and commit). Candidates are chosen on a *selection* set of
LLMs-vs-Humans test-split dialogues and reported on the disjoint *report* set. A judge whose two
orders disagree on most pairs (it ties most pairs) is reported as such and never chosen."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StudyError
from ..judges import Judge, LikelihoodJudge, LongerReplyJudge, PairwiseLLMJudge, likelihood_store
from ..paths import repo_root, resources_dir
from .calibration import banded_verdicts, choose_tie_band, fit_temperature, probabilities, reliability
from .measurement import (baselines, measure, rater_design, rater_leniency, within_rater_agreement,
                          within_rater_reference, writer_ratings)
from .pairs import judge_items, rating_pairs, sample_pairs, split_selection_report, within_rater_pairs

MEASUREMENT_FILE = "judge_measurements.json"
# The test-split pairs' orientation coin and the selection/report split (fixed, recorded).
PAIR_SEED = 0
SPLIT_SEED = 0
SELECTION_SHARE = 0.5
# Refusal rule: a candidate tying more than this share of the selection pairs cannot decide.
MAX_TIE_RATE = 0.5
MIN_POSITION_CONSISTENCY = 0.5


def measurement_path() -> Path:
    return resources_dir() / MEASUREMENT_FILE


def packaged_measurement(path: str | Path | None = None) -> dict:
    """The shipped measurement of the data-free judges (see the module docstring)."""
    f = Path(path) if path else measurement_path()
    if not f.exists():
        raise StudyError(f"{f}: the packaged judge measurement is missing; regenerate it with "
                         "python benchmarks/measure_offline_judges.py (needs the research data)")
    return json.loads(f.read_text(encoding="utf-8"))


def refusal(row: dict) -> str | None:
    """Why a candidate may not be chosen (None: it may). Judged on its selection-set figures."""
    sel = row.get("selection") or {}
    ties = sel.get("tie_rate")
    if ties is None or ties > MAX_TIE_RATE:
        return (f"it ties {ties:.0%} of the selection pairs (more than {MAX_TIE_RATE:.0%}): it cannot decide"
                if ties is not None else "not measured")
    pc = sel.get("position_consistency")
    if pc is not None and pc < MIN_POSITION_CONSISTENCY:
        return f"its two presentation orders agree on only {pc:.0%} of the selection pairs"
    return None


def choose(rows: list[dict]) -> dict | None:
    """The allowed candidate with the best selection-set accuracy (ties half)."""
    allowed = [r for r in rows if r.get("refused") is None and r.get("selection", {}).get("accuracy") is not None]
    return max(allowed, key=lambda r: r["selection"]["accuracy"]) if allowed else None


def selected_from_packaged(measurement: dict | None = None) -> dict | None:
    """The packaged choice as the validation report's ``selected`` (report-set figures), with its
    source, date and commit so the book can state them."""
    m = measurement or packaged_measurement()
    best = m.get("selected")
    if best is None:
        return None
    row = next(r for r in m["candidates"] if r["name"] == best["name"])
    rep = row["report"]
    base = m["baselines"]["report"]
    return {"kind": row["settings"]["kind"], "name": row["name"], "settings": row["settings"],
            "source": "packaged measurement", "set": "report",
            "accuracy": rep["accuracy"], "ci_low": rep["ci_low"], "ci_high": rep["ci_high"], "pairs": rep["pairs"],
            "tie_rate": rep["tie_rate"], "accuracy_human_vs_llm": rep["accuracy_human_vs_llm"],
            "selection_accuracy": row["selection"]["accuracy"], "selection_pairs": row["selection"]["pairs"],
            "longer_wins": base["longer_wins"]["accuracy"], "llm_wins": base["llm_wins"]["accuracy"],
            "llm_wins_pairs": base["llm_wins"]["pairs"],
            "beats_longer_wins": rep["accuracy"] > base["longer_wins"]["accuracy"],
            "ci_above_longer_wins": rep["ci_low"] > base["longer_wins"]["accuracy"],
            "ci_above_chance": rep["ci_low"] > 0.5,
            "beats_llm_wins": (rep["accuracy_human_vs_llm"] or 0) > base["llm_wins"]["accuracy"],
            "ci_above_llm_wins": rep["ci_low"] > base["llm_wins"]["accuracy"],
            "measured_on": m["date"], "commit": m["git_commit"], "data_sha256": m["data"]["sha256"]}


def judge_from_settings(settings: dict, batch_size: int = 16, backend=None) -> Judge:
    """Rebuild a judge exactly as it was measured, from its recorded settings."""
    kind = settings["kind"]
    if kind == "likelihood":
        return LikelihoodJudge(settings["model"], batch_size=batch_size, condition=settings["condition"],
                               score=settings.get("score", "mean"), tie_margin=settings.get("tie_margin", 0.0),
                               temperature=settings.get("temperature"), memo=likelihood_store(settings["model"]))
    if kind == "pairwise-llm":
        if backend is None:
            from ..backends import LocalBackend

            backend = LocalBackend(settings["model"], batch_size=batch_size)
        return PairwiseLLMJudge(backend, mode=settings.get("verdict", "logprobs"))
    if kind == "longer":
        return LongerReplyJudge()
    raise StudyError(f"cannot rebuild a judge of kind {kind!r} from settings (learned judges need the research data)")


def tie_margin(temperature: float, delta: float) -> float:
    """The score difference inside which sigmoid(diff / T) lies within delta of 0.5."""
    return 0.0 if delta <= 0 else float(temperature * np.log((0.5 + delta) / (0.5 - delta)))


def calibrate_scores(records: list[dict], human: list[str]) -> dict:
    """Temperature and tie band of a scoring judge, both chosen on these (selection) records."""
    diffs = [r["score_a"] - r["score_b"] for r in records]
    temperature = fit_temperature(diffs, human)
    if temperature is None:
        return {"temperature": None, "delta": 0.0, "tie_margin": 0.0, "grid": []}
    band = choose_tie_band(probabilities(diffs, temperature), human)
    return {"temperature": temperature, "delta": band["delta"], "tie_margin": tie_margin(temperature, band["delta"]),
            "grid": band["grid"]}


def apply_calibration(records: list[dict], calibration: dict) -> list[dict]:
    """Records of a scoring judge with p_a and verdicts from the calibrated band."""
    t = calibration.get("temperature")
    if t is None:
        return records
    diffs = [r["score_a"] - r["score_b"] for r in records]
    p_a = probabilities(diffs, t)
    verdicts = banded_verdicts(p_a, calibration["delta"])
    return [{**r, "p_a": p, "verdict": v} for r, p, v in zip(records, p_a, verdicts)]


def _summary(stats: dict) -> dict:
    keys = ("pairs", "accuracy", "ci_low", "ci_high", "decisive_accuracy", "tie_rate", "position_consistency",
            "human_vs_llm_pairs", "accuracy_human_vs_llm", "picks_longer", "by_length")
    return {k: stats.get(k) for k in keys}


def git_commit() -> str:
    try:
        root = repo_root()
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure_data_free(frame: pd.DataFrame, model_spec: str, conditions: list[str], scores: list[str],
                      selection_pairs: int, report_pairs: int, pairwise_pairs: int, report_top: int = 1,
                      batch_size: int = 16, resamples: int = 1000, log=print) -> dict:
    """Measure every data-free candidate on selection pairs, choose by :func:`choose`, and measure the
    ``report_top`` best allowed candidates (by selection accuracy) on the report pairs. Scoring
    judges are calibrated (temperature, tie band) on the selection pairs. Returns the JSON record."""
    commit = git_commit()  # the code that runs (read now: the tree may change during a long measurement)
    all_test = rating_pairs(frame, "test", PAIR_SEED)
    sel_all, rep_all = split_selection_report(all_test, SPLIT_SEED, SELECTION_SHARE)
    sel = sample_pairs(sel_all, selection_pairs, SPLIT_SEED)
    rep = sample_pairs(rep_all, report_pairs, SPLIT_SEED)
    sel_items, rep_items = judge_items(sel), judge_items(rep)
    sel_human, rep_human = list(sel["human"]), list(rep["human"])
    rows: list[dict] = []
    memo: dict = {}
    model = tokenizer = None
    judges: dict[str, LikelihoodJudge] = {}
    skipped: list[dict] = []
    for condition in conditions:
        for score in scores:
            start = time.time()
            try:
                j = LikelihoodJudge(model_spec, batch_size=batch_size, condition=condition, score=score, memo=memo,
                                    model=model, tokenizer=tokenizer)
            except StudyError as exc:  # e.g. a chat framing on a base model: said, and the others measured
                log(f"skipped: {exc}")
                skipped.append({"condition": condition, "score": score, "reason": str(exc)})
                continue
            model, tokenizer = j.model, j.tokenizer
            log(f"selection: {j.name} on {len(sel)} pairs ...")
            raw = j.judge(sel_items)
            seconds = time.time() - start
            cal = calibrate_scores(raw, sel_human)
            settings = {**j.settings(), "temperature": cal["temperature"], "tie_margin": cal["tie_margin"]}
            row = {"name": j.name, "settings": settings, "calibration": cal,
                   "selection_uncalibrated": _summary(measure(raw, sel, resamples, SPLIT_SEED)),
                   "selection": _summary(measure(apply_calibration(raw, cal), sel, resamples, SPLIT_SEED)),
                   "selection_seconds": round(seconds, 1), "report": None}
            row["refused"] = refusal(row)
            rows.append(row)
            judges[j.name] = j
    if pairwise_pairs > 0:
        from ..backends import LocalBackend

        backend = LocalBackend(model_spec, batch_size=batch_size, model=model, progress=False)
        pj = PairwiseLLMJudge(backend, mode="logprobs")
        sub = sample_pairs(sel, pairwise_pairs, SPLIT_SEED)
        log(f"selection: {pj.name} on {len(sub)} pairs (subsample: it reads both orders of every pair) ...")
        start = time.time()
        recs = pj.judge(judge_items(sub))
        row = {"name": pj.name, "settings": {"kind": "pairwise-llm", "model": model_spec, "verdict": "logprobs"},
               "calibration": None, "selection": _summary(measure(recs, sub, resamples, SPLIT_SEED)),
               "selection_seconds": round(time.time() - start, 1), "report": None,
               "subsampled": f"{len(sub)} of the {len(sel)} selection pairs"}
        row["refused"] = refusal(row)
        rows.append(row)
    longer = LongerReplyJudge()
    ranked = sorted([r for r in rows if r["refused"] is None and r["settings"]["kind"] == "likelihood"],
                    key=lambda r: -r["selection"]["accuracy"])
    reliability_tables = {}
    one_rater = within_rater_pairs(frame, split="test", seed=PAIR_SEED)
    for row in ranked[:report_top]:
        j = judges[row["name"]]
        log(f"report: {j.name} on {len(rep)} pairs ...")
        start = time.time()
        recs = apply_calibration(j.judge(rep_items), row["calibration"])
        row["report_seconds"] = round(time.time() - start, 1)
        row["report"] = _summary(measure(recs, rep, resamples, SPLIT_SEED))
        row["pairs_per_second"] = len(rep) / max(1e-9, row["report_seconds"])
        if len(one_rater):
            log(f"within one rater: {j.name} on {len(one_rater)} pairs ...")
            row["within_rater"] = within_rater_agreement(j, one_rater, resamples, SPLIT_SEED)
        if row["calibration"]["temperature"] is not None:
            reliability_tables[row["name"]] = reliability([r["p_a"] for r in recs], rep_human).to_dict("records")
    longer_row = {"name": longer.name, "settings": {"kind": "longer"}, "calibration": None, "refused": "a baseline",
                  "selection": _summary(measure(longer.judge(sel_items), sel, resamples, SPLIT_SEED)),
                  "report": _summary(measure(longer.judge(rep_items), rep, resamples, SPLIT_SEED))}
    best = choose(rows)
    if best is not None and best["report"] is None:  # pragma: no cover - report_top >= 1 measures it
        raise StudyError("the chosen candidate was not measured on the report set")
    frame_sha = frame.attrs.get("sha256", "")
    leniency = rater_leniency(frame)  # who rated: described in the book even where no data is present
    return {
        "what": "data-free judges against LLMs-vs-Humans human ratings; chosen on the selection set, "
                "reported on the disjoint report set",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "git_commit": commit,
        "data": {"file": Path(frame.attrs.get("source_file", "dataset.csv")).name, "sha256": frame_sha,
                 "split": "test", "pair_seed": PAIR_SEED, "split_seed": SPLIT_SEED,
                 "selection_share": SELECTION_SHARE,
                 "selection_dialogues_all": int(sel_all["dialogue_id"].nunique()), "selection_pairs_all": len(sel_all),
                 "report_dialogues_all": int(rep_all["dialogue_id"].nunique()), "report_pairs_all": len(rep_all),
                 "selection_dialogues": int(sel["dialogue_id"].nunique()), "selection_pairs": len(sel),
                 "report_dialogues": int(rep["dialogue_id"].nunique()), "report_pairs": len(rep)},
        "subsampled": (f"likelihood candidates: {len(sel)} of {len(sel_all)} selection pairs; the best "
                       f"{report_top} on {len(rep)} of {len(rep_all)} report pairs (CPU time)"),
        "selection_rule": {"by": "selection-set accuracy (ties half)", "max_tie_rate": MAX_TIE_RATE,
                           "min_position_consistency": MIN_POSITION_CONSISTENCY},
        "bootstrap_resamples": resamples,
        "candidates": rows,
        "skipped": skipped,
        "baseline_rows": [longer_row],
        "baselines": {"selection": baselines(sel, resamples, SPLIT_SEED, writer_ratings(frame)),
                      "report": baselines(rep, resamples, SPLIT_SEED, writer_ratings(frame)),
                      "report_all": baselines(rep_all, resamples, SPLIT_SEED, writer_ratings(frame), leniency)},
        "rater_design": rater_design(frame, leniency),
        "within_rater": within_rater_reference(one_rater, resamples, SPLIT_SEED),
        "reliability": reliability_tables,
        "selected": None if best is None else {"name": best["name"], "settings": best["settings"]},
    }


def packaged_validity(selected: dict) -> dict:
    """What the judge stage says about a judge taken from the packaged measurement."""
    from ..judging import interval_against_baselines

    llm, llm_pairs = selected.get("llm_wins"), selected.get("llm_wins_pairs")
    statement = (f"Measured offline by the project (not in this run): on {selected['pairs']} LLMs-vs-Humans "
                 f"test-split pairs of the report set it agreed with the human ratings on "
                 f"{100 * selected['accuracy']:.1f} % (95 % CI {100 * selected['ci_low']:.1f} % – "
                 f"{100 * selected['ci_high']:.1f} %, bootstrap over dialogues), against "
                 f"{100 * selected['longer_wins']:.1f} % for \u201cthe longer reply wins\u201d on the same pairs"
                 + (f" and {100 * llm:.1f} % for \u201cthe LLM's reply wins\u201d on their {llm_pairs} human-vs-LLM "
                    "pairs" if llm is not None and llm_pairs else "")
                 + f"; chosen on a disjoint selection set; measured {selected['measured_on']} at commit "
                 f"{selected['commit'][:12]}. "
                 + interval_against_baselines(selected["ci_low"], selected["longer_wins"],
                                              llm if llm_pairs else None))
    return {"validated": True, "source": "packaged measurement", "accuracy": selected["accuracy"],
            "ci_low": selected["ci_low"], "ci_high": selected["ci_high"], "pairs": selected["pairs"],
            "longer_wins": selected["longer_wins"], "llm_wins": llm if llm_pairs else None, "statement": statement}
