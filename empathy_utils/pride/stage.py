"""PRIDE as a stage of the study, in four steps the notebook ``08_pride`` calls in turn:

1. :func:`prepare_data` — dialogues with their PI; the privileged teacher answers them with the
   empathy-reasoning prompt (train: the distillation targets; test: the teacher's own replies);
2. :func:`train_students` — every configured student: PRIDE and its ablations, SFT on the teacher's
   text (black-box), TRL's SDFT;
3. :func:`generate_replies` — base, trained students and teacher answer the test dialogues (the
   students see the dialogue only, as at any inference);
4. :func:`judge_students` — each student against the base student and the teacher, by the run's
   judge (the one the rest of the study uses), in both orders, with bootstrap CIs.

Artifacts go to ``<run>/pride/`` (data, models, generations, judgments, results) and figures to
``<run>/figures/pride_*.png``.
"""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..backends import CachedBackend, LocalBackend, ResponseCache, Sampling
from ..config import StudyConfig
from ..data import read_jsonl, save_jsonl, sha256_file
from ..errors import StudyError
from ..models import model_label, release_memory
from ..presentation import percent
from ..artifacts import FileStamp, MethodPaths, digest, files_digest, glue_key, reuse_or_build
from ..training import reuse_or_train
from .data import STUDENT_PROMPT_ID, TeacherLog, TeacherOutput, load_examples, pi_block, student_messages

LABELS = {
    "base": "base student",
    "teacher": "teacher (sees the PI)",
    "blackbox-sft": "SFT on the teacher's text",
    "sdft": "SDFT (TRL)",
    "pride": "PRIDE",
    "pride-no-pi": "PRIDE without PI",
    "pride-no-rkl": "PRIDE without reverse KL",
    "pride-no-mmd": "PRIDE without MMD",
}
WHAT = {
    "teacher": "the reference: the teacher's own replies, written seeing the PI",
    "blackbox-sft": "black-box distillation: LoRA SFT on the teacher's replies (TRL SFTTrainer)",
    "sdft": "on-policy self-distillation; teacher = base model shown the PI (TRL SDFTTrainer)",
    "pride": "CE + reverse KL + MMD; multi-source attention over the PI in training",
    "pride-no-pi": "as PRIDE, without the attention module (the student never sees PI)",
    "pride-no-rkl": "as PRIDE with λ_rkl = 0",
    "pride-no-mmd": "as PRIDE with λ_mmd = 0",
}


class PridePaths(MethodPaths):
    """``<run>/pride``: the method folder's files, the examples with their PI, one model per student."""

    folder = "pride"
    stage = "PRIDE"
    train_file = property(lambda s: s.root / "data" / "train.jsonl")
    test_file = property(lambda s: s.root / "data" / "test.jsonl")

    def model(self, variant: str) -> Path:
        return self.root / "models" / variant


def teacher_spec(cfg: StudyConfig) -> str:
    return cfg.pride.teacher_model or cfg.model.name_or_path


def teacher_name(cfg: StudyConfig) -> str:
    return f"{model_label(teacher_spec(cfg))} seeing the PI ({cfg.pride.teacher_prompt} prompt)"


@contextmanager
def _quiet():
    """Library deprecation notices would fill the executed notebook; the facts go to train_log.json."""
    import os

    from ..training import quiet_libraries

    quiet_libraries()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*experimental.*")
        yield


