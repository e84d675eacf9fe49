"""PRIDE's data: dialogues with their privileged information, the teacher's reasoned replies, and the
token-level training examples that line up the student's and the teacher's view of the same reply.

An *example* is a dict: ``dialogue_id``, ``dialogue`` (what the student sees: "Speaker: …" lines),
``judge_context`` and ``judge_utterance`` (what the judge is shown), ``reference`` (the data's human
reply), ``emotion`` and ``pi`` (field -> text; what only the teacher and the training-time module see).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..backends import ChatBackend, Sampling
from ..config import StudyConfig
from ..errors import StudyError
from ..prompts import load_prompt
from ..quality import FLAGS, check_reply, clean_reply, trim_to_sentence, usable
from .settings import PI_FIELDS, PrideSettings

STUDENT_PROMPT_ID = "dialogue-response"
PI_LABELS = {"situation": "Situation", "emotion": "Emotion", "problem": "Problem",
             "strategy": "Support strategy to use in your reply"}
RETRY_TEMPERATURE = 0.7


# ------------------------------------------------------------------------------------- examples
def _from_frame(frame, pi_fields: list[str]) -> list[dict]:
    rows = []
    for r in frame.itertuples():
        pi = {"situation": r.situation, "emotion": r.emotion}
        rows.append({"dialogue_id": r.dialogue_id, "dialogue": f"Speaker: {r.utterance}", "judge_context": r.situation,
                     "judge_utterance": r.utterance, "reference": r.reference_reply, "emotion": r.emotion,
                     "pi": {k: v for k, v in pi.items() if k in pi_fields}})
    return rows


def _from_esconv(examples: list[dict], pi_fields: list[str]) -> list[dict]:
    return [{"dialogue_id": e["dialogue_id"], "dialogue": e["history"], "judge_context": e["situation"],
             "judge_utterance": e["history"], "reference": e["reference"], "emotion": e["emotion"],
             "pi": {k: e[k] for k in PI_FIELDS if k in pi_fields}} for e in examples]


def load_examples(cfg: StudyConfig) -> tuple[list[dict], list[dict], dict]:
    """Train and test examples for PRIDE, subsampled (seeded) as ``pride.train_rows``/``test_rows`` say."""
    from ..data import load_dialogues, subsample

    p = cfg.pride
    if p.source == "run":
        frame = load_dialogues(cfg.data.source, cfg.data.data_dir or None)
        train = subsample(frame[frame["split"] == "train"], p.train_rows, cfg.run.seed)
        test = subsample(frame[frame["split"] == "test"], p.test_rows, cfg.run.seed)
        info = {"name": cfg.data.source, "file": frame.attrs.get("source_file"), "sha256": frame.attrs.get("sha256")}
        train_rows, test_rows = _from_frame(train, p.pi_fields), _from_frame(test, p.pi_fields)
    else:
        import random

        from ..esconv import esconv_path, examples_from_dialogues, load_esconv

        data_dir = cfg.data.data_dir or None
        splits = {}
        for split, n in (("train", p.train_rows), ("test", p.test_rows)):
            dialogues = load_esconv(split, data_dir)
            if 0 < n < len(dialogues):
                picked = sorted(random.Random(cfg.run.seed).sample(range(len(dialogues)), n))
                dialogues = [dialogues[i] for i in picked]
            per = p.esconv_turns_per_dialogue if split == "train" else 1
            splits[split] = examples_from_dialogues(dialogues, per, p.esconv_history_turns, cfg.run.seed)
        from ..data import sha256_file

        info = {"name": "esconv", "file": str(esconv_path("train", data_dir).parent),
                "sha256": {s: sha256_file(esconv_path(s, data_dir)) for s in ("train", "test")}}
        train_rows, test_rows = _from_esconv(splits["train"], p.pi_fields), _from_esconv(splits["test"], p.pi_fields)
    if not train_rows or not test_rows:
        raise StudyError(f"PRIDE: no {'train' if not train_rows else 'test'} examples from {info['name']}; "
                         "raise pride.train_rows / pride.test_rows")
    if not any(train_rows[0]["pi"].values()):
        raise StudyError(f"PRIDE: none of pride.pi_fields {p.pi_fields} exists in {info['name']}")
    info.update(train_examples=len(train_rows), test_examples=len(test_rows),
                pi_fields=[f for f in PI_FIELDS if f in train_rows[0]["pi"]])
    return train_rows, test_rows, info


def pi_block(example: dict) -> str:
    """The privileged information as the teacher reads it (one labelled line per field)."""
    return "\n".join(f"{PI_LABELS[k]}: {v}" for k, v in example["pi"].items())


def pi_sources(example: dict) -> list[str]:
    """One text per PI field, in PI_FIELDS order (empty where the source lacks the field)."""
    return [f"{PI_LABELS[k]}: {example['pi'][k]}" if example["pi"].get(k) else "" for k in PI_FIELDS]


def student_messages(example: dict) -> list[dict]:
    return load_prompt(STUDENT_PROMPT_ID).messages(dialogue=example["dialogue"])


# -------------------------------------------------------------------------------------- teacher
@dataclass
class TeacherOutput:
    """The teacher's turn for one example: its reasoning and reply, and how to feed it back."""

    reply: str
    flags: list[str]
    reasoning: list[str] = field(default_factory=list)
    # The chat the reply answers, and text the assistant turn starts with before the reply.
    messages: list[dict] = field(default_factory=list)
    assistant_prefix: str = ""

    @property
    def usable(self) -> bool:
        """Fit to train on (the test side keeps every answer: a bad teacher reply is still the teacher's)."""
        return usable(self.flags) and "unparsed" not in self.flags

    def to_json(self) -> dict:
        return {"reply": self.reply, "flags": self.flags, "reasoning": self.reasoning, "messages": self.messages,
                "assistant_prefix": self.assistant_prefix}


