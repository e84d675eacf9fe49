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
from .config import DATA_REPLIERS, StudyConfig
from .data import load_dialogues, read_jsonl, save_jsonl, subsample
from .errors import StudyError
from .judges import position_consistency
from .models import model_label
from .paths import cache_dir
from .plotting import comparison_label, save_figure
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
            backend = make_backend(cfg.teacher, cache_path=response_cache_path(), batch_size=cfg.generation.batch_size)
        else:
            adapter = paths.adapter(student)
            if adapter is not None and not adapter.exists():
                raise StudyError(f"{adapter}: no {student} adapter; run the {student} stage first")
            backend = LocalBackend(cfg.model.name_or_path, adapter=adapter, batch_size=cfg.generation.batch_size)
        answers = backend.chat(convs, sampling)
        rows = [{"dialogue_id": r["dialogue_id"], "emotion": r["emotion"], "student": student,
                 "reply": clean_reply(a.text), "raw": a.text, "finish_reason": a.finish_reason,
                 "tokens": a.completion_tokens} for r, a in zip(test, answers)]
        save_jsonl(rows, paths.generation_file(student))
        summary.append(reply_summary(student, rows))
        del backend
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

    report = run_validation(cfg, run_dir)
    figure = None
    if report["status"] == "ok" and report["judges"]:
        figure = validation_figure(report)
        save_figure(figure, RunPaths(run_dir).figures / "judge_validation.png")
        plt.close(figure)
    from IPython.display import HTML

    table = validation_table(report)
    adversarial = adversarial_table(report)
    said = statements(report, cfg)
    caption = ("Candidate judges and baselines against human ratings (LLMs-vs-Humans test split)"
               if report["status"] == "ok" else "Candidate judges: nothing measured in this run")
    return {"report": report, "table": table, "adversarial": adversarial, "figure": figure, **said,
            # What the book shows, whether or not anything was measured (the same glue keys either way).
            "table_display": table.style.set_caption(caption),
            # (HTML, not Markdown: pasted into another page, a Markdown output would show as its text/plain.)
            "figure_display": figure if figure is not None else HTML(
                "<p><em>No figure: nothing was measured in this run.</em></p>"),
            "adversarial_display": (adversarial.style.set_caption(
                "Flip rate of injected instructions (flips / verdicts that could flip), by judge and defense")
                if adversarial is not None else HTML("<p><em>No table: no injected-instruction check was run.</em></p>"))}


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


def judge_validity(cfg: StudyConfig, run_dir: str | Path | None, judge) -> dict:
    """What this run measured about ``judge``: found by its name among the validated candidates."""
    from .judge_validation import KIND_LABELS, read_validation
    from .judges import InstructionStrippingJudge, base_judge

    report = read_validation(run_dir or cfg.run_dir) if (run_dir or cfg.run_dir) else None
    inner = base_judge(judge)
    stripped = isinstance(judge, InstructionStrippingJudge)
    out = {"kind": judge.kind, "name": judge.name, "validated": False, "accuracy": None, "ci_low": None,
           "ci_high": None, "pairs": None, "longer_wins": None}
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
    out.update(validated=True, accuracy=acc, ci_low=row["ci_low"], ci_high=row["ci_high"], pairs=row["pairs"],
               longer_wins=base["longer_wins"]["accuracy"])
    compare = "above" if acc > base["longer_wins"]["accuracy"] else "not above"
    out["statement"] = (
        f"Validated in this run against people: it agreed with the human ratings on {100 * acc:.1f} % of "
        f"{row['pairs']} LLMs-vs-Humans test-split pairs (95 % CI {100 * row['ci_low']:.1f} % – "
        f"{100 * row['ci_high']:.1f} %), {compare} the {100 * base['longer_wins']['accuracy']:.1f} % of "
        f"\u201cthe longer reply wins\u201d on the same pairs.")
    return out


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
    from .judge_figures import emotion_figure, winrate_figure
    from .judges import word_count
    from .winrate import by_group, length_controlled

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
    rows, emotion_rows = [], []
    resamples, confidence, seed = cfg.judge.bootstrap_resamples, cfg.judge.confidence, cfg.run.seed
    for candidate, opponent in cfg.judge.comparisons:
        items = [{"id": did, "context": t["situation"], "utterance": t["utterance"],
                  "response_a": replies[candidate][did], "response_b": replies[opponent][did]} for did, t in test.items()]
        records = judge.judge(items)
        for rec, it in zip(records, items):
            rec.update(emotion=test[it["id"]]["emotion"], words_a=word_count(it["response_a"]),
                       words_b=word_count(it["response_b"]))
        save_jsonl(records, paths.judgment_file(candidate, opponent))
        verdicts = [r["verdict"] for r in records]
        stats = summarize(verdicts, resamples, confidence, seed)
        lc = length_controlled(verdicts, [r["words_a"] - r["words_b"] for r in records], resamples, confidence, seed)
        label = comparison_label(candidate, opponent)
        rows.append({"candidate": candidate, "opponent": opponent, "comparison": label, **stats, **lc,
                     "position_consistency": position_consistency(records), "judge": judge.name,
                     "judge_kind": judge.kind, "judge_validated": validity["validated"]})
        for emotion, g in by_group(verdicts, [r["emotion"] for r in records]).items():
            emotion_rows.append({"comparison": label, "candidate": candidate, "opponent": opponent,
                                 "emotion": emotion, **g})
    results = pd.DataFrame(rows)
    per_emotion = pd.DataFrame(emotion_rows)
    paths.results.mkdir(parents=True, exist_ok=True)
    results.to_csv(paths.results / "winrates.csv", index=False)
    (paths.results / "winrates.json").write_text(json.dumps(rows, indent=2))
    per_emotion.to_csv(paths.results / "winrates_by_emotion.csv", index=False)
    (paths.results / "judge.json").write_text(json.dumps(validity, indent=2))
    metrics = _metrics_table(cfg, paths, test, replies)
    fig = winrate_figure(results, judge.name, title=f"Win rates on {len(test)} test dialogues")
    save_figure(fig, paths.figures / "winrates.png")
    plt.close(fig)  # shown once, where the notebook displays it
    efig = emotion_figure(per_emotion, judge.name) if len(per_emotion) else None
    if efig is not None:
        save_figure(efig, paths.figures / "winrates_by_emotion.png")
        plt.close(efig)
    return {"results": results, "judge": judge.name, "figure": fig, "test_dialogues": len(test),
            "validity": validity, "per_emotion": per_emotion, "emotion_figure": efig, "metrics": metrics}


