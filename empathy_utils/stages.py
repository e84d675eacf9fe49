"""The study's stages as plain functions: each takes the run's config and folder, writes its
artifacts there and returns a small summary that the stage notebook displays and glues.

datasets -> sft -> dpo -> generate -> judge. Notebooks call these; so do tests and scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import distillation as dist
from .artifacts import RunPaths
from .backends import CachedBackend, LocalBackend, Sampling, make_backend
from .config import StudyConfig
from .data import load_dialogues, subsample
from .errors import StudyError
from .judges import PairwiseLLMJudge, position_consistency
from .models import model_label
from .paths import cache_dir
from .plotting import comparison_label, save_figure, winrate_figure
from .quality import clean_reply
from .training import quiet_libraries, train_dpo, train_sft  # noqa: F401  (re-exported for notebooks)
from .winrate import summarize

quiet_libraries()


def response_cache_path() -> Path:
    """One cache for all runs: keys include backend, model, prompt and sampling, so sharing is safe."""
    return cache_dir() / "responses.sqlite"


def teacher_label(cfg: StudyConfig) -> str:
    if cfg.teacher.backend == "local":
        return f"the local teacher ({model_label(cfg.teacher.model)}, run on this machine)"
    return f"API teacher {cfg.teacher.model} at {cfg.teacher.base_url}"


# ------------------------------------------------------------------------------------ datasets
def split_dialogues(cfg: StudyConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    frame = load_dialogues(cfg.data.source, cfg.data.data_dir or None)
    train = subsample(frame[frame["split"] == "train"], cfg.data.train_rows, cfg.run.seed)
    test = subsample(frame[frame["split"] == "test"], cfg.data.test_rows, cfg.run.seed)
    source = {"name": cfg.data.source, "file": Path(frame.attrs["source_file"]).name, "sha256": frame.attrs["sha256"],
              "rows": len(frame), "train_rows_used": len(train), "test_rows_used": len(test)}
    return train, test, source


def build_datasets(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Build the SFT examples and DPO pairs of the configured method; save them with a card."""
    from datasets import Dataset

    paths = RunPaths(run_dir)
    train, test, source = split_dialogues(cfg)
    d = cfg.dataset
    log = None
    teacher = None
    teacher_name = None
    if d.method == "direct":
        sft, dpo = dist.direct_distillation(train, d.source_llm, d.construction)
    else:
        teacher = make_backend(cfg.teacher, cache_path=response_cache_path())
        teacher_name = teacher_label(cfg)
        sampling = Sampling(cfg.teacher.max_new_tokens, cfg.teacher.temperature, seed=cfg.run.seed)
        log = dist.TeacherLog(on_truncated=cfg.teacher.on_truncated)
        if d.method == "improve-human":
            sft, dpo = dist.improve_human(train, teacher, d.strategy, sampling, log)
        else:
            sft, dpo = dist.improve_initial(train, teacher, d.strategy, d.construction, sampling, log,
                                            d.sft_share, cfg.run.seed)
    dist.check_not_empty(sft, dpo, f"dataset {d.method}/{d.strategy}")
    card = dist.describe(d.method, d.strategy, d.construction, d.source_llm, teacher_name, sft, dpo, log, source)
    if log is not None and isinstance(teacher, CachedBackend):
        card["teacher_output"]["cache"] = {"new_calls": teacher.stats.new_calls,
                                           "answered_from_cache": teacher.stats.from_cache}
    paths.data.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(sft).save_to_disk(str(paths.sft_data))
    Dataset.from_list(dpo).save_to_disk(str(paths.dpo_data))
    test_rows = test[["dialogue_id", "emotion", "situation", "utterance", "reference_reply"]].to_dict("records")
    dist.save_jsonl(test_rows, paths.test_data)
    card["counts"]["test_dialogues"] = len(test_rows)
    paths.card.write_text(json.dumps(card, indent=2))
    (paths.data / "README.md").write_text(dist.card_markdown(card))
    return card


def run_facts(cfg: StudyConfig) -> dict:
    """Facts about the run that book pages cite (glued by the datasets notebook)."""
    return {
        "run_name": cfg.run.name,
        "student_model": model_label(cfg.model.name_or_path),
        "teacher_model": model_label(cfg.teacher.model) if cfg.teacher.backend == "local" else cfg.teacher.model,
        "data_source": {"embedded-corpus": "the project's embedded corpus",
                        "llms-vs-humans": "LLMs-vs-Humans (Welivita & Pu 2024)"}[cfg.data.source],
        "params_hash": cfg.params_hash(),
        "seed": cfg.run.seed,
    }