@dataclass
class TeacherLog:
    calls: int = 0
    retried: int = 0
    unusable: int = 0  # still unusable after the retry (not trained on)
    unparsed: int = 0
    flags: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"calls": self.calls, "retried": self.retried, "unusable": self.unusable, "unparsed": self.unparsed,
                "flags": {f: int(self.flags.get(f, 0)) for f in FLAGS}}


def _policy(text: str, finish: str, prompt_text: str, on_truncated: str) -> tuple[str, list[str]]:
    text = clean_reply(text)
    flags = check_reply(text, finish, None, prompt_text)
    if "truncated" in flags and on_truncated != "keep":
        text = trim_to_sentence(text) if on_truncated == "trim" else ""
        if not text:
            flags = ["empty", "truncated"]
    return text, flags


_RESPONSE_LINE = re.compile(r"(?im)^\s*\**\s*response\s*\**\s*:\s*")


def split_single_turn(answer: str) -> tuple[str, str] | None:
    """'Feelings: …\\nSituation: …\\nResponse: text' -> (text up to and including 'Response:', text)."""
    matches = list(_RESPONSE_LINE.finditer(answer))
    if not matches:
        return None
    last = matches[-1]
    return answer[: last.end()], answer[last.end():]


def teacher_replies(teacher: ChatBackend, examples: list[dict], p: PrideSettings, seed: int,
                    log: TeacherLog) -> list[TeacherOutput]:
    """The privileged teacher answers every example with the empathy-reasoning prompt. Unusable
    replies are asked again once with sampling; those still unusable are flagged (``.usable``)."""
    reasoning = Sampling(p.reasoning_max_new_tokens, p.teacher_temperature, seed=seed)
    replying = Sampling(p.reply_max_new_tokens, p.teacher_temperature, seed=seed)
    prompt = load_prompt(p.teacher_prompt)
    if p.teacher_prompt == "empathy-reasoning":
        convs = [prompt.messages(situation=e["pi"].get("situation", "not given"),
                                 emotion=e["pi"].get("emotion", "not given"), utterance=e["judge_utterance"])
                 for e in examples]
        whole = Sampling(p.reasoning_max_new_tokens * 2 + p.reply_max_new_tokens, p.teacher_temperature, seed=seed)
        answers = teacher.chat(convs, whole)
        log.calls += len(convs)
        out: list[TeacherOutput] = []
        for conv, ans in zip(convs, answers):
            parts = split_single_turn(ans.text)
            extra = []
            if parts is None:
                log.unparsed += 1
                parts = ("", ans.text)
                if p.teacher_on_unparsed == "drop":
                    extra = ["unparsed"]
            text, flags = _policy(parts[1], ans.finish_reason, conv[-1]["content"], p.teacher_on_truncated)
            log.flags.update(flags)
            prefix = parts[0].rstrip() + " " if parts[0] else ""
            result = TeacherOutput(text, flags + extra, [parts[0].strip()] if parts[0] else [], conv, prefix)
            log.unusable += not result.usable
            out.append(result)
        return out

    turns = [prompt.render(private=pi_block(e), dialogue=e["dialogue"]) for e in examples]
    convs = [[{"role": "user", "content": t[0]}] for t in turns]
    notes: list[list[str]] = [[] for _ in examples]
    for k in range(len(prompt.turns) - 1):
        answers = teacher.chat(convs, reasoning)
        log.calls += len(convs)
        for i, a in enumerate(answers):
            note = a.text.strip()
            notes[i].append(note)
            convs[i] = convs[i] + [{"role": "assistant", "content": note}, {"role": "user", "content": turns[i][k + 1]}]
    answers = teacher.chat(convs, replying)
    log.calls += len(convs)
    checked = [_policy(a.text, a.finish_reason, c[-1]["content"], p.teacher_on_truncated) for c, a in zip(convs, answers)]
    retry = [i for i, (_, flags) in enumerate(checked) if not usable(flags)]
    if retry:
        again = teacher.chat([convs[i] for i in retry],
                             Sampling(p.reply_max_new_tokens, RETRY_TEMPERATURE, 0.95, seed + 1))
        log.calls += len(retry)
        log.retried += len(retry)
        for i, a in zip(retry, again):
            checked[i] = _policy(a.text, a.finish_reason, convs[i][-1]["content"], p.teacher_on_truncated)
    out = []
    for conv, note, (text, flags) in zip(convs, notes, checked):
        log.flags.update(flags)
        result = TeacherOutput(text, flags, note, conv, "")
        log.unusable += not result.usable
        out.append(result)
    return out