def lc_statement(row) -> str:
    """The length-controlled win rate of one comparison as a phrase, or why it was not estimated."""
    rate = row.get("lc_win_rate")
    if rate is None or pd.isna(rate):
        return row.get("lc_note") or "not estimated"
    return f"{100 * rate:.1f} % (bootstrap CI {100 * row['lc_ci_low']:.1f} % – {100 * row['lc_ci_high']:.1f} %)"


def judge_glue_values(report: dict) -> dict:
    """Values the judge notebook glues besides glue_winrates: the length-controlled win rates, the
    judge's validity and how it was chosen, and a sentence on position bias."""
    results, validity = report["results"], report["validity"]
    values = {"judge_kind": validity["kind"], "judge_validity": validity["statement"],
              "judge_how_chosen": validity.get("how_chosen", "passed in by the caller"),
              "judge_validated": "yes" if validity["validated"] else "no"}
    for _, r in results.iterrows():
        prefix = f"{r['candidate']}_vs_{r['opponent']}_"
        values.update({prefix + k: r[k] for k in ("lc_win_rate", "lc_ci_low", "lc_ci_high", "length_slope")})
        values[prefix + "lc_statement"] = lc_statement(r)
    first = results.iloc[0] if len(results) else None
    if first is None:
        values["position_statement"] = "No comparison was judged."
    elif first["position_consistency"] is None or pd.isna(first["position_consistency"]):
        values["position_statement"] = ("This judge scores each reply on its own, so the order in which two replies "
                                        "are shown cannot change its verdict.")
    else:
        values["position_statement"] = (
            f"This judge sees each pair in both orders; on the {first['comparison']} pairs the two orders agreed "
            f"{100 * first['position_consistency']:.0f} % of the time, and every disagreement became a tie. A judge that "
            "mostly follows position rather than content produces mostly ties, and a win rate near 50 % then says more "
            "about the judge than about the students.")
    return values


def winrate_table(results: pd.DataFrame) -> pd.DataFrame:
    """The win-rate table as the book shows it (percentages, CI, counts, the paper's definition, the
    length-controlled rate); the caller names the judge in the caption (one judge per table)."""
    def pct(x):
        return "—" if x is None or pd.isna(x) else f"{100 * x:.1f} %"

    out = pd.DataFrame({
        "comparison": results["comparison"],
        "win rate (ties ½)": results["win_rate"].map(pct),
        f"{round(100 * results['confidence'].iloc[0])} % CI": [
            f"{pct(lo)} – {pct(hi)}" for lo, hi in zip(results["ci_low"], results["ci_high"])],
        "paper's rate (wins ÷ all)": results["paper_win_rate"].map(pct),
        "length-controlled": results["lc_win_rate"].map(pct) if "lc_win_rate" in results else "—",
        "W / T / L": [f"{w} / {t} / {n}" for w, t, n in zip(results["wins"], results["ties"], results["losses"])],
        "unparsed": results["unparsed"],
        "orders agree": [pct(x) if x is not None and not pd.isna(x) else "order-free"
                         for x in results["position_consistency"]],
    })
    return out.set_index("comparison")


