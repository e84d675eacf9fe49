"""The method x strategy grid: every variant of ``variants.runs`` built, trained and judged exactly
like the run's own dataset (same student, test dialogues and judge), so differences come from the
data alone. Each variant lives in ``<run>/variants/<name>/``."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .artifacts import JsonStamp, RunPaths, reuse_or_build
from .config import StudyConfig
from .data import read_jsonl
from .errors import StudyError
from .models import release_memory
from .plotting import save_figure

METHOD_SHORT = {"direct": "M1 direct", "improve-human": "M2 improve human", "improve-initial": "M3 improve initial"}


def _variant_row(name: str, cfg: StudyConfig, card: dict, results: pd.DataFrame, judge_name: str) -> dict:
    row = {"variant": name, "method": METHOD_SHORT[cfg.dataset.method],
           "strategy": cfg.dataset.strategy if cfg.dataset.method != "direct" else "—",
           "construction": cfg.dataset.construction,
           "source": (f"rated replies of {card.get('source_llm')}" if cfg.dataset.method == "direct"
                      else card.get("teacher") or ""),
           "sft_examples": card["counts"]["sft_examples"], "dpo_pairs": card["counts"]["dpo_pairs"],
           "judge": judge_name}
    for _, r in results.iterrows():
        for key in ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses"):
            value = r[key]
            row[f"{r['candidate']}_{key}"] = value.item() if hasattr(value, "item") else value
    return row


def _build_variant(cfg: StudyConfig, vcfg: StudyConfig, name: str, paths: RunPaths, root: Path) -> None:
    """Data, training and replies of one variant, from scratch (its record starts afresh: a variant
    trained anew must be judged anew)."""
    from .stages import build_datasets, generate_replies, train_dpo, train_sft

    vpaths = RunPaths(root)
    vpaths.root.mkdir(parents=True, exist_ok=True)
    (vpaths.root / "variant.json").write_text("{}")
    vpaths.params.write_text(json.dumps(vcfg.to_dict(), indent=2))
    build_datasets(vcfg, vpaths.root)
    same_test = [r["dialogue_id"] for r in read_jsonl(vpaths.test_data)] == \
                [r["dialogue_id"] for r in read_jsonl(paths.test_data)]
    if not same_test:
        raise StudyError(f"variant {name}: its test dialogues differ from the run's")
    train_sft(vcfg, vpaths.root)
    if "dpo" in cfg.variants.students:
        train_dpo(vcfg, vpaths.root)
    generate_replies(vcfg, vpaths.root)


def _judge_variant(cfg: StudyConfig, vcfg: StudyConfig, name: str, paths: RunPaths, judge, root: Path) -> dict:
    """The variant's students against the run's opponent; its row of the grid, kept in variant.json."""
    from .stages import judge_students

    vpaths = RunPaths(root)
    shutil.copy2(paths.generation_file(cfg.variants.opponent), vpaths.generation_file(cfg.variants.opponent))
    vcfg.generation.students = list(cfg.variants.students) + [cfg.variants.opponent]
    vcfg.judge.comparisons = [[s, cfg.variants.opponent] for s in cfg.variants.students]
    report = judge_students(vcfg, vpaths.root, judge=judge)
    card = json.loads(vpaths.card.read_text())
    row = _variant_row(name, vcfg, card, report["results"], report["judge"])
    record = vpaths.root / "variant.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "row": row}, indent=2))
    return row


def run_variants(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Build, train and judge every variant of ``variants.runs`` against the run's own opponent
    student (default: the base student), on the same test dialogues with the same judge.

    Every variant is built first, then all are judged: the judge's model is not held while variants
    train. A variant is rebuilt only when what it was built from changed (the generate stage's hash of its
    settings), and re-judged only when the judge settings changed (the judge stage's hash)."""
    from .config import variant_config
    from .judging import make_judge, read_judge_accuracy
    from .plotting import variants_figure
    from .runner import stage_hashes

    paths = RunPaths(run_dir)
    opponent_file = paths.generation_file(cfg.variants.opponent)
    if not opponent_file.exists():
        raise StudyError(f"{opponent_file}: missing; run the generate stage first")
    main_results = pd.DataFrame(json.loads((paths.results / "winrates.json").read_text()))
    main_card = json.loads(paths.card.read_text())
    rows = [_variant_row("this run", cfg, main_card,
                         main_results[main_results["opponent"] == cfg.variants.opponent], main_results["judge"].iloc[0])]
    built = []
    for variant in cfg.variants.runs:
        vcfg = variant_config(cfg, variant)
        vcfg.generation.students = list(cfg.variants.students)
        hashes = stage_hashes(vcfg)
        root = paths.root / "variants" / variant["name"]
        reuse_or_build(root, hashes["generate"], partial(_build_variant, cfg, vcfg, variant["name"], paths),
                       stamp=JsonStamp(root / "variant.json", "trained"))
        release_memory()  # one process builds variant after variant: free each one's memory before the next
        built.append((variant["name"], vcfg, hashes["judge"], root))
    # The judge's model is loaded once every variant is built, so that no variant's training holds it too.
    judge = judge or make_judge(cfg, run_dir)
    for name, vcfg, judge_hash, root in built:
        record = root / "variant.json"
        row, _ = reuse_or_build(root, judge_hash, partial(_judge_variant, cfg, vcfg, name, paths, judge),
                                stamp=JsonStamp(record, "judged"), load=lambda _, r=record: json.loads(r.read_text())["row"])
        rows.append(row)
    table = pd.DataFrame(rows)
    paths.results.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.results / "variants.csv", index=False)
    candidate = "dpo" if "dpo" in cfg.variants.students else cfg.variants.students[0]
    fig = variants_figure(table, candidate, cfg.variants.opponent, table["judge"].iloc[0])
    save_figure(fig, paths.figures / "variants.png")
    plt.close(fig)
    return {"table": table, "figure": fig, "candidate": candidate, "judge": table["judge"].iloc[0],
            "accuracy": read_judge_accuracy(run_dir, table["judge"].iloc[0])}


def construction_effect(table: pd.DataFrame, candidate: str = "dpo") -> pd.DataFrame:
    """Pairs of datasets that differ only in construction mode: rows and win rate, faithful vs corrected."""
    keyed = table.set_index(["method", "strategy", "source", "construction"])
    out = []
    for (method, strategy, source), group in table.groupby(["method", "strategy", "source"]):
        modes = set(group["construction"])
        if {"faithful", "corrected"} <= modes:
            f = keyed.loc[(method, strategy, source, "faithful")]
            c = keyed.loc[(method, strategy, source, "corrected")]
            out.append({"method": method, "strategy": strategy,
                        "DPO pairs (faithful)": int(f["dpo_pairs"]), "DPO pairs (corrected)": int(c["dpo_pairs"]),
                        "win rate (faithful)": f.get(f"{candidate}_win_rate"),
                        "win rate (corrected)": c.get(f"{candidate}_win_rate")})
    return pd.DataFrame(out)
