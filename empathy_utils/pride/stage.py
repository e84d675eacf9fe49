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
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..backends import CachedBackend, LocalBackend, ResponseCache, Sampling
from ..config import StudyConfig
from ..data import read_jsonl, save_jsonl, sha256_file
from ..errors import StudyError
from ..models import model_label
from ..artifacts import digest, files_digest
from ..training import reusable_adapter, stamp_adapter
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


class PridePaths:
    def __init__(self, run_dir: str | Path):
        self.run = Path(run_dir)
        self.root = self.run / "pride"

    data = property(lambda s: s.root / "data")
    train_file = property(lambda s: s.root / "data" / "train.jsonl")
    test_file = property(lambda s: s.root / "data" / "test.jsonl")
    card = property(lambda s: s.root / "data" / "card.json")
    results = property(lambda s: s.root / "results")
    figures = property(lambda s: s.run / "figures")

    def model(self, variant: str) -> Path:
        return self.root / "models" / variant

    def generation(self, student: str) -> Path:
        return self.root / "generations" / f"{student}.jsonl"

    def judgment(self, candidate: str, opponent: str) -> Path:
        return self.root / "judgments" / f"{candidate}_vs_{opponent}.jsonl"


def key(name: str) -> str:
    """A student's name as a glue key (hyphens become underscores)."""
    return name.replace("-", "_")


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


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise StudyError(f"{path}: missing; run the earlier steps of the PRIDE stage first")
    return read_jsonl(path)