def emotion_table(per_emotion: pd.DataFrame) -> pd.DataFrame:
    """Per-emotion win rates (ties ½) with the number of dialogues, one column per comparison."""
    if per_emotion is None or not len(per_emotion):
        return pd.DataFrame()
    cells = [f"{100 * w:.0f} % (n={n})" if not pd.isna(w) else f"— (n={n})"
             for w, n in zip(per_emotion["win_rate"], per_emotion["n"])]
    table = per_emotion.assign(cell=cells).pivot(index="emotion", columns="comparison", values="cell")
    table.columns.name = None
    return table[list(dict.fromkeys(per_emotion["comparison"]))]


def training_table(summary: dict) -> pd.DataFrame:
    """A training summary (from train_sft / train_dpo) as a two-column table."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else v

    return pd.DataFrame([(k.replace("_", " "), fmt(v)) for k, v in summary.items() if v is not None],
                        columns=["", "value"]).set_index("")


# ------------------------------------------------------------------------------------- variants
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


def run_variants(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Build, train and judge every variant of ``variants.runs`` against the run's own opponent
    student (default: the base student), on the same test dialogues with the same judge.

    Each variant lives in ``<run>/variants/<name>/`` with its own params, dataset card, adapters,
    replies and verdicts. A variant is rebuilt only when what it was built from changed, and
    re-judged only when the judge settings changed."""
    import shutil

    from .config import variant_config
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
    judge = judge or make_judge(cfg, run_dir)
    for variant in cfg.variants.runs:
        vcfg = variant_config(cfg, variant)
        vcfg.generation.students = list(cfg.variants.students)
        hashes = stage_hashes(vcfg)
        vpaths = RunPaths(paths.root / "variants" / variant["name"])
        record_file = vpaths.root / "variant.json"
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
        if record.get("trained") != hashes["generate"]:
            # Data, training or generation changed: rebuild this variant from scratch.
            vpaths.root.mkdir(parents=True, exist_ok=True)
            vpaths.params.write_text(json.dumps(vcfg.to_dict(), indent=2))
            build_datasets(vcfg, vpaths.root)
            same_test = [r["dialogue_id"] for r in read_jsonl(vpaths.test_data)] == \
                        [r["dialogue_id"] for r in read_jsonl(paths.test_data)]
            if not same_test:
                raise StudyError(f"variant {variant['name']}: its test dialogues differ from the run's")
            train_sft(vcfg, vpaths.root)
            if "dpo" in cfg.variants.students:
                train_dpo(vcfg, vpaths.root)
            generate_replies(vcfg, vpaths.root)
            record = {"trained": hashes["generate"]}
            record_file.write_text(json.dumps(record, indent=2))
        if record.get("judged") != hashes["judge"] or "row" not in record:
            shutil.copy2(opponent_file, vpaths.generation_file(cfg.variants.opponent))
            vcfg.generation.students = list(cfg.variants.students) + [cfg.variants.opponent]
            vcfg.judge.comparisons = [[s, cfg.variants.opponent] for s in cfg.variants.students]
            report = judge_students(vcfg, vpaths.root, judge=judge)
            card = json.loads(vpaths.card.read_text())
            record.update(judged=hashes["judge"],
                          row=_variant_row(variant["name"], vcfg, card, report["results"], report["judge"]))
            record_file.write_text(json.dumps(record, indent=2))
        rows.append(record["row"])
    table = pd.DataFrame(rows)
    paths.results.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.results / "variants.csv", index=False)
    candidate = "dpo" if "dpo" in cfg.variants.students else cfg.variants.students[0]
    fig = variants_figure(table, candidate, cfg.variants.opponent, table["judge"].iloc[0])
    save_figure(fig, paths.figures / "variants.png")
    plt.close(fig)
    return {"table": table, "figure": fig, "candidate": candidate, "judge": table["judge"].iloc[0]}


def variants_table(table: pd.DataFrame, candidate: str) -> pd.DataFrame:
    """The grid as the book shows it: one row per dataset, its size and its student's win rate."""
    def pct(x):
        return "—" if pd.isna(x) else f"{100 * x:.1f} %"

    out = pd.DataFrame({
        "method": table["method"], "strategy": table["strategy"], "construction": table["construction"],
        "replies from": table["source"], "SFT examples": table["sft_examples"], "DPO pairs": table["dpo_pairs"],
    })
    for student in ("sft", "dpo"):
        if f"{student}_win_rate" in table:
            label = STUDENT_LABEL_SHORT[student]
            out[f"{label} win rate"] = table[f"{student}_win_rate"].map(pct)
            out[f"{label} CI"] = [f"{pct(a)} – {pct(b)}" for a, b in zip(table[f"{student}_ci_low"], table[f"{student}_ci_high"])]
    return out.set_axis(table["variant"].to_list()).rename_axis("dataset")


STUDENT_LABEL_SHORT = {"sft": "SFT", "dpo": "SFT→DPO"}


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