def card_table(card: dict) -> pd.DataFrame:
    rows = [
        ("method", card["method"]),
        ("strategy", card["strategy"] or "—"),
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


def example_rows(run_dir: str | Path, cfg: StudyConfig, n: int = 3) -> pd.DataFrame | None:
    """A few DPO pairs to read — only for the project's own corpus. Research data is never shown."""
    if cfg.data.source != "embedded-corpus":
        return None
    from datasets import load_from_disk

    pairs = load_from_disk(str(RunPaths(run_dir).dpo_data))
    rows = [{"dialogue": p["dialogue_id"], "chosen": p["chosen"][0]["content"], "rejected": p["rejected"][0]["content"],
             "chosen from": p["chosen_source"], "rejected from": p["rejected_source"]} for p in pairs.select(range(min(n, len(pairs))))]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- generation
def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def generate_replies(cfg: StudyConfig, run_dir: str | Path) -> pd.DataFrame:
    """Every configured student answers every test dialogue with P0 in its chat template (batched)."""
    paths = RunPaths(run_dir)
    if not paths.test_data.exists():
        raise StudyError(f"{paths.test_data}: missing; run the datasets stage first")
    test = read_jsonl(paths.test_data)
    convs = [dist.base_prompt_messages(r) for r in test]
    sampling = Sampling(cfg.generation.max_new_tokens, cfg.generation.temperature, seed=cfg.run.seed)
    summary = []
    for student in cfg.generation.students:
        adapter = paths.adapter(student)
        if adapter is not None and not adapter.exists():
            raise StudyError(f"{adapter}: no {student} adapter; run the {student} stage first")
        backend = LocalBackend(cfg.model.name_or_path, adapter=adapter, batch_size=cfg.generation.batch_size)
        answers = backend.chat(convs, sampling)
        rows = [{"dialogue_id": r["dialogue_id"], "emotion": r["emotion"], "student": student,
                 "reply": clean_reply(a.text), "raw": a.text, "finish_reason": a.finish_reason,
                 "tokens": a.completion_tokens} for r, a in zip(test, answers)]
        dist.save_jsonl(rows, paths.generation_file(student))
        words = [len(x["reply"].split()) for x in rows]
        summary.append({"student": student, "replies": len(rows), "mean words": sum(words) / max(1, len(words)),
                        "cut at token limit": sum(x["finish_reason"] == "length" for x in rows),
                        "empty": sum(not x["reply"] for x in rows)})
        del backend
    return pd.DataFrame(summary).set_index("student")


# -------------------------------------------------------------------------------------- judging
def make_judge(cfg: StudyConfig) -> PairwiseLLMJudge:
    backend = make_backend(cfg.judge, batch_size=cfg.judge.batch_size)
    return PairwiseLLMJudge(backend, mode=cfg.judge.verdict)


def judge_students(cfg: StudyConfig, run_dir: str | Path, judge: PairwiseLLMJudge | None = None) -> dict:
    """Judge every configured comparison on the test dialogues; write verdicts, win rates and a figure."""
    paths = RunPaths(run_dir)
    test = {r["dialogue_id"]: r for r in read_jsonl(paths.test_data)}
    replies = {}
    for student in cfg.generation.students:
        f = paths.generation_file(student)
        if not f.exists():
            raise StudyError(f"{f}: missing; run the generate stage first")
        replies[student] = {r["dialogue_id"]: r["reply"] for r in read_jsonl(f)}
    judge = judge or make_judge(cfg)
    rows = []
    consistency = {}
    for candidate, opponent in cfg.judge.comparisons:
        items = [{"id": did, "context": t["situation"], "utterance": t["utterance"],
                  "response_a": replies[candidate][did], "response_b": replies[opponent][did]} for did, t in test.items()]
        records = judge.judge(items)
        for rec, it in zip(records, items):
            rec["emotion"] = test[it["id"]]["emotion"]
        dist.save_jsonl(records, paths.judgment_file(candidate, opponent))
        stats = summarize([r["verdict"] for r in records], cfg.judge.bootstrap_resamples, cfg.judge.confidence,
                          cfg.run.seed)
        consistency[f"{candidate}_vs_{opponent}"] = position_consistency(records)
        rows.append({"candidate": candidate, "opponent": opponent, "comparison": comparison_label(candidate, opponent),
                     **stats, "position_consistency": consistency[f"{candidate}_vs_{opponent}"], "judge": judge.name})
    results = pd.DataFrame(rows)
    paths.results.mkdir(parents=True, exist_ok=True)
    results.to_csv(paths.results / "winrates.csv", index=False)
    (paths.results / "winrates.json").write_text(json.dumps(rows, indent=2))
    fig = winrate_figure(results, judge.name, title=f"Win rates on {len(test)} test dialogues")
    save_figure(fig, paths.figures / "winrates.png")
    plt.close(fig)  # shown once, where the notebook displays it
    return {"results": results, "judge": judge.name, "figure": fig, "test_dialogues": len(test)}


def winrate_table(results: pd.DataFrame) -> pd.DataFrame:
    """The win-rate table as the book shows it (percentages, CI, counts); the caller names the judge
    in the caption (every row of one table comes from the same judge)."""
    def pct(x):
        return "—" if pd.isna(x) else f"{100 * x:.1f} %"

    out = pd.DataFrame({
        "comparison": results["comparison"],
        "win rate (ties ½)": results["win_rate"].map(pct),
        f"{round(100 * results['confidence'].iloc[0])} % CI": [
            f"{pct(lo)} – {pct(hi)}" for lo, hi in zip(results["ci_low"], results["ci_high"])],
        "paper's rate (wins ÷ all)": results["paper_win_rate"].map(pct),
        "W / T / L": [f"{w} / {t} / {l}" for w, t, l in zip(results["wins"], results["ties"], results["losses"])],
        "unparsed": results["unparsed"],
        "orders agree": results["position_consistency"].map(pct),
    })
    return out.set_index("comparison")


def training_table(summary: dict) -> pd.DataFrame:
    """A training summary (from train_sft / train_dpo) as a two-column table."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else v

    return pd.DataFrame([(k.replace("_", " "), fmt(v)) for k, v in summary.items() if v is not None],
                        columns=["", "value"]).set_index("")
