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
from .backends import CachedBackend, LocalBackend, ResponseCache, Sampling, make_backend
from .config import DATA_REPLIERS, StudyConfig
from .data import load_dialogues, read_jsonl, save_jsonl, subsample
from .errors import StudyError
from .judging import Comparison, JudgingOutput, judge_comparisons, judge_validity, make_judge, read_judge_accuracy
from .models import model_label, release_memory
from .paths import cache_dir
from .plotting import comparison_label, save_figure
from .quality import clean_reply
from .training import train_dpo, train_sft  # noqa: F401  (re-exported for notebooks)


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
        teacher = make_backend(cfg.teacher, cache_path=response_cache_path(), dtype=cfg.model.dtype)
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
    del teacher  # the local teacher's model, before the next stage of this process loads its own
    release_memory()
    paths.data.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(sft).save_to_disk(str(paths.sft_data))
    Dataset.from_list(dpo).save_to_disk(str(paths.dpo_data))
    # The test dialogues, with the replies the data holds for them (LLMs-vs-Humans: the human's and
    # the four LLMs'), so those can be judged against the students without being generated.
    columns = ["dialogue_id", "emotion", "situation", "utterance", "reference_reply"]
    columns += [f"response_{s}" for s in DATA_REPLIERS if f"response_{s}" in test]
    test_rows = test[columns].to_dict("records")
    save_jsonl(test_rows, paths.test_data)
    card["counts"]["test_dialogues"] = len(test_rows)
    paths.card.write_text(json.dumps(card, indent=2))
    for folder in (paths.data, paths.sft_data, paths.dpo_data):  # the card travels with each dataset
        (folder / "README.md").write_text(dist.card_markdown(card))
    return card


def run_facts(cfg: StudyConfig) -> dict:
    """Facts about the run that book pages cite (glued by the datasets notebook)."""
    return {
        "run_name": cfg.run.name,
        "student_model": model_label(cfg.model.name_or_path),
        "teacher_model": model_label(cfg.teacher.model) if cfg.teacher.backend == "local" else cfg.teacher.model,
        "data_source": {"embedded-corpus": "the project's embedded corpus",
                        "llms-vs-humans": "LLMs-vs-Humans (Welivita & Pu 2024)"}.get(cfg.data.source, cfg.data.source),
        "params_hash": cfg.params_hash(),
        "seed": cfg.run.seed,
    }


