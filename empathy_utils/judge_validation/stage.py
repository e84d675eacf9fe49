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
from ..judges import InstructionStrippingJudge, Judge, LikelihoodJudge, PairwiseLLMJudge, strip_instructions
from ..paths import DATA_ENV
from .learned import learned_judge
from .measurement import adversarial, baselines, full_set_baselines, measure
from .pairs import judge_items, rating_pairs, sample_pairs


def build_judge(kind: str, cfg: StudyConfig, section: str = "judge_validation", frame: pd.DataFrame | None = None,
                log=print) -> Judge:
    """A judge of ``kind`` as the ``judge_validation`` section (validated candidates) or the
    ``judge`` section (a judge named in judge.kind or the fallback) describes it."""
    from ..backends import make_backend

    s = cfg.judge_validation if section == "judge_validation" else cfg.judge
    if kind == "pairwise-llm":
        return PairwiseLLMJudge(make_backend(s, batch_size=s.batch_size), mode=s.verdict)
    if kind == "likelihood":
        spec = cfg.judge_validation.scorer_model if section == "judge_validation" else cfg.judge.model
        return LikelihoodJudge(spec, batch_size=s.batch_size, condition=cfg.judge_validation.likelihood_condition)
    if kind in ("embedding-head", "reward-model"):
        if frame is None:
            frame = load_validation_data(cfg)
            if frame is None:
                raise DataError(f"judge.kind {kind!r} is trained on LLMs-vs-Humans ratings, and no research data "
                                f"directory is set; set {DATA_ENV} (or data.data_dir), or use judge.kind auto")
        return learned_judge(kind, frame, cfg.judge_validation, cfg.run.seed, log=log)
    raise StudyError(f"unknown judge kind {kind!r}")


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
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def validation_file(run_dir: str | Path) -> Path:
    return RunPaths(run_dir).results / "judge_validation.json"


def read_validation(run_dir: str | Path) -> dict | None:
    f = validation_file(run_dir)
    return json.loads(f.read_text()) if f.exists() else None


def run_validation(cfg: StudyConfig, run_dir: str | Path, judges: dict[str, Judge] | None = None, log=print) -> dict:
    """The validate-judges stage: measure every candidate, pick the best, write
    ``results/judge_validation.json`` (aggregates only — no text of the research data) and the
    per-pair verdicts (pair ids and verdicts). ``judges`` replaces candidates (tests)."""
    v = cfg.judge_validation
    paths = RunPaths(run_dir)
    paths.results.mkdir(parents=True, exist_ok=True)
    frame = load_validation_data(cfg)
    if frame is None:
        report = {"status": "no-data", "candidates": list(v.candidates), "judges": [], "adversarial": [],
                  "selected": None,
                  "reason": f"no research data directory was set ({DATA_ENV} or data.data_dir), so LLMs-vs-Humans "
                            "ratings were not available to this run"}
        validation_file(run_dir).write_text(json.dumps(report, indent=2))
        return report
    seed = cfg.run.seed
    all_test = rating_pairs(frame, "test", seed)
    pairs = sample_pairs(all_test, v.test_pairs, seed)
    base = baselines(pairs, v.bootstrap_resamples, seed)
    attacked_idx = sorted(np.random.default_rng(seed).choice(len(pairs), min(v.adversarial_pairs, len(pairs)),
                                                             replace=False).tolist())
    attacked = pairs.iloc[attacked_idx].reset_index(drop=True)
    report = {
        "status": "ok",
        "data": {"file": Path(frame.attrs["source_file"]).name, "sha256": frame.attrs["sha256"],
                 "test_dialogues_all": int((frame["split"] == "test").sum()), "test_pairs_all": len(all_test),
                 "test_dialogues": int(pairs["dialogue_id"].nunique()), "test_pairs": len(pairs),
                 "human_vs_llm_pairs": base["llm_wins"]["pairs"], "adversarial_pairs": len(attacked)},
        "full_set": full_set_baselines(frame),
        "baselines": base,
        "candidates": list(v.candidates),
        "judges": [], "unavailable": [], "adversarial": [],
    }
    items = judge_items(pairs)
    changed = sum(strip_instructions(x) != x for x in list(pairs["response_a"]) + list(pairs["response_b"]))
    report["stripping_changed_clean_replies"] = {"changed": int(changed), "replies": 2 * len(pairs)}
    verdict_rows = {pid: {"pair_id": pid} for pid in pairs["pair_id"]}
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
        log(f"validating {judge.name} on {len(pairs)} pairs ...")
        start = time.time()
        records = judge.judge(items)
        seconds = time.time() - start
        stats = measure(records, pairs, v.bootstrap_resamples, seed)
        row = {"kind": judge.kind, "name": judge.name, "order_free": judge.order_free, "seconds": round(seconds, 1),
               "pairs_per_second": len(items) / seconds if seconds > 0 else float("nan"), **stats}
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
        for r, rec in zip(pairs["pair_id"], records):
            verdict_rows[r][kind] = rec["verdict"]
        if changed:
            stripped = InstructionStrippingJudge(judge).judge(items)
            row["accuracy_stripped"] = measure(stripped, pairs, v.bootstrap_resamples, seed)["accuracy"]
        else:
            row["accuracy_stripped"] = row["accuracy"]
        report["judges"].append(row)
        if len(attacked):
            clean = [records[i] for i in attacked_idx]
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
    """The candidate with the highest accuracy (ties half) on the validation pairs, and how it
    compares with the baselines measured on the same pairs."""
    scored = [j for j in report["judges"] if j.get("accuracy") is not None and not math.isnan(j["accuracy"])]
    if not scored:
        return None
    best = max(scored, key=lambda j: j["accuracy"])
    longer = report["baselines"]["longer_wins"]["accuracy"]
    llm = report["baselines"]["llm_wins"]["accuracy"]
    return {"kind": best["kind"], "name": best["name"], "accuracy": best["accuracy"], "ci_low": best["ci_low"],
            "ci_high": best["ci_high"], "pairs": best["pairs"],
            "beats_longer_wins": best["accuracy"] > longer, "ci_above_longer_wins": best["ci_low"] > longer,
            "ci_above_chance": best["ci_low"] > 0.5, "tie_rate": best.get("tie_rate"),
            "accuracy_human_vs_llm": best["accuracy_human_vs_llm"],
            "beats_llm_wins": (best["accuracy_human_vs_llm"] or 0) > llm}