# ------------------------------------------------------------------------------ 1. data, teacher
def prepare_data(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Examples with PI; the privileged teacher's reasoning and replies (cached across runs)."""
    from ..stages import response_cache_path

    p = cfg.pride
    paths = PridePaths(run_dir)
    train, test, source = load_examples(cfg)
    with _quiet():
        teacher = CachedBackend(LocalBackend(teacher_spec(cfg), batch_size=p.teacher_batch_size, progress=False,
                                             dtype=cfg.model.dtype),
                                ResponseCache(response_cache_path()))
        logs = {"train": TeacherLog(), "test": TeacherLog()}
        from .data import teacher_replies

        outputs = {"train": teacher_replies(teacher, train, p, cfg.run.seed, logs["train"])}
        outputs["test"] = (teacher_replies(teacher, test, p, cfg.run.seed, logs["test"]) if "teacher" in p.opponents
                           else [None] * len(test))
    for split, rows in (("train", train), ("test", test)):
        records = [{**r, "teacher": o.to_json() if o else None, "usable": bool(o and o.usable)}
                   for r, o in zip(rows, outputs[split])]
        save_jsonl(records, paths.train_file if split == "train" else paths.test_file)
    usable = sum(o.usable for o in outputs["train"])
    card = {
        "source": source,
        "pi_fields": source["pi_fields"],
        "teacher": teacher_name(cfg),
        "teacher_model": model_label(teacher_spec(cfg)),
        "student_model": model_label(cfg.model.name_or_path),
        "student_prompt": STUDENT_PROMPT_ID,
        "teacher_prompt": p.teacher_prompt,
        "train_examples": len(train),
        "train_usable": usable,
        "test_examples": len(test),
        "teacher_log": {k: v.to_json() for k, v in logs.items()},
        "cache": {"new_calls": teacher.stats.new_calls, "answered_from_cache": teacher.stats.from_cache},
    }
    if usable == 0 and p.ce_target == "teacher":
        raise StudyError("PRIDE: the teacher gave no usable reply on the training dialogues; see the card "
                         f"({paths.card}) and change pride.teacher_* or the teacher model")
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.card.write_text(json.dumps(card, indent=2))
    return card


def example_table(cfg: StudyConfig, run_dir: str | Path, n: int = 3) -> pd.DataFrame | None:
    """A few teacher answers to read — only on the project's own corpus (research data is never shown)."""
    if cfg.pride.source != "run" or cfg.data.source != "embedded-corpus":
        return None
    rows, paths = [], PridePaths(run_dir)
    for r in paths.read(paths.train_file)[:n]:
        t = r["teacher"]
        rows.append({"dialogue (student sees)": r["dialogue"], "PI (teacher sees)": pi_block(r),
                     "teacher's reasoning": " / ".join(t["reasoning"]), "teacher's reply": t["reply"],
                     "usable": r["usable"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- 2. training
def training_fingerprint(cfg: StudyConfig, variant: str, train_file: Path) -> str:
    """What a student's training depends on: model, LoRA, seed, the PRIDE settings (not which other
    students or opponents are configured) and the training data. Same fingerprint -> reuse it."""
    from ..training import sharing_prefix, train_in_bf16, unset_dropped

    pride = {k: v for k, v in cfg.to_dict()["pride"].items() if k not in ("variants", "opponents")}
    # bf16 as it resolves here: fp32 (auto on a host without bf16 units) leaves the fingerprints as they were
    pride["bf16"] = train_in_bf16(pride["bf16"])
    pride = unset_dropped(pride, {"bf16": False, "gradient_checkpointing": False, "trainer": {}})
    for sdft_only in ("sdft_share_prompt_prefix", "sdft_rollouts"):  # SDFT's alone (below): the others keep theirs
        pride.pop(sdft_only, None)
    # the black-box baseline is TRL's SFT, whose batches share their prompt prefix as the sft stage's do
    sharing = {"share_prompt_prefix": sharing_prefix(cfg, cfg.sft)} if variant == "blackbox-sft" else {}
    if variant == "sdft":
        sharing = {"share_prompt_prefix": sharing_prefix(cfg, cfg.pride), "rollouts": cfg.pride.sdft_rollouts}
    return digest({"variant": variant, "model": cfg.model.name_or_path, "lora": cfg.to_dict()["lora"],
                    "seed": cfg.run.seed, "pride": pride, "data": sha256_file(train_file), **sharing})


def _targets(cfg: StudyConfig, rows: list[dict]) -> list[tuple[dict, str]]:
    if cfg.pride.ce_target == "reference":
        return [(r, r["reference"]) for r in rows]
    return [(r, r["teacher"]["reply"]) for r in rows if r["usable"]]


def _train_student(cfg: StudyConfig, variant: str, features: list[dict], pairs: list[tuple[dict, str]],
                   out: Path) -> dict:
    from .train import PRIDE_FAMILY, train_blackbox_sft, train_pride_variant, train_sdft

    if variant in PRIDE_FAMILY:
        return train_pride_variant(cfg, variant, features, out)
    if variant == "blackbox-sft":
        return train_blackbox_sft(cfg, [r for r, _ in pairs], [t for _, t in pairs], out)
    return train_sdft(cfg, [r for r, _ in pairs], [pi_block(r) for r, _ in pairs], out)


def train_students(cfg: StudyConfig, run_dir: str | Path) -> list[dict]:
    """Train every configured student; returns one training summary per student (also in results/)."""
    from ..models import load_tokenizer
    from .data import build_features

    p = cfg.pride
    paths = PridePaths(run_dir)
    pairs = _targets(cfg, paths.read(paths.train_file))
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="right")
    features, skipped = [], 0
    for row, target in pairs:
        teacher = TeacherOutput(**row["teacher"]) if row["teacher"] else None
        f = build_features(tokenizer, row, target, teacher, p.max_length, p.pi_max_tokens)
        if f is None:
            skipped += 1
        else:
            features.append(f)
    if not features:
        raise StudyError(f"PRIDE: no training example fits pride.max_length = {p.max_length}")
    summaries = []
    with _quiet():
        for variant in p.variants:
            # Same settings, same data: the adapter an earlier run of this stage trained is reused.
            summary = reuse_or_train(paths.model(variant), training_fingerprint(cfg, variant, paths.train_file),
                                     partial(_train_student, cfg, variant, features, pairs))
            summaries.append({**summary, "skipped_too_long": skipped})
    paths.results.mkdir(parents=True, exist_ok=True)
    (paths.results / "training.json").write_text(json.dumps(summaries, indent=2))
    return summaries


def training_figure(run_dir: str | Path) -> plt.Figure:
    """Training loss per logged step of every student (each trainer's own loss)."""
    paths = PridePaths(run_dir)
    summaries = json.loads((paths.results / "training.json").read_text())
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for s in summaries:
        log = json.loads((paths.model(s["variant"]) / "train_log.json").read_text())["history"]
        points = [(h["step"], h["loss"]) for h in log if "loss" in h and "step" in h]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=LABELS[s["variant"]])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (each trainer's own objective)")
    if all(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
        ax.set_yscale("log")  # SDFT's divergence and PRIDE's summed loss differ by orders of magnitude
    ax.set_title("Training losses of the PRIDE chapter's students", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    from ..plotting import save_figure

    save_figure(fig, paths.figures / "pride_training.png")
    plt.close(fig)
    return fig


# ----------------------------------------------------------------------------------- 3. replies
def _write_replies(cfg: StudyConfig, student: str, adapter: Path | None, test: list[dict], convs: list,
                   sampling: Sampling, target: Path) -> list[dict]:
    from ..quality import clean_reply

    backend = LocalBackend(cfg.model.name_or_path, adapter=adapter, batch_size=cfg.generation.batch_size, progress=False,
                           dtype=cfg.model.dtype)
    answers = backend.chat(convs, sampling)
    rows = [{"dialogue_id": r["dialogue_id"], "student": student, "reply": clean_reply(a.text), "raw": a.text,
             "finish_reason": a.finish_reason, "tokens": a.completion_tokens} for r, a in zip(test, answers)]
    save_jsonl(rows, target)
    return rows


def generate_replies(cfg: StudyConfig, run_dir: str | Path) -> pd.DataFrame:
    """Base and trained students answer the test dialogues (dialogue only, no PI); plus the teacher's replies."""
    paths = PridePaths(run_dir)
    test = paths.read(paths.test_file)
    convs = [student_messages(r) for r in test]
    sampling = Sampling(cfg.generation.max_new_tokens, cfg.generation.temperature, seed=cfg.run.seed)
    summary = []
    with _quiet():
        for student in ["base", *cfg.pride.variants]:
            adapter = None if student == "base" else paths.model(student)
            if adapter is not None and not (adapter / "adapter_config.json").exists():
                raise StudyError(f"{adapter}: no trained {student} student; run train_students first")
            # Same student (same adapter files), same prompts and decoding: the replies of an earlier run.
            fingerprint = digest({"student": student, "model": cfg.model.name_or_path, "generation": cfg.to_dict()["generation"],
                                   "seed": cfg.run.seed, "test": convs,
                                   "adapter": files_digest(adapter, "adapter_*") if adapter else None})
            target = paths.generation(student)
            rows, _ = reuse_or_build(target, fingerprint, partial(_write_replies, cfg, student, adapter, test, convs, sampling),
                                     stamp=FileStamp(target.with_suffix(".fingerprint")), load=read_jsonl)
            release_memory()
            summary.append(_reply_stats(student, rows))
    if "teacher" in cfg.pride.opponents:
        rows = [{"dialogue_id": r["dialogue_id"], "student": "teacher", "reply": r["teacher"]["reply"],
                 "flags": r["teacher"]["flags"]} for r in test]
        save_jsonl(rows, paths.generation("teacher"))
        summary.append(_reply_stats("teacher", rows))
    return pd.DataFrame(summary).set_index("student")


_SECOND_PERSON = re.compile(r"\byou(?:r|rs|rself|'re|'ve|'ll|'d)?\b", re.IGNORECASE)


def addresses_listener(reply: str) -> bool:
    """Does the reply speak *to* the speaker (a second-person word) rather than *about* them? A small
    model asked to empathize often describes "the speaker" in the third person instead."""
    return bool(_SECOND_PERSON.search(reply))


def _reply_stats(student: str, rows: list[dict]) -> dict:
    from ..stages import reply_summary

    stats = reply_summary(LABELS[student], rows)
    return {**stats, "mean words": round(stats["mean words"], 1),
            "says 'you'": f"{100 * sum(addresses_listener(r['reply']) for r in rows) / max(1, len(rows)):.0f} %"}


def reply_facts(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Per student (and the teacher): the share of test replies that address the speaker as "you";
    and how far the ablations' replies differ from PRIDE's (:func:`ablation_overlap`)."""
    paths = PridePaths(run_dir)
    facts = {}
    for student in ["base", *cfg.pride.variants, *(["teacher"] if "teacher" in cfg.pride.opponents else [])]:
        rows = paths.read(paths.generation(student))
        facts[f"{glue_key(student)}_says_you"] = sum(addresses_listener(r["reply"]) for r in rows) / max(1, len(rows))
    facts.setdefault("teacher_says_you", float("nan"))  # not judged against the teacher: no test replies
    train = [r for r in paths.read(paths.train_file) if r["usable"]]
    facts["teacher_train_says_you"] = sum(addresses_listener(r["teacher"]["reply"]) for r in train) / max(1, len(train))
    # as the chapter prints them ("72 %"), formatted here rather than by a glue format spec
    facts.update({f"{k}_text": percent(v, 0) for k, v in list(facts.items()) if k.endswith("_says_you")})
    facts["ablation_overlap"] = ablation_overlap(cfg, run_dir)
    return facts


ABLATIONS = ("pride-no-pi", "pride-no-rkl", "pride-no-mmd")


def ablation_overlap(cfg: StudyConfig, run_dir: str | Path) -> dict | None:
    """How many test replies each ablation wrote word for word as PRIDE did, and the size of each
    weighted loss term in PRIDE's training (None: no ablation beside PRIDE). An ablation that leaves
    most replies unchanged cannot move a win rate, whatever its term does in principle."""
    paths = PridePaths(run_dir)
    ablations = [a for a in ABLATIONS if a in cfg.pride.variants]
    if "pride" not in cfg.pride.variants or not ablations:
        return None
    full = {r["dialogue_id"]: r["reply"] for r in paths.read(paths.generation("pride"))}
    same = [sum(full.get(r["dialogue_id"]) == r["reply"] for r in paths.read(paths.generation(a))) for a in ablations]
    log = paths.results / "training.json"
    pride_log = next((s for s in json.loads(log.read_text()) if s["variant"] == "pride"), None) if log.exists() else None
    terms = None
    if pride_log and pride_log.get("mean_ce") is not None:
        p = cfg.pride
        terms = {"CE": p.lambda_ce * pride_log["mean_ce"], "reverse KL": p.lambda_rkl * pride_log["mean_rkl"],
                 "MMD²": p.lambda_mmd * pride_log["mean_mmd"]}
    return {"students": [LABELS[a] for a in ablations], "same_as_pride": same, "replies": len(full),
            "weighted_terms": terms}


# ------------------------------------------------------------------------------------- 4. judging
def comparisons(cfg: StudyConfig) -> list[tuple[str, str]]:
    pairs = [(v, o) for v in cfg.pride.variants for o in cfg.pride.opponents]
    if {"base", "teacher"} <= set(cfg.pride.opponents):
        pairs.append(("teacher", "base"))
    return pairs


def judge_students(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Every student against each opponent, judged by the run's judge (judging.make_judge); the
    verdicts of an earlier run are reused when judge and replies are unchanged."""
    from ..judging import Comparison, JudgingOutput, judge_comparisons, make_judge, read_judge_accuracy

    paths = PridePaths(run_dir)
    test = {r["dialogue_id"]: r for r in paths.read(paths.test_file)}
    needed = {s for pair in comparisons(cfg) for s in pair}
    replies = {s: {r["dialogue_id"]: r["reply"] for r in paths.read(paths.generation(s))} for s in needed}
    judge = judge or make_judge(cfg, run_dir)
    pairs = [Comparison(candidate, opponent, f"{LABELS[candidate]} vs {LABELS[opponent]}",
                        [{"id": did, "context": t["judge_context"], "utterance": t["judge_utterance"],
                          "response_a": replies[candidate][did], "response_b": replies[opponent][did]}
                         for did, t in test.items()])
             for candidate, opponent in comparisons(cfg)]
    out = JudgingOutput(paths.judgment, paths.results, paths.figures / "pride_winrates.png",
                        f"PRIDE and its baselines on {len(test)} test dialogues", reuse_verdicts=True)
    judged = judge_comparisons(pairs, judge, out, resamples=cfg.judge.bootstrap_resamples,
                               confidence=cfg.judge.confidence, seed=cfg.run.seed)
    return {"results": judged.results, "judge": judge.name, "figure": judged.figure, "test_dialogues": len(test),
            "validity": getattr(judge, "validity", None) or {}, "accuracy": read_judge_accuracy(run_dir, judge.name)}


def run_pride(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """All four steps (scripts and benchmarks; the notebook calls them one by one)."""
    card = prepare_data(cfg, run_dir)
    training = train_students(cfg, run_dir)
    replies = generate_replies(cfg, run_dir)
    report = judge_students(cfg, run_dir)
    return {"card": card, "training": training, "replies": replies, **report}


