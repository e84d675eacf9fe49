"""Judges that score each reply alone (order-free): likelihood, embedding head, reward model, the
longer-reply baseline."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..quality import word_count
from .base import Judge

# --------------------------------------------------------------------------- scoring judges
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


class ScoreJudge(Judge):
    """A judge that scores each (context, utterance, reply) alone; the higher score wins. Replies
    shared by several pairs are scored once."""

    order_free = True
    # |score_a - score_b| at or below this is a tie (a calibrated band: judge_validation.calibration).
    tie_margin: float = 0.0
    # p_a = sigmoid((score_a - score_b) / temperature) for judges that give a probability.
    temperature: float | None = None

    def score(self, prompts: Sequence[tuple[str, str]], replies: Sequence[str]) -> np.ndarray:
        """One score per (context, utterance) and reply; higher = more empathetic."""
        raise NotImplementedError  # pragma: no cover - interface

    def judge(self, items: list[dict]) -> list[dict]:
        keys: dict[tuple[str, str, str], int] = {}
        for it in items:
            for side in ("response_a", "response_b"):
                keys.setdefault((it["context"], it["utterance"], it[side]), len(keys))
        ordered = list(keys)
        scores = self.score([(c, u) for c, u, _ in ordered], [r for _, _, r in ordered]) if ordered else []
        records = []
        for it in items:
            sa = float(scores[keys[(it["context"], it["utterance"], it["response_a"])]])
            sb = float(scores[keys[(it["context"], it["utterance"], it["response_b"])]])
            diff = sa - sb
            verdict = "a" if diff > self.tie_margin else "b" if diff < -self.tie_margin else "tie"
            records.append({"id": it["id"], "verdict": verdict,
                            "p_a": _sigmoid(diff / (self.temperature or 1.0)) if self.gives_probability else None,
                            "a_first": None, "b_first": None, "score_a": sa, "score_b": sb, "judge": self.name})
        return records


class LongerReplyJudge(ScoreJudge):
    """A baseline (book/judges.md, How they are checked): the reply with more words wins (equal lengths: a tie)."""

    kind = "longer"
    name = "longer reply wins (a baseline, not a judge of empathy)"

    def score(self, prompts, replies):
        return np.array([word_count(r) for r in replies], dtype=float)


def _chat_ids(tokenizer, conversation: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


# How the likelihood judge shows the speaker to the model. "chat-*" use the model's chat template
# (an instruction-tuned model); "plain" writes a transcript without one (a base model).
LIKELIHOOD_FRAMINGS = {
    "utterance": "the speaker's turn (chat template)",
    "context": "the situation and the speaker's turn (chat template)",
    "listener": "the speaker's turn, after a system line asking for an empathetic listener (chat template)",
    "plain": "a plain transcript 'Speaker: ... Listener:' (no chat template)",
}
# What is compared: the mean token log-probability of the reply given the framing ("mean"), or that
# minus the reply's mean log-probability with no speaker at all ("pmi": how much hearing the speaker
# raised the reply's probability, which discounts replies that are likely anywhere).
LIKELIHOOD_SCORES = ("mean", "pmi")
LISTENER_SYSTEM = "You are a caring listener. Reply to the speaker with warmth and understanding."


def likelihood_store(spec: str):
    """The persistent memo of the likelihood judge on ``spec`` (:class:`empathy_utils.stores.ScoreStore`):
    its numbers are the fp32 model's on this machine's inference device, so that is its identity. A plain
    dict (scores kept for this process only) with ``EMPATHY_SCORE_STORE=0``, the old path."""
    import os

    from ..models import inference_device
    from ..stores import ScoreStore

    if os.environ.get("EMPATHY_SCORE_STORE") == "0":
        return {}
    return ScoreStore(f"likelihood:{spec}@float32@{inference_device()}")


class LikelihoodJudge(ScoreJudge):
    """A causal LM's mean token log-probability of the reply (and its end-of-turn token) given the
    speaker, framed as :data:`LIKELIHOOD_FRAMINGS` says. environment.md measured that SmolLM2's
    likelihood carries signal that its answers to judging questions do not; validation says how much.
    ``tie_margin`` (in nats of score difference) makes near-equal scores a tie; with ``temperature``
    the score difference becomes a probability, p_a = sigmoid(diff / temperature)."""

    kind = "likelihood"

    def __init__(self, spec: str, batch_size: int = 16, condition: str = "utterance", model=None, tokenizer=None,
                 score: str = "mean", tie_margin: float = 0.0, temperature: float | None = None,
                 memo: dict | None = None):
        from ..models import load_tokenizer, model_label

        if condition not in LIKELIHOOD_FRAMINGS:
            raise ValueError(f"condition must be one of {sorted(LIKELIHOOD_FRAMINGS)}, got {condition!r}")
        if score not in LIKELIHOOD_SCORES:
            raise ValueError(f"score must be one of {LIKELIHOOD_SCORES}, got {score!r}")
        self.spec = spec
        self.batch_size = batch_size
        self.condition = condition
        self.score_kind = score
        self.tie_margin = float(tie_margin)
        self.temperature = temperature
        # (prompt ids, answer ids) -> mean log-probability; shared by judges on the same model it
        # lets several framings and scores reuse each other's forward passes. A ScoreStore
        # (likelihood_store) keeps them across runs: a re-run after a judge setting scores nothing.
        self.memo = memo if memo is not None else {}
        self.score_counts = {"computed": 0, "reused": 0}  # distinct rows scored, and read from the memo
        # Loaded when a score must be computed (never, when the store holds every one): scoring only,
        # the inference placement (a GPU when present), in fp32 as the judge was measured.
        self._model = model
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec, padding_side="right")
        if condition != "plain" and not getattr(self.tokenizer, "chat_template", None):
            from ..errors import StudyError

            raise StudyError(f"likelihood judge on {spec}: the {condition!r} framing needs a chat template, and "
                             f"this model has none (a base model); use the 'plain' framing "
                             f"(judge_validation.likelihood_condition: plain)")
        what = "mean token log-probability" if score == "mean" else "pointwise mutual information (mean token log-probability given the speaker minus without)"
        self.name = f"likelihood local:{model_label(spec)} ({what} of the reply given {LIKELIHOOD_FRAMINGS[condition]})"

    @property
    def model(self):
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.spec, dtype="float32")
        return self._model

    @property
    def gives_probability(self) -> bool:  # type: ignore[override]
        return self.temperature is not None

    def settings(self) -> dict:
        """What rebuilds this judge (see judge_validation.judge_from_settings)."""
        return {"kind": self.kind, "model": self.spec, "condition": self.condition, "score": self.score_kind,
                "tie_margin": self.tie_margin, "temperature": self.temperature}

    def _prompt_ids(self, context: str, utterance: str) -> list[int]:
        tok = self.tokenizer
        if self.condition == "plain":
            ids = tok.encode(f"Speaker: {utterance}\nListener:", add_special_tokens=True)
            return list(ids)
        text = utterance if self.condition in ("utterance", "listener") else f"{context}\n\n{utterance}"
        conv = [{"role": "user", "content": text}]
        if self.condition == "listener":
            conv = [{"role": "system", "content": LISTENER_SYSTEM}] + conv
        return _chat_ids(tok, conv)

    def _answer_ids(self, reply: str) -> list[int]:
        tok = self.tokenizer
        text = str(reply).strip()
        if self.condition == "plain":
            return tok.encode(" " + text + "\n", add_special_tokens=False)
        end = tok.eos_token_id
        return tok.encode(text, add_special_tokens=False) + ([end] if end is not None else [])

    def _unconditional_ids(self) -> list[int]:
        tok = self.tokenizer
        if self.condition == "plain":
            return tok.encode("Listener:", add_special_tokens=True)
        return _chat_ids(tok, [{"role": "user", "content": ""}])

    def score(self, prompts, replies):
        answers = [self._answer_ids(r) for r in replies]
        rows = [(self._prompt_ids(c, u), a) for (c, u), a in zip(prompts, answers)]
        out = self._cached(rows)
        if self.score_kind == "pmi":
            bare = self._unconditional_ids()
            out = out - self._cached([(bare, a) for a in answers])
        return out

    def _cached(self, rows: list[tuple[list[int], list[int]]]) -> np.ndarray:
        keys = [(tuple(p), tuple(a)) for p, a in rows]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        self.score_counts["computed"] += len(todo)
        self.score_counts["reused"] += len(set(keys)) - len(todo)
        if todo:
            values = mean_log_probabilities(self.model, self.tokenizer, [(list(p), list(a)) for p, a in todo],
                                            self.batch_size)
            self.memo.update(zip(todo, values.tolist()))
        return np.array([self.memo[k] for k in keys], dtype=float)

def mean_log_probabilities(model, tokenizer, rows: list[tuple[list[int], list[int]]], batch_size: int = 16,
                           share_prefix: bool = True) -> np.ndarray:
    """For each (prompt ids, answer ids): the mean log-probability of the answer's tokens given what
    precedes them. Batched longest-first; the output layer is applied only at the answer positions
    (with a large vocabulary it is most of the cost). With ``share_prefix`` the tokens every row of a
    batch begins with (a chat template's system turn; the whole prompt of PMI's speaker-free pass) run
    once and serve every row (:mod:`empathy_utils.prefix_sharing`): the same log-probabilities within
    float rounding, a fifth fewer positions through the model in the study's judge stage."""
    import torch

    from ..prefix_sharing import shared_prompt_prefix

    out = np.zeros(len(rows))
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    body = getattr(model, "model", None)
    head = model.get_output_embeddings() if body is not None else None
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(rows[i][0]) + len(rows[i][1]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, i in enumerate(batch):
            seq = rows[i][0] + rows[i][1]
            ids[j, : len(seq)] = torch.tensor(seq)
            mask[j, : len(seq)] = 1
        rows_idx, pos_idx, targets, owner = [], [], [], []
        for j, i in enumerate(batch):
            prompt, answer = rows[i]
            for k, t in enumerate(answer):
                rows_idx.append(j)
                pos_idx.append(len(prompt) + k - 1)
                targets.append(t)
                owner.append(j)
        ids, mask = ids.to(model.device), mask.to(model.device)
        at = (torch.tensor(rows_idx, device=model.device), torch.tensor(pos_idx, device=model.device))
        with torch.inference_mode(), shared_prompt_prefix(model, enabled=share_prefix and head is not None):
            if head is not None:
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = head(hidden[at]).float()
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits[at].float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            picked = torch.arange(len(targets), device=logits.device), torch.tensor(targets, device=logits.device)
            token_lp = torch.log_softmax(logits, dim=-1)[picked]
            token_lp = token_lp.cpu()
        sums = np.zeros(len(batch))
        counts = np.zeros(len(batch))
        np.add.at(sums, owner, token_lp.numpy())
        np.add.at(counts, owner, 1)
        for j, i in enumerate(batch):
            out[i] = sums[j] / max(1.0, counts[j])
    return out


class EmbeddingHeadJudge(ScoreJudge):
    """A linear Bradley-Terry head on sentence embeddings (all-MiniLM-L6-v2): score = w . f(x, r),
    P(A better) = sigmoid(score_a - score_b). ``features``: ``reply`` (the reply's embedding) or
    ``reply+context`` (also its elementwise product with the context's embedding). Trained by
    :func:`empathy_utils.judge_validation.train_embedding_head` on train-split pairs only."""

    kind = "embedding-head"
    gives_probability = True

    def __init__(self, weights: np.ndarray, features: str, encoder, train_pairs: int, cache: dict | None = None,
                 trained_on: str = "LLMs-vs-Humans train-split pairs"):
        self.weights = np.asarray(weights, dtype=float)
        self.features = features
        self.encoder = encoder
        self.train_pairs = train_pairs
        self._cache = cache if cache is not None else {}
        self.name = f"learned head on all-MiniLM-L6-v2 embeddings ({features}; trained on {train_pairs} {trained_on})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.encoder.encode(missing, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            self._cache.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0))

    def featurize(self, prompts, replies) -> np.ndarray:
        reply = self.embed([str(r) for r in replies])
        if self.features == "reply":
            return reply
        context = self.embed([f"{c} {u}" for c, u in prompts])
        return np.concatenate([reply, reply * context], axis=1)

    def score(self, prompts, replies):
        return self.featurize(prompts, replies) @ self.weights


class WriterStyleJudge(EmbeddingHeadJudge):
    """Which writer a reply reads like, scored by how people rated that writer.

    A multinomial logistic classifier on all-MiniLM-L6-v2 embeddings tells the five writers of
    LLMs-vs-Humans replies apart (the human listener, GPT-4, LLaMA-2, Gemini, Mixtral); a reply's score
    is the writers' mean train-split human ratings weighted by the classifier's probabilities. It
    measures resemblance to well-rated writers, not empathy itself: the judges chapter says how far
    that carries. Trained by :func:`empathy_utils.judge_validation.train_writer_style` on the train
    split only."""

    kind = "writer-style"
    gives_probability = True

    def __init__(self, coef, intercept, writers, writer_ratings, encoder, train_replies: int,
                 cache: dict | None = None):
        super().__init__(np.zeros(1), "reply", encoder, 0, cache=cache)
        self.coef = np.asarray(coef, dtype=float)
        self.intercept = np.asarray(intercept, dtype=float)
        self.writers = list(writers)
        self.writer_ratings = np.asarray(writer_ratings, dtype=float)
        self.train_replies = train_replies
        self.name = (f"writer-style judge (all-MiniLM-L6-v2 embeddings -> which of the five writers a reply "
                     f"reads like, times that writer's mean human rating; trained on {train_replies} "
                     f"LLMs-vs-Humans train-split replies)")

    def writer_probabilities(self, replies) -> np.ndarray:
        logits = self.embed([str(r) for r in replies]) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def score(self, prompts, replies):
        return self.writer_probabilities(replies) @ self.writer_ratings


class CrossEncoderJudge(ScoreJudge):
    """A cross-encoder: all-MiniLM-L6-v2 reads the speaker's turn and the reply together and gives one
    score, fine-tuned in full on the human ratings of train-split dialogues (RankNet: every two replies
    to one dialogue whose ratings differ). Unlike the embedding judges it sees the reply *against* what
    it answers. P(A better) = sigmoid(score_a - score_b), the loss's own reading. Trained by
    :func:`empathy_utils.judge_validation.train_cross_encoder` on the train split only."""

    kind = "cross-encoder"
    gives_probability = True

    def __init__(self, model, train_dialogues: int, batch_size: int = 32):
        self.model = model  # a sentence_transformers CrossEncoder with one output
        self.train_dialogues = train_dialogues
        self.batch_size = batch_size
        self.name = (f"cross-encoder on all-MiniLM-L6-v2 (the speaker's turn and the reply read together; "
                     f"fine-tuned on the rated replies of {train_dialogues} LLMs-vs-Humans train-split dialogues)")

    def score(self, prompts, replies):
        import torch

        pairs = [(cross_encoder_query(c, u), str(r)) for (c, u), r in zip(prompts, replies)]
        return np.asarray(self.model.predict(pairs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(),
                                             show_progress_bar=False), dtype=float).reshape(-1)


def cross_encoder_query(context: str, utterance: str) -> str:
    """The first segment the cross-encoder reads: the situation, then the speaker's turn."""
    context, utterance = str(context or "").strip(), str(utterance or "").strip()
    return f"{context}\n{utterance}" if context and context != utterance else utterance


class RewardModelJudge(ScoreJudge):
    """A reward model: a causal LM with a scalar head and a LoRA adapter trained with TRL's
    RewardTrainer on human-rated pairs (:func:`empathy_utils.judge_validation.train_reward_model`).
    P(A better) = sigmoid(r_a - r_b), the Bradley-Terry reading the training loss assumes."""

    kind = "reward-model"
    gives_probability = True

    def __init__(self, spec: str, adapter: str, train_pairs: int, batch_size: int = 16, model=None, tokenizer=None):
        from ..models import model_label

        self.spec = spec
        self.adapter = str(adapter)
        self.batch_size = batch_size
        self.train_pairs = train_pairs
        if model is None:
            model, tokenizer = load_reward_model(spec, adapter)
        self.model, self.tokenizer = model, tokenizer
        self.name = (f"reward model local:{model_label(spec)} + LoRA (TRL RewardTrainer on {train_pairs} "
                     f"LLMs-vs-Humans train-split pairs)")

    def score(self, prompts, replies):
        import torch

        tok = self.tokenizer
        texts = [tok.apply_chat_template(reward_conversation(c, u, r), tokenize=False)
                 for (c, u), r in zip(prompts, replies)]
        out = np.zeros(len(texts))
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.model.device)
            with torch.inference_mode():
                rewards = self.model(**enc).logits[:, 0].float()
            for j, i in enumerate(batch):
                out[i] = float(rewards[j])
        return out


def reward_conversation(context: str, utterance: str, reply: str | None = None) -> list[dict]:
    """What the reward model reads: the situation and the speaker's turn, then the reply."""
    conv = [{"role": "user", "content": f"{context}\n\n{utterance}"}]
    return conv + ([{"role": "assistant", "content": str(reply)}] if reply is not None else [])


def load_reward_model(spec: str, adapter: str | None = None):
    """A sequence-classification head (one output) on a causal LM spec, with an adapter if given. With an
    adapter (a trained judge, for scoring) it goes to the GPU when there is one; without (to be trained)
    the trainer places it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from ..models import inference_device, load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(spec, padding_side="right")
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(spec), num_labels=1,
                                                               dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        device = inference_device()
        if device != "cpu":
            model = model.to(device)
    model.eval()
    return model, tokenizer