def dataset_statistics(run_dir: str | Path) -> dict:
    """Counts, reply lengths and per-emotion coverage of a run's datasets: a table and a figure."""
    from datasets import load_from_disk

    from .data import ED_EMOTIONS
    from .plotting import dataset_figure

    paths = RunPaths(run_dir)
    sft, dpo = load_from_disk(str(paths.sft_data)), load_from_disk(str(paths.dpo_data))
    rows = [{"kind": f"SFT target: {src}", "words": len(m[-1]["content"].split())}
            for m, src in zip(sft["messages"], sft["target_source"])]
    rows += [{"kind": f"DPO chosen: {src}", "words": len(c[0]["content"].split())}
             for c, src in zip(dpo["chosen"], dpo["chosen_source"])]
    rows += [{"kind": f"DPO rejected: {src}", "words": len(r[0]["content"].split())}
             for r, src in zip(dpo["rejected"], dpo["rejected_source"])]
    lengths = pd.DataFrame(rows)
    table = lengths.groupby("kind", sort=False)["words"].agg(
        count="count", mean="mean", median="median", longest="max",
        over_97_words=lambda w: int((w > 97).sum())).round(1)
    coverage = pd.DataFrame({
        "SFT examples": pd.Series(sft["emotion"]).value_counts(),
        "DPO pairs": pd.Series(dpo["emotion"]).value_counts(),
    }).reindex(sorted(ED_EMOTIONS)).fillna(0).astype(int)
    card = json.loads(paths.card.read_text())
    fig = dataset_figure(lengths, coverage, f"{card['method']}" + (f", {card['strategy']}" if card["strategy"] else ""))
    save_figure(fig, paths.figures / "datasets.png")
    plt.close(fig)
    covered = int(((coverage["SFT examples"] + coverage["DPO pairs"]) > 0).sum())
    return {"lengths": table, "coverage": coverage, "figure": fig, "emotions_covered": covered}


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
        if student in DATA_REPLIERS:
            rows = data_replies(test, student, paths.test_data)
            save_jsonl(rows, paths.generation_file(student))
            summary.append(reply_summary(student, rows))
            continue
        if student == "teacher":
            # The teacher answers like a student (same prompt and token limit), through its own backend.
            backend = make_backend(cfg.teacher, cache_path=response_cache_path(), batch_size=cfg.generation.batch_size,
                                   dtype=cfg.model.dtype)
        else:
            adapter = paths.adapter(student)
            if adapter is not None and not adapter.exists():
                raise StudyError(f"{adapter}: no {student} adapter; run the {student} stage first")
            # Cached like the teacher's replies (the key names the model, the adapter's weights, the prompt and
            # the decoding): the base student answers the same prompts in every run and variant of a profile.
            # One chunk, so the batches are those of an uncached call.
            backend = CachedBackend(LocalBackend(cfg.model.name_or_path, adapter=adapter,
                                                 batch_size=cfg.generation.batch_size, dtype=cfg.model.dtype),
                                    ResponseCache(response_cache_path()), chunk_size=max(1, len(convs)))
        answers = backend.chat(convs, sampling)
        rows = [{"dialogue_id": r["dialogue_id"], "emotion": r["emotion"], "student": student,
                 "reply": clean_reply(a.text), "raw": a.text, "finish_reason": a.finish_reason,
                 "tokens": a.completion_tokens} for r, a in zip(test, answers)]
        save_jsonl(rows, paths.generation_file(student))
        summary.append(reply_summary(student, rows))
        del backend
        release_memory()
    return pd.DataFrame(summary).set_index("student")


def reply_summary(student: str, rows: list[dict]) -> dict:
    """How many replies, how long on average, how many were cut at the token limit or empty."""
    words = [len(x["reply"].split()) for x in rows]
    return {"student": student, "replies": len(rows), "mean words": sum(words) / max(1, len(words)),
            "cut at token limit": sum(x.get("finish_reason") == "length" for x in rows),
            "empty": sum(not x["reply"] for x in rows)}


def data_replies(test: list[dict], author: str, source: Path) -> list[dict]:
    """The replies ``author`` (human, gpt4, ...) wrote for the test dialogues, as the data holds them."""
    key = f"response_{author}"
    missing = [r["dialogue_id"] for r in test if not r.get(key)]
    if missing:
        raise StudyError(f"{source}: no {key} for dialogue {missing[0]!r} ({len(missing)} in all); the {author!r} "
                         "replies exist only in LLMs-vs-Humans; re-run the datasets stage")
    return [{"dialogue_id": r["dialogue_id"], "emotion": r["emotion"], "student": author, "reply": r[key],
             "raw": r[key], "finish_reason": "data", "tokens": None} for r in test]