# ------------------------------------------------------------------------------- tokenization
def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids a chat model sees before it answers (as LocalBackend encodes them at test time)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def build_features(tokenizer, example: dict, target: str, teacher: TeacherOutput | None, max_length: int,
                   pi_max_tokens: int) -> dict | None:
    """Token ids of one training example: the student's prompt + reply, the teacher's context + the
    *same* reply tokens (so their positions line up), and the PI sources. None when it cannot fit."""
    reply = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    student_prompt = prompt_ids(tokenizer, student_messages(example))
    room = max_length - len(student_prompt)
    if room < 2:
        return None
    reply = reply[:room]
    features = {"student_ids": student_prompt + reply, "student_start": len(student_prompt), "reply_length": len(reply)}
    if teacher is not None:
        context = prompt_ids(tokenizer, teacher.messages)
        if teacher.assistant_prefix:
            context += tokenizer(teacher.assistant_prefix, add_special_tokens=False)["input_ids"]
        features.update(teacher_ids=context + reply, teacher_start=len(context))
    features["pi_ids"] = [tokenizer(text, add_special_tokens=False)["input_ids"][:pi_max_tokens] if text else []
                          for text in pi_sources(example)]
    return features


class PrideCollator:
    """Pads a batch (right side) and draws which rows see their PI this step (PI dropout)."""

    def __init__(self, pad_id: int, pi_dropout: float, use_pi: bool, seed: int):
        import torch

        self.pad_id = pad_id
        self.pi_dropout = pi_dropout
        self.use_pi = use_pi
        self.generator = torch.Generator().manual_seed(seed)

    def _pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        out = {}
        out["input_ids"], out["attention_mask"] = self._pad([b["student_ids"] for b in batch])
        lengths = torch.tensor([b["reply_length"] for b in batch])
        rows = torch.repeat_interleave(torch.arange(len(batch)), lengths)
        offsets = torch.cat([torch.arange(n) for n in lengths.tolist()])
        # Logits at position p predict token p + 1: the reply token at start + j comes from start + j - 1.
        out["rows"] = rows
        out["student_positions"] = torch.tensor([b["student_start"] for b in batch])[rows] + offsets - 1
        out["targets"] = out["input_ids"][rows, out["student_positions"] + 1]
        if "teacher_ids" in batch[0]:
            out["teacher_input_ids"], out["teacher_attention_mask"] = self._pad([b["teacher_ids"] for b in batch])
            out["teacher_positions"] = torch.tensor([b["teacher_start"] for b in batch])[rows] + offsets - 1
        if self.use_pi:
            n_sources = len(batch[0]["pi_ids"])
            width = max(1, max(len(s) for b in batch for s in b["pi_ids"]))
            ids = torch.full((len(batch), n_sources, width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), n_sources, width), dtype=torch.long)
            for i, b in enumerate(batch):
                for j, s in enumerate(b["pi_ids"]):
                    if s:
                        ids[i, j, : len(s)] = torch.tensor(s, dtype=torch.long)
                        mask[i, j, : len(s)] = 1
            out["pi_input_ids"], out["pi_attention_mask"] = ids, mask
            keep = torch.rand(len(batch), generator=self.generator) >= self.pi_dropout
            out["pi_present"] = keep & mask.flatten(1).any(-1).bool()
        return out