# ------------------------------------------------------------------------------ 1. data, teacher
def prepare_data(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """Examples with PI; the privileged teacher's reasoning and replies (cached across runs)."""
    from ..stages import response_cache_path

    p = cfg.pride
    paths = PridePaths(run_dir)
    train, test, source = load_examples(cfg)
    with _quiet():
        teacher = CachedBackend(LocalBackend(teacher_spec(cfg), batch_size=p.teacher_batch_size, progress=False),
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


def card_table(card: dict) -> pd.DataFrame:
    t = card["teacher_log"]["train"]
    flags = ", ".join(f"{k} {v}" for k, v in t["flags"].items() if v) or "none"
    rows = [
        ("data", f"{card['source']['name']} ({card['train_examples']} train, {card['test_examples']} test examples)"),
        ("privileged information", ", ".join(card["pi_fields"])),
        ("teacher", card["teacher"]),
        ("student", f"{card['student_model']}, prompt {card['student_prompt']} (dialogue only)"),
        ("teacher calls (train)", f"{t['calls']} (retried {t['retried']})"),
        ("usable teacher replies (train)", f"{card['train_usable']} of {card['train_examples']}"),
        ("teacher reply flags (train)", flags),
        ("teacher answers from the cache", f"{card['cache']['answered_from_cache']} (new calls {card['cache']['new_calls']})"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def example_table(cfg: StudyConfig, run_dir: str | Path, n: int = 3) -> pd.DataFrame | None:
    """A few teacher answers to read — only on the project's own corpus (research data is never shown)."""
    if cfg.pride.source != "run" or cfg.data.source != "embedded-corpus":
        return None
    rows = []
    for r in _read_jsonl(PridePaths(run_dir).train_file)[:n]:
        t = r["teacher"]
        rows.append({"dialogue (student sees)": r["dialogue"], "PI (teacher sees)": pi_block(r),
                     "teacher's reasoning": " / ".join(t["reasoning"]), "teacher's reply": t["reply"],
                     "usable": r["usable"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- 2. training
def training_fingerprint(cfg: StudyConfig, variant: str, train_file: Path) -> str:
    """What a student's training depends on: model, LoRA, seed, the PRIDE settings (not which other
    students or opponents are configured) and the training data. Same fingerprint -> reuse it."""
    pride = {k: v for k, v in cfg.to_dict()["pride"].items() if k not in ("variants", "opponents")}
    return digest({"variant": variant, "model": cfg.model.name_or_path, "lora": cfg.to_dict()["lora"],
                    "seed": cfg.run.seed, "pride": pride, "data": sha256_file(train_file)})


def _targets(cfg: StudyConfig, rows: list[dict]) -> list[tuple[dict, str]]:
    if cfg.pride.ce_target == "reference":
        return [(r, r["reference"]) for r in rows]
    return [(r, r["teacher"]["reply"]) for r in rows if r["usable"]]


def train_students(cfg: StudyConfig, run_dir: str | Path) -> pd.DataFrame:
    """Train every configured student; returns one summary row per student (also in results/)."""
    from ..models import load_tokenizer
    from .data import build_features
    from .train import PRIDE_FAMILY, train_blackbox_sft, train_pride_variant, train_sdft

    p = cfg.pride
    paths = PridePaths(run_dir)
    pairs = _targets(cfg, _read_jsonl(paths.train_file))
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
            out = paths.model(variant)
            fingerprint = training_fingerprint(cfg, variant, paths.train_file)
            reused = reusable_adapter(out, fingerprint)
            if reused is not None:  # same settings, same data: trained by an earlier run of this stage
                summaries.append({**reused, "reused": True})
                continue
            if variant in PRIDE_FAMILY:
                s = train_pride_variant(cfg, variant, features, out)
            elif variant == "blackbox-sft":
                s = train_blackbox_sft(cfg, [r for r, _ in pairs], [t for _, t in pairs], out)
            else:
                s = train_sdft(cfg, [r for r, _ in pairs], [pi_block(r) for r, _ in pairs], out)
            stamp_adapter(out, fingerprint)
            summaries.append({**s, "skipped_too_long": skipped, "fingerprint": fingerprint, "reused": False})
    paths.results.mkdir(parents=True, exist_ok=True)
    (paths.results / "training.json").write_text(json.dumps(summaries, indent=2))
    return training_frame(summaries)


def training_frame(summaries: list[dict]) -> pd.DataFrame:
    def num(v, fmt="{:.3f}"):
        return "—" if v is None else fmt.format(v)

    rows = []
    for s in summaries:
        attention = s.get("attention") or {}
        top = max(((k, v) for k, v in attention.items() if k != "null"), key=lambda kv: kv[1], default=None)
        rows.append({
            "student": LABELS[s["variant"]],
            "trainer": s["trainer"] + (" — reused: same settings and data as before" if s.get("reused") else ""),
            "steps": s["steps"],
            "seconds": s["seconds"],
            "first → last loss": f"{num(s['first_loss'])} → {num(s['last_loss'])}",
            "mean CE / RKL / MMD²": " / ".join(num(s.get(k)) for k in ("mean_ce", "mean_rkl", "mean_mmd")),
            "gate |tanh g|": num(s.get("gate_strength"), "{:.4f}"),
            "most-attended PI source": "—" if top is None else f"{top[0]} ({top[1]:.2f}; null {attention.get('null', 0):.2f})",
        })
    return pd.DataFrame(rows).set_index("student")


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
def generate_replies(cfg: StudyConfig, run_dir: str | Path) -> pd.DataFrame:
    """Base and trained students answer the test dialogues (dialogue only, no PI); plus the teacher's replies."""
    from ..quality import clean_reply

    paths = PridePaths(run_dir)
    test = _read_jsonl(paths.test_file)
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
            stamp = paths.generation(student).with_suffix(".fingerprint")
            if paths.generation(student).exists() and stamp.exists() and stamp.read_text() == fingerprint:
                summary.append(_reply_stats(student, _read_jsonl(paths.generation(student))))
                continue
            backend = LocalBackend(cfg.model.name_or_path, adapter=adapter, batch_size=cfg.generation.batch_size,
                                   progress=False)
            answers = backend.chat(convs, sampling)
            rows = [{"dialogue_id": r["dialogue_id"], "student": student, "reply": clean_reply(a.text), "raw": a.text,
                     "finish_reason": a.finish_reason, "tokens": a.completion_tokens} for r, a in zip(test, answers)]
            save_jsonl(rows, paths.generation(student))
            stamp.write_text(fingerprint)
            summary.append(_reply_stats(student, rows))
            del backend
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
    """Per student (and the teacher): the share of test replies that address the speaker as "you"."""
    paths = PridePaths(run_dir)
    facts = {}
    for student in ["base", *cfg.pride.variants, *(["teacher"] if "teacher" in cfg.pride.opponents else [])]:
        rows = _read_jsonl(paths.generation(student))
        facts[f"{key(student)}_says_you"] = sum(addresses_listener(r["reply"]) for r in rows) / max(1, len(rows))
    facts.setdefault("teacher_says_you", float("nan"))  # not judged against the teacher: no test replies
    train = [r for r in _read_jsonl(paths.train_file) if r["usable"]]
    facts["teacher_train_says_you"] = sum(addresses_listener(r["teacher"]["reply"]) for r in train) / max(1, len(train))
    facts["ablation_overlap"] = ablation_overlap(cfg, run_dir)
    return facts


ABLATIONS = ("pride-no-pi", "pride-no-rkl", "pride-no-mmd")


def _joined(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def ablation_overlap(cfg: StudyConfig, run_dir: str | Path) -> str:
    """How many test replies each ablation wrote word for word as PRIDE did, and the size of each
    loss term in PRIDE's training: an ablation that leaves most replies unchanged cannot move a win
    rate, whatever its term does in principle."""
    paths = PridePaths(run_dir)
    ablations = [a for a in ABLATIONS if a in cfg.pride.variants]
    if "pride" not in cfg.pride.variants or not ablations:
        return "This run trained no ablation beside PRIDE."
    full = {r["dialogue_id"]: r["reply"] for r in _read_jsonl(paths.generation("pride"))}
    same = []
    for a in ablations:
        rows = _read_jsonl(paths.generation(a))
        same.append(str(sum(full.get(r["dialogue_id"]) == r["reply"] for r in rows)))
    names = [LABELS[a].removeprefix("PRIDE ") for a in ablations]
    text = (f"Word for word, the students {_joined(names)} wrote {_joined(same)} of their {len(full)} test replies "
            "exactly as PRIDE did; an ablation that leaves most replies unchanged cannot move the win rate much.")
    log = paths.results / "training.json"
    pride_log = next((s for s in json.loads(log.read_text()) if s["variant"] == "pride"), None) if log.exists() else None
    if pride_log and pride_log.get("mean_ce") is not None:
        p = cfg.pride
        text += (f" In PRIDE's training the weighted terms averaged {p.lambda_ce * pride_log['mean_ce']:.3f} (CE), "
                 f"{p.lambda_rkl * pride_log['mean_rkl']:.3f} (reverse KL) and "
                 f"{p.lambda_mmd * pride_log['mean_mmd']:.3f} (MMD²).")
    return text


# ------------------------------------------------------------------------------------- 4. judging
def comparisons(cfg: StudyConfig) -> list[tuple[str, str]]:
    pairs = [(v, o) for v in cfg.pride.variants for o in cfg.pride.opponents]
    if {"base", "teacher"} <= set(cfg.pride.opponents):
        pairs.append(("teacher", "base"))
    return pairs


def judge_students(cfg: StudyConfig, run_dir: str | Path, judge=None) -> dict:
    """Every student against each opponent, judged by the run's judge (stages.make_judge)."""
    from ..judges import position_consistency
    from ..plotting import save_figure, winrate_figure
    from ..stages import make_judge
    from ..winrate import summarize

    paths = PridePaths(run_dir)
    test = {r["dialogue_id"]: r for r in _read_jsonl(paths.test_file)}
    needed = {s for pair in comparisons(cfg) for s in pair}
    replies = {s: {r["dialogue_id"]: r["reply"] for r in _read_jsonl(paths.generation(s))} for s in needed}
    judge = judge or make_judge(cfg, run_dir)
    rows = []
    for candidate, opponent in comparisons(cfg):
        items = [{"id": did, "context": t["judge_context"], "utterance": t["judge_utterance"],
                  "response_a": replies[candidate][did], "response_b": replies[opponent][did]} for did, t in test.items()]
        # The same judge (name and measured validity) on the same items: its verdicts of an earlier run.
        fingerprint = digest({"judge": judge.name, "validity": getattr(judge, "validity", None), "items": items})
        stamp = paths.judgment(candidate, opponent).with_suffix(".fingerprint")
        if paths.judgment(candidate, opponent).exists() and stamp.exists() and stamp.read_text() == fingerprint:
            records = _read_jsonl(paths.judgment(candidate, opponent))
        else:
            records = judge.judge(items)
            save_jsonl(records, paths.judgment(candidate, opponent))
            stamp.write_text(fingerprint)
        stats = summarize([r["verdict"] for r in records], cfg.judge.bootstrap_resamples, cfg.judge.confidence,
                          cfg.run.seed)
        rows.append({"candidate": candidate, "opponent": opponent,
                     "comparison": f"{LABELS[candidate]} vs {LABELS[opponent]}", **stats,
                     "position_consistency": position_consistency(records), "judge": judge.name})
    results = pd.DataFrame(rows)
    paths.results.mkdir(parents=True, exist_ok=True)
    results.to_csv(paths.results / "winrates.csv", index=False)
    (paths.results / "winrates.json").write_text(json.dumps(rows, indent=2))
    shown = results.assign(candidate=results["candidate"].map(LABELS), opponent=results["opponent"].map(LABELS))
    fig = winrate_figure(shown, judge.name, title=f"PRIDE and its baselines on {len(test)} test dialogues")
    save_figure(fig, paths.figures / "pride_winrates.png")
    plt.close(fig)
    validity = getattr(judge, "validity", None) or {}
    statement = validity.get("statement") or ("Its agreement with human ratings was not measured in this run: read its "
                                              "win rates as the opinion of a judge of unknown validity.")
    return {"results": results, "judge": judge.name, "figure": fig, "test_dialogues": len(test),
            "judge_statement": statement}


def ablation_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per student: what it is, and its win rate (CI; W/T/L) against each opponent."""
    def cell(r):
        if pd.isna(r["win_rate"]):
            return "—"
        return (f"{100 * r['win_rate']:.1f} % ({100 * r['ci_low']:.1f} – {100 * r['ci_high']:.1f}); "
                f"{r['wins']}/{r['ties']}/{r['losses']}")

    confidence = round(100 * results["confidence"].iloc[0])
    table = {}
    for _, r in results.iterrows():
        row = table.setdefault(r["candidate"], {"student": LABELS[r["candidate"]], "what it is": WHAT[r["candidate"]]})
        row[f"vs {LABELS[r['opponent']]}: win rate ({confidence} % CI); W/T/L"] = cell(r)
    return pd.DataFrame(list(table.values())).set_index("student").fillna("—")


def consistency_sentence(results: pd.DataFrame) -> str:
    """How far the judge agreed with itself across the two orders, in words (for the book)."""
    row = results[(results["candidate"] == "pride") & (results["opponent"] == "base")]
    value = row["position_consistency"].iloc[0] if len(row) else None
    if value is None or pd.isna(value):
        return ("This judge scores each reply on its own, so the order in which two replies are shown cannot "
                "sway it.")
    return (f"Shown the same two replies in both orders, the judge agreed with itself on {100 * value:.0f} % of the "
            "PRIDE vs base pairs; every disagreement is a tie. A judge that follows position rather than content "
            "produces ties, and a win rate near 50 % then says more about the judge than about the students.")


def teacher_role(results: pd.DataFrame) -> str:
    """Whether the teacher's replies bound the students from above, by this run's judge: a teacher
    that loses to students distilled from it is no ceiling, and the book should not call it one.
    Overlapping confidence intervals are said to be overlapping, not ranked."""
    def row(candidate):
        r = results[(results["candidate"] == candidate) & (results["opponent"] == "base")]
        return r.iloc[0] if len(r) and pd.notna(r["win_rate"].iloc[0]) else None

    teacher, pride = row("teacher"), row("pride")
    if teacher is None or pride is None:
        return "This run did not judge both the teacher and PRIDE against the base student."
    if teacher["ci_high"] < pride["ci_low"]:
        return (f"That is below PRIDE's {100 * pride['win_rate']:.1f} %, and their intervals do not overlap: by this "
                "judge the student outscores the teacher it learned from, so the teacher's own replies are no "
                "ceiling here.")
    if pride["ci_high"] < teacher["ci_low"]:
        return (f"PRIDE's {100 * pride['win_rate']:.1f} % is below it, and their intervals do not overlap: the "
                "teacher's replies remain the ceiling that distilling this teacher can hope to approach.")
    return (f"PRIDE's {100 * pride['win_rate']:.1f} % and the teacher's intervals overlap: at this size the judge "
            "cannot tell the student from the teacher it learned from.")


def glue_facts(card: dict, results: pd.DataFrame, judge_name: str, n_test: int, training: list[dict] | None = None,
               judge_statement: str = "") -> dict:
    """The scalars the book's PRIDE chapter cites (glued by the notebook)."""
    facts = {
        "judge_name": judge_name,
        "judge_statement": judge_statement or "Its agreement with human ratings was not measured in this run.",
        "judge_consistency": consistency_sentence(results),
        "n_test": n_test,
        "n_train": card["train_usable"],
        "teacher_name": card["teacher"],
        "student_model": card["student_model"],
        "pi_fields": ", ".join(card["pi_fields"]),
        "data_name": card["source"]["name"],
        "confidence_pct": int(round(100 * results["confidence"].iloc[0])),
        "teacher_role": teacher_role(results),
    }
    nan = float("nan")
    for candidate in {*results["candidate"], "pride", "teacher"}:
        for opponent in ("base", "teacher"):  # a comparison the run did not make is glued as NaN
            prefix = f"{key(candidate)}_vs_{key(opponent)}_"
            for f in ("win_rate", "ci_low", "ci_high", "position_consistency"):
                facts[prefix + f] = nan
    for _, r in results.iterrows():
        prefix = f"{key(r['candidate'])}_vs_{key(r['opponent'])}_"
        for f in ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "unparsed", "pairs"):
            facts[prefix + f] = r[f]
        consistency = r["position_consistency"]
        facts[prefix + "position_consistency"] = nan if consistency is None or pd.isna(consistency) else consistency
    for s in training or []:
        facts[f"{key(s['variant'])}_steps"] = s["steps"]
        facts[f"{key(s['variant'])}_seconds"] = s["seconds"]
    return facts


def run_pride(cfg: StudyConfig, run_dir: str | Path) -> dict:
    """All four steps (scripts and benchmarks; the notebook calls them one by one)."""
    card = prepare_data(cfg, run_dir)
    training = train_students(cfg, run_dir)
    replies = generate_replies(cfg, run_dir)
    report = judge_students(cfg, run_dir)
    return {"card": card, "training": training, "replies": replies, **report}


def describe_method(cfg: StudyConfig) -> str:
    """The run's PRIDE settings in one paragraph (the notebook prints it above the results)."""
    p = cfg.pride
    return textwrap.fill(
        f"Loss = {p.lambda_ce:g}·CE + {p.lambda_rkl:g}·RKL(T={p.rkl_temperature:g}) + {p.lambda_mmd:g}·MMD² "
        f"(Gaussian kernel, bandwidths {p.mmd_bandwidths} × {'median distance' if p.mmd_bandwidth_mode == 'median' else '1'}, "
        f"{p.mmd_estimator} estimator, features at layer {p.mmd_layer}); multi-source attention after decoder layer "
        f"{p.fusion_layer} ({p.fusion_heads} heads, width {p.fusion_dim}, PI encoded by {p.pi_encoder}, pooled by "
        f"{p.pi_pooling}), PI dropout {p.pi_dropout:g}; LoRA rank from the lora section; lr {p.learning_rate:g} "
        f"(module {p.module_learning_rate or p.learning_rate:g}), batch {p.batch_size}, "
        f"{'max ' + str(p.max_steps) + ' steps' if p.max_steps > 0 else str(p.epochs) + ' epoch(s)'}.", 110)
