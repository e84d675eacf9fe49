"""The validate-judges stage: measure every candidate, choose on the selection set, report on the
report set; and building a judge from a kind or from recorded settings."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import RunPaths
from ..config import StudyConfig
from ..data import LVH_FOLDER, load_llms_vs_humans
from ..errors import DataError, StudyError
from ..judges import (InstructionStrippingJudge, Judge, LikelihoodJudge, PairwiseLLMJudge, ScoreJudge, base_judge,
                      likelihood_store, strip_instructions)
from ..paths import DATA_ENV
from ..presentation import plain
from .learned import learned_judge
from .measurement import (adversarial, baselines, full_set_baselines, measure, rater_design, rater_leniency,
                          within_rater_agreement, within_rater_reference, writer_ratings)
from .pairs import judge_items, rating_pairs, sample_pairs, within_rater_pairs


def build_judge(kind: str, cfg: StudyConfig, section: str = "judge_validation", frame: pd.DataFrame | None = None,
                log=print) -> Judge:
    """A judge of ``kind`` as the ``judge_validation`` section (validated candidates) or the
    ``judge`` section (a judge named in judge.kind or the fallback) describes it."""
    from ..backends import make_backend

    s = cfg.judge_validation if section == "judge_validation" else cfg.judge
    if kind == "auto":  # judge.fallback auto: the best measured data-free judge of the packaged file
        from .offline import packaged_measurement, selected_from_packaged

        selected = selected_from_packaged(packaged_measurement())
        if selected is None:
            raise StudyError("the packaged judge measurement chose no judge (every candidate was refused); "
                             "set judge.fallback to pairwise-llm or likelihood")
        return judge_from_selection(selected, cfg)
    if kind == "pairwise-llm":
        return PairwiseLLMJudge(make_backend(s, batch_size=s.batch_size, dtype=cfg.model.dtype), mode=s.verdict)
    if kind == "likelihood":
        spec = cfg.judge_validation.scorer_model if section == "judge_validation" else cfg.judge.model
        return LikelihoodJudge(spec, batch_size=s.batch_size, condition=cfg.judge_validation.likelihood_condition,
                               score=cfg.judge_validation.likelihood_score, memo=likelihood_store(spec))
    if kind in ("embedding-head", "reward-model", "stacked", "writer-style", "cross-encoder"):
        if frame is None:
            frame = load_validation_data(cfg)
            if frame is None:
                raise DataError(f"judge.kind {kind!r} is trained on LLMs-vs-Humans ratings, and no research data "
                                f"directory is set; set {DATA_ENV} (or data.data_dir), or use judge.kind auto")
        return learned_judge(kind, frame, cfg.judge_validation, cfg.run.seed, log=log)
    from ..judge_registry import build_registered_judge  # a judge added by register_judge (or an error)

    return build_registered_judge(kind, cfg, section, log=log)


def load_validation_data(cfg: StudyConfig) -> pd.DataFrame | None:
    """LLMs-vs-Humans, or None when no research data directory is configured at all (the default
    study on a fresh machine). A configured directory that is missing or malformed is an error."""
    explicit = cfg.data.data_dir or os.environ.get(DATA_ENV, "")
    if not explicit:
        return None
    folder = Path(explicit).expanduser()
    if folder.is_dir() and not (folder / LVH_FOLDER).is_dir():
        return None  # a data folder without LLMs-vs-Humans in it: nothing to validate against
    return load_llms_vs_humans(cfg.data.data_dir or None)


# ------------------------------------------------------------------------------- the stage
def _plain(x):
    return plain(x, nan=None)  # the one converter (presentation.plain); JSON has no NaN


def validation_file(run_dir: str | Path) -> Path:
    return RunPaths(run_dir).results / "judge_validation.json"


def read_validation(run_dir: str | Path) -> dict | None:
    f = validation_file(run_dir)
    return json.loads(f.read_text()) if f.exists() else None


# Judges cheap enough to judge every pair of both sets: no language model per reply, or (the
# cross-encoder) a 22 M-parameter encoder that scores the 1,250 test-split replies in a minute or two
# on two CPU cores. The others judge the test_pairs subsample, and the book's table says so.
CHEAP_KINDS = ("embedding-head", "stacked", "writer-style", "cross-encoder", "longer")


def is_cheap(judge: Judge) -> bool:
    """True for a judge that scores every test-split pair in minutes at most (a stacked judge that reads the
    likelihood judge's scores is as slow as the likelihood judge)."""
    return judge.kind in CHEAP_KINDS and getattr(judge, "likelihood", None) is None


def _no_data_report(cfg: StudyConfig) -> dict:
    v = cfg.judge_validation
    report = {"status": "no-data", "candidates": list(v.candidates), "judges": [], "adversarial": [],
              "selected": None,
              "reason": f"no research data directory was set ({DATA_ENV} or data.data_dir), so LLMs-vs-Humans "
                        "ratings were not available to this run"}
    if cfg.judge.fallback == "auto":
        from .offline import packaged_measurement, selected_from_packaged

        try:
            measurement = packaged_measurement()
        except StudyError as exc:
            report["packaged_error"] = str(exc)
        else:
            report["selected"] = selected_from_packaged(measurement)
            report["packaged"] = measurement
    return report


def _calibrate(judge: Judge, records: list[dict], human: list[str], v) -> dict | None:
    """Choose, on the selection records, how a judge with a probability turns it into verdicts, and
    set it on the judge (so its later verdicts and its rebuilt copy use the same band)."""
    from .calibration import banded_verdicts, choose_tie_band
    from .offline import apply_calibration, calibrate_scores

    inner = base_judge(judge)
    if records and "score_a" in records[0]:
        cal = calibrate_scores(records, human)
        if cal["temperature"] is not None:
            inner.temperature, inner.tie_margin = cal["temperature"], cal["tie_margin"]
        return {**cal, "records": apply_calibration(records, cal)}
    if isinstance(inner, PairwiseLLMJudge) and inner.gives_probability and records:
        band = choose_tie_band([r["p_a"] for r in records], human)
        inner.tie_band = band["delta"]
        verdicts = banded_verdicts([r["p_a"] for r in records], band["delta"])
        return {"temperature": None, "delta": band["delta"], "grid": band["grid"], "tie_band": band["delta"],
                "records": [{**r, "verdict": x} for r, x in zip(records, verdicts)]}
    return None


def _refused(stats: dict, max_tie_rate: float) -> str | None:
    ties, pc = stats.get("tie_rate"), stats.get("position_consistency")
    if ties is None or (isinstance(ties, float) and math.isnan(ties)):
        return "not measured"
    if ties > max_tie_rate:
        return f"it ties {ties:.0%} of the selection pairs (more than {max_tie_rate:.0%}): it cannot decide"
    if pc is not None and pc < 0.5:
        return f"its two presentation orders agree on only {pc:.0%} of the selection pairs"
    return None


def judge_settings(judge: Judge) -> dict:
    """What :func:`judge_from_selection` needs to rebuild this judge exactly as it was measured."""
    inner = base_judge(judge)
    settings = inner.settings() if hasattr(inner, "settings") else {"kind": inner.kind}
    settings.update({"temperature": getattr(inner, "temperature", None), "tie_margin": getattr(inner, "tie_margin", 0.0)})
    if isinstance(inner, PairwiseLLMJudge):
        settings["tie_band"] = inner.tie_band
    return settings


def run_validation(cfg: StudyConfig, run_dir: str | Path, judges: dict[str, Judge] | None = None, log=print) -> dict:
    """The validate-judges stage: split the test-split rated pairs by dialogue into a selection set
    and a report set; calibrate and measure every candidate on both; choose on the selection set
    (never a judge that ties most pairs) and report the choice's report-set accuracy. Writes
    ``results/judge_validation.json`` (aggregates only — no text of the research data) and the
    report-set verdicts (pair ids and verdicts). Without research data the ``selected`` judge is the
    packaged measurement's (judge.fallback auto). ``judges`` replaces candidates (tests)."""
    from .calibration import reliability
    from .pairs import split_selection_report

    v = cfg.judge_validation
    paths = RunPaths(run_dir)
    paths.results.mkdir(parents=True, exist_ok=True)
    frame = load_validation_data(cfg)
    if frame is None:
        report = _plain(_no_data_report(cfg))
        validation_file(run_dir).write_text(json.dumps(report, indent=2))
        return report
    seed, resamples = cfg.run.seed, v.bootstrap_resamples
    all_test = rating_pairs(frame, "test", seed)
    sel_all, rep_all = split_selection_report(all_test, v.split_seed, v.selection_share)
    cheap = (sample_pairs(sel_all, v.scoring_pairs, seed), sample_pairs(rep_all, v.scoring_pairs, seed))
    half = -(-v.test_pairs // 2) if v.test_pairs else 0
    costly = (sample_pairs(sel_all, half, seed), sample_pairs(rep_all, half, seed))
    rep = cheap[1]
    by_writer = writer_ratings(frame)
    leniency = rater_leniency(frame)
    base = baselines(rep, resamples, seed, by_writer, leniency)
    attacked_pool = costly[1]
    attacked_idx = sorted(np.random.default_rng(seed).choice(len(attacked_pool), min(v.adversarial_pairs, len(attacked_pool)),
                                                             replace=False).tolist())
    attacked = attacked_pool.iloc[attacked_idx].reset_index(drop=True)
    report = {
        "status": "ok",
        "data": {"file": Path(frame.attrs["source_file"]).name, "sha256": frame.attrs["sha256"],
                 "test_dialogues_all": int((frame["split"] == "test").sum()), "test_pairs_all": len(all_test),
                 "split_seed": v.split_seed, "selection_share": v.selection_share,
                 "selection_dialogues": int(cheap[0]["dialogue_id"].nunique()), "selection_pairs": len(cheap[0]),
                 "report_dialogues": int(rep["dialogue_id"].nunique()), "report_pairs": len(rep),
                 "subsample_selection_pairs": len(costly[0]), "subsample_report_pairs": len(costly[1]),
                 # the report set, under the names the book has used for the validation pairs
                 "test_dialogues": int(rep["dialogue_id"].nunique()), "test_pairs": len(rep),
                 "human_vs_llm_pairs": base["llm_wins"]["pairs"], "adversarial_pairs": len(attacked)},
        "full_set": full_set_baselines(frame),
        "rater_design": rater_design(frame, leniency),
        "baselines": base,
        "baselines_selection": baselines(cheap[0], resamples, seed, by_writer, leniency),
        "baselines_subsample": baselines(costly[1], resamples, seed, by_writer, leniency),
        "candidates": list(v.candidates),
        "judges": [], "unavailable": [], "adversarial": [], "reliability": {},
    }
    # pairs of test-split replies one rater rated differently: who rated and who wrote cancel (book/judges.md)
    one_rater = within_rater_pairs(frame, split="test", seed=seed)
    report["within_rater"] = within_rater_reference(one_rater, resamples, seed)
    changed = sum(strip_instructions(x) != x for x in list(rep["response_a"]) + list(rep["response_b"]))
    report["stripping_changed_clean_replies"] = {"changed": int(changed), "replies": 2 * len(rep)}
    verdict_rows = {pid: {"pair_id": pid} for pid in pd.concat([rep["pair_id"], costly[1]["pair_id"]]).unique()}
    judges = dict(judges or {})
    for kind in v.candidates:
        if kind not in judges:
            try:
                start = time.time()
                judges[kind] = build_judge(kind, cfg, "judge_validation", frame, log=log)
                judges[kind].build_seconds = round(time.time() - start, 1)  # type: ignore[attr-defined]
            except (ImportError, StudyError) as exc:
                report["unavailable"].append({"kind": kind, "reason": str(exc).splitlines()[0]})
                continue
    for kind, judge in judges.items():
        cheap_judge = is_cheap(judge)
        sel_pairs, rep_pairs = cheap if cheap_judge else costly
        log(f"validating {judge.name} on {len(sel_pairs)} selection and {len(rep_pairs)} report pairs ...")
        sel_records = judge.judge(judge_items(sel_pairs))
        cal = _calibrate(judge, sel_records, list(sel_pairs["human"]), v)
        if cal is not None:
            sel_records = cal.pop("records")
        selection = measure(sel_records, sel_pairs, resamples, seed)
        start = time.time()
        items = judge_items(rep_pairs)
        records = judge.judge(items)
        seconds = time.time() - start
        stats = measure(records, rep_pairs, resamples, seed)
        row = {"kind": judge.kind, "name": judge.name, "order_free": judge.order_free, "set": "report",
               "seconds": round(seconds, 1), "pairs_per_second": len(items) / seconds if seconds > 0 else float("nan"),
               **stats, "selection": selection, "calibration": cal, "settings": judge_settings(judge),
               "subsampled": not cheap_judge and len(rep_pairs) < len(rep_all),
               "refused": _refused(selection, v.max_tie_rate)}
        if not cheap_judge:
            row["baselines_same_pairs"] = report["baselines_subsample"]
        if any(r.get("p_a") is not None for r in records):
            report["reliability"][judge.name] = reliability([r.get("p_a") for r in records],
                                                            list(rep_pairs["human"])).to_dict("records")
        training = getattr(judge, "training", None)
        if training:
            row["training"] = training["training"]
            row["cache_folder"] = getattr(judge, "cache_folder", None)
            leaked = set(training["train_dialogue_ids"]) & set(frame.loc[frame["split"] == "test", "dialogue_id"])
            if leaked:  # pragma: no cover - train_pairs_of filters; this guards the cache against stale entries
                raise StudyError(f"{getattr(judge, 'cache_folder', kind)}: this learned judge was trained on "
                                 f"{len(leaked)} test-split dialogue(s); delete it from the cache and re-run")
            row["train_dialogues_in_test_split"] = 0
        row["build_seconds"] = getattr(judge, "build_seconds", None)
        # judges that score each reply alone, and score every test reply in minutes at most
        row["within_rater"], row["within_rater_not_measured"] = None, None
        if not isinstance(judge, ScoreJudge):
            row["within_rater_not_measured"] = "it compares two replies to one speaker"
        elif not cheap_judge:
            row["within_rater_not_measured"] = "scoring every test-split reply would take it minutes"
        elif len(one_rater):
            row["within_rater"] = within_rater_agreement(judge, one_rater, resamples, seed)
        for r, rec in zip(rep_pairs["pair_id"], records):
            verdict_rows[r][kind] = rec["verdict"]
        if changed:
            stripped = InstructionStrippingJudge(judge).judge(items)
            row["accuracy_stripped"] = measure(stripped, rep_pairs, resamples, seed)["accuracy"]
        else:
            row["accuracy_stripped"] = row["accuracy"]
        report["judges"].append(row)
        if len(attacked):
            clean = judge.judge(judge_items(attacked))
            unchanged = all(strip_instructions(x) == x for x in list(attacked["response_a"]) + list(attacked["response_b"]))
            for defense, j in (("none", judge), ("stripping", InstructionStrippingJudge(judge))):
                base_records = clean if defense == "none" or unchanged else j.judge(judge_items(attacked))
                for a in adversarial(j, attacked, list(v.attacks), base_records):
                    report["adversarial"].append({"kind": kind, "name": judge.name, "defense": defense, **a})
    for kind, judge in judges.items():  # free the models before the next stage
        judges[kind] = None  # type: ignore[assignment]
    report["selected"] = select(report)
    report = _plain(report)
    validation_file(run_dir).write_text(json.dumps(report, indent=2))
    with open(paths.results / "judge_validation_verdicts.jsonl", "w", encoding="utf-8") as f:
        for row in verdict_rows.values():
            f.write(json.dumps(row) + "\n")
    return report


def select(report: dict) -> dict | None:
    """The candidate with the highest **selection-set** accuracy (ties half) among those not refused
    (a judge that ties most selection pairs cannot decide), with its **report-set** accuracy and CI
    and how it compares with the baselines measured on the same report pairs."""
    def usable(j):
        sel = j.get("selection") or {"accuracy": j.get("accuracy")}
        return (not j.get("refused") and sel.get("accuracy") is not None and not math.isnan(sel["accuracy"])
                and j.get("accuracy") is not None and not math.isnan(j["accuracy"]))

    scored = [j for j in report["judges"] if usable(j)]
    if not scored:
        return None
    best = max(scored, key=lambda j: (j.get("selection") or j)["accuracy"])
    base = best.get("baselines_same_pairs") or report["baselines"]
    longer = base["longer_wins"]["accuracy"]
    llm = base["llm_wins"]["accuracy"]
    return {"kind": best["kind"], "name": best["name"], "set": "report", "source": "this run's validation",
            "accuracy": best["accuracy"], "ci_low": best["ci_low"], "ci_high": best["ci_high"], "pairs": best["pairs"],
            "selection_accuracy": (best.get("selection") or {}).get("accuracy"),
            "selection_pairs": (best.get("selection") or {}).get("pairs"), "settings": best.get("settings"),
            "longer_wins": longer, "llm_wins": llm,
            "beats_longer_wins": best["accuracy"] > longer, "ci_above_longer_wins": best["ci_low"] > longer,
            "ci_above_chance": best["ci_low"] > 0.5, "tie_rate": best.get("tie_rate"),
            "accuracy_human_vs_llm": best["accuracy_human_vs_llm"],
            "beats_llm_wins": (best["accuracy_human_vs_llm"] or 0) > llm,
            "ci_above_llm_wins": best["ci_low"] > llm}


def judge_from_selection(selected: dict, cfg: StudyConfig) -> Judge:
    """The judge a validation report selected, rebuilt exactly as measured: from the packaged
    measurement's settings, or as this run's candidate with its calibration (temperature, tie band)."""
    from .offline import judge_from_settings

    settings = selected.get("settings") or {}
    if selected.get("source") == "packaged measurement":
        judge = judge_from_settings(settings, batch_size=cfg.judge.batch_size)
        judge.packaged_selection = selected  # type: ignore[attr-defined]
        return judge
    judge = build_judge(selected["kind"], cfg, "judge_validation")
    if settings.get("temperature") is not None and hasattr(judge, "temperature"):
        judge.temperature = settings["temperature"]  # type: ignore[attr-defined]
    if settings.get("tie_margin") and hasattr(judge, "tie_margin"):
        judge.tie_margin = settings["tie_margin"]  # type: ignore[attr-defined]
    if settings.get("tie_band") is not None and isinstance(judge, PairwiseLLMJudge):
        judge.tie_band = settings["tie_band"]
    return judge