# -------------------------------------------------------------------------------------- judging
def validate_judges(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Stage validate-judges: every candidate judge against human ratings (judge_validation.py);
    returns the report, its tables, its figure and the sentences the book glues."""
    from .judge_figures import validation_figure
    from .judge_validation import adversarial_table, run_validation, statements, validation_table
    from .presentation import validation_displays

    report = run_validation(cfg, run_dir)
    figure = None
    if report["status"] == "ok" and report["judges"]:
        figure = validation_figure(report)
        save_figure(figure, RunPaths(run_dir).figures / "judge_validation.png")
        plt.close(figure)
    table, adversarial = validation_table(report), adversarial_table(report)
    return {"report": report, "table": table, "adversarial": adversarial, "figure": figure,
            **statements(report, cfg), **validation_displays(report, table, adversarial, figure)}


def _metrics_table(cfg: StudyConfig, paths: RunPaths, test: dict, replies: dict) -> pd.DataFrame:
    """BLEU-4, ROUGE-L, Distinct-1/2 of every student against the test dialogues' reference replies."""
    from .plotting import STUDENT_LABELS

    try:
        from .reference_metrics import reference_metrics

        rows = []
        for student, by_id in replies.items():
            if student == "human":
                continue  # the human replies are the references themselves
            ids = [d for d in test if d in by_id]
            rows.append({"student": STUDENT_LABELS.get(student, student),
                         **reference_metrics([by_id[d] for d in ids], [test[d]["reference_reply"] for d in ids])})
    except ImportError as exc:
        raise StudyError(f"reference metrics need the 'metrics' extra ({exc}): pip install 'empathy-utils[metrics]'") from None
    table = pd.DataFrame(rows).set_index("student").round(2)
    table.to_csv(paths.results / "reference_metrics.csv")
    return table


def judge_students(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Judge every configured comparison on the test dialogues; write verdicts, win rates (W/T/L,
    bootstrap CI, the paper's definition, length-controlled), per-emotion win rates, reference
    metrics and figures. Any student of generation.students can be compared (base, sft, dpo, teacher, and on
    LLMs-vs-Humans the replies of the data: human, gpt4, llama2, gemini, mixtral)."""
    from .judge_figures import emotion_figure

    paths = RunPaths(run_dir)
    test = {r["dialogue_id"]: r for r in read_jsonl(paths.test_data)}
    replies = {}
    for student in cfg.generation.students:
        f = paths.generation_file(student)
        if not f.exists():
            raise StudyError(f"{f}: missing; run the generate stage first")
        replies[student] = {r["dialogue_id"]: r["reply"] for r in read_jsonl(f)}
    judge = judge or make_judge(cfg, run_dir)
    validity = getattr(judge, "validity", None) or judge_validity(cfg, run_dir, judge)
    comparisons = [
        Comparison(candidate, opponent, comparison_label(candidate, opponent),
                   [{"id": did, "context": t["situation"], "utterance": t["utterance"],
                     "response_a": replies[candidate][did], "response_b": replies[opponent][did]} for did, t in test.items()],
                   groups=[t["emotion"] for t in test.values()], group_key="emotion")
        for candidate, opponent in cfg.judge.comparisons]
    out = JudgingOutput(paths.judgment_file, paths.results, paths.figures / "winrates.png",
                        f"Win rates on {len(test)} test dialogues")
    judged = judge_comparisons(comparisons, judge, out, resamples=cfg.judge.bootstrap_resamples,
                               confidence=cfg.judge.confidence, seed=cfg.run.seed,
                               extra={"judge_validated": validity["validated"]})
    per_emotion = judged.per_group
    per_emotion.to_csv(paths.results / "winrates_by_emotion.csv", index=False)
    counts = getattr(getattr(judge, "inner", judge), "score_counts", None)  # a scoring judge's memo (stores)
    (paths.results / "judge.json").write_text(json.dumps({**validity, "scores": counts} if counts else validity,
                                                         indent=2))
    metrics = _metrics_table(cfg, paths, test, replies)
    efig = emotion_figure(per_emotion, judge.name) if len(per_emotion) else None
    if efig is not None:
        save_figure(efig, paths.figures / "winrates_by_emotion.png")
        plt.close(efig)
    return {"results": judged.results, "judge": judge.name, "figure": judged.figure, "test_dialogues": len(test),
            "validity": validity, "accuracy": read_judge_accuracy(run_dir, judge.name), "per_emotion": per_emotion,
            "emotion_figure": efig, "metrics": metrics}


# Kept importable from here for callers written before the split (tests, scripts, the CLI); they
# live in judging, presentation and variants now.
from .presentation import (  # noqa: E402,F401
    card_table, emotion_table, judge_glue_values, lc_statement, training_table, validation_glue_values,
    variants_table, winrate_table,
)
from .variants import construction_effect, run_variants  # noqa: E402,F401
