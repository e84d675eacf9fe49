"""Chat backends: one interface over a local transformers model and any OpenAI-compatible server.

Teachers, students and judges all talk through :class:`ChatBackend`:
``chat(conversations, sampling)`` answers a batch of chats, ``choice_logprobs(conversations,
choices)`` reads the next-token log-probabilities of a few one-token answers (for judges).

- :class:`LocalBackend` — a transformers model in this process, batched with left padding
  (on 2 CPU cores a batch of 16 is ~4x faster than one prompt at a time, with identical greedy text).
- :class:`OpenAIBackend` — the ``openai`` SDK against ``base_url`` (vLLM, ``transformers serve``,
  llama.cpp's server, or a hosted API); bounded concurrency, the SDK's own retries with exponential
  backoff on 429/5xx/timeouts, then a :class:`BackendError`. The key is read from an environment
  variable *named* in the params, never from the params themselves.
- :class:`CachedBackend` — wraps either with a persistent SQLite cache keyed by backend, model,
  messages and sampling parameters, so a re-run or a resumed run repeats no call.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .artifacts import files_digest
from .errors import BackendError

Conversation = list[dict]


# transformers' top-k when sampling and the model's generation config sets none.
GENERATE_DEFAULT_TOP_K = 50


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters; part of every cache key. temperature 0 = greedy."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (the model ended its turn) or "length" (cut at max_new_tokens)
    completion_tokens: int = 0
    cached: bool = False

    def to_json(self) -> dict:
        return {"text": self.text, "finish_reason": self.finish_reason, "completion_tokens": self.completion_tokens}


class ChatBackend:
    """Interface; ``identity`` must change whenever the model's answers could change."""

    name: str = "backend"
    identity: str = "backend"
    # How many conversations to hand over at once (a cache commits after each such chunk).
    chunk_size: int = 64

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[Completion]:
        raise NotImplementedError

    def choice_logprobs(self, conversations: Sequence[Conversation], choices: Sequence[str]) -> list[dict[str, float]]:
        raise NotImplementedError(f"{self.name} does not expose token probabilities")

    @property
    def supports_logprobs(self) -> bool:
        return False


# ------------------------------------------------------------------------------------- local
class LocalBackend(ChatBackend):
    """A transformers causal LM in this process (optionally with a PEFT adapter)."""

    # Below this many shared tokens, computing the prefix separately is not worth it.
    MIN_SHARED_PREFIX = 16

    def __init__(self, spec: str, adapter: str | os.PathLike | None = None, batch_size: int = 16,
                 model=None, tokenizer=None, label: str | None = None, progress: bool = True,
                 share_prefix: bool = True, dtype: str = "auto", drop_finished: bool = True,
                 reserve_cache: bool = True):
        from .models import load_model, load_tokenizer, model_label

        self.spec = spec
        self.adapter = str(adapter) if adapter else None
        self.batch_size = batch_size
        # Inference only: on a GPU when there is one, in model.dtype (auto: bf16 where the hardware has it).
        self.model = model if model is not None else load_model(spec, adapter, dtype=dtype)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec, padding_side="left")
        self.tokenizer.padding_side = "left"
        self.name = label or f"local:{model_label(spec)}" + (f"+{Path(self.adapter).name}" if self.adapter else "")
        self.identity = f"local:{spec}" + (f":{files_digest(self.adapter, '*.safetensors')[:12]}" if self.adapter else "")
        if self.adapter and not hasattr(self.model, "peft_config"):
            self.identity += "+merged"  # replies of merged weights may differ in the last bits from PEFT's
        weights = str(self.model.dtype).removeprefix("torch.")
        if weights != "float32":  # cached fp32 answers are not bf16 answers (fp32 keeps its old identity)
            self.identity += f"@{weights}"
        self.progress = progress
        self.share_prefix = share_prefix
        # Replies, greedy and sampled, come from _decode_dropping_finished (False: transformers' generate,
        # which gives the same greedy replies, and for a single row the same sampled draws).
        self.drop_finished = drop_finished
        # That loop writes each new token's keys and values in place (kv_cache; False: transformers' cache).
        self.reserve_cache = reserve_cache

    @property
    def chunk_size(self) -> int:
        return self.batch_size

    @property
    def supports_logprobs(self) -> bool:
        return True

    def _encode(self, conversations: Sequence[Conversation]) -> list[list[int]]:
        out = []
        for conv in conversations:
            ids = self.tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            out.append(list(ids))
        return out

    def _batches(self, encoded: list[list[int]]):
        # Longest first: similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _pad(self, rows: list[list[int]], prefix: list[int] | None = None):
        """Left-pad ``rows``; with a shared ``prefix`` the layout is [prefix][pads][rest], so the
        prefix's keys and values, computed once, serve every row (positions follow the mask)."""
        import torch

        prefix = prefix or []
        rest = [r[len(prefix) :] for r in rows]
        width = max(len(r) for r in rest)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), len(prefix) + width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), len(prefix) + width), dtype=torch.long)
        if prefix:
            ids[:, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
            mask[:, : len(prefix)] = 1
        for i, r in enumerate(rest):
            ids[i, ids.shape[1] - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, ids.shape[1] - len(r) :] = 1
        return ids.to(self.model.device), mask.to(self.model.device)

    def _shared_prefix(self, encoded: list[list[int]]) -> list[int]:
        """The token prefix every conversation shares, less one token (each row keeps a token of its own)."""
        if not self.share_prefix or len(encoded) < 2:
            return []
        shortest = min(len(e) for e in encoded)
        n = 0
        while n < shortest - 1 and all(e[n] == encoded[0][n] for e in encoded):
            n += 1
        return encoded[0][:n] if n >= self.MIN_SHARED_PREFIX else []

    def _prefix_cache(self, prefix: list[int]):
        import torch

        if not prefix:
            return None
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prefix], device=self.model.device), use_cache=True, logits_to_keep=1)
        return out.past_key_values

    @staticmethod
    def _expand_cache(cache, n: int):
        from transformers import DynamicCache

        if cache is None:
            return None
        expanded = DynamicCache()
        for i, layer in enumerate(cache.layers):
            expanded.update(layer.keys.expand(n, -1, -1, -1).contiguous(),
                            layer.values.expand(n, -1, -1, -1).contiguous(), i)
        return expanded

    def _sampling_warpers(self, sampling: Sampling):
        """What ``generate(do_sample=True)`` applies to the logits before drawing, in its order:
        temperature, the model's top-k (transformers' default 50 where the model sets none), top-p."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        warpers = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
        top_k = getattr(self.model.generation_config, "top_k", None)
        top_k = GENERATE_DEFAULT_TOP_K if top_k is None else top_k
        if top_k and top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(sampling.top_p))
        return warpers

    def _decode_dropping_finished(self, ids, mask, cache, sampling: Sampling, eos: int) -> list[list[int]]:
        """The replies of one batch from :func:`decode_dropping_finished`. Greedy: same forward pass, same
        argmax, so the same replies as ``generate`` (tested). Sampled (``sampling.temperature`` > 0):
        ``generate``'s temperature, top-k and top-p and one draw per step from torch's generator seeded
        with ``sampling.seed``, so one row draws what ``generate`` draws (tested); once a row has dropped
        out the batch's draws differ from ``generate``'s, from the same distribution."""
        import torch

        warpers = self._sampling_warpers(sampling) if sampling.temperature > 0 else None
        if warpers is not None:
            torch.manual_seed(sampling.seed)  # as the generate path does: the same seed, the same first draws
        return decode_dropping_finished(self.model, ids, mask, cache, sampling.max_new_tokens, warpers, {eos},
                                        reserve_cache=self.reserve_cache)

    def chat(self, conversations, sampling: Sampling) -> list[Completion]:
        import torch

        encoded = self._encode(conversations)
        results: list[Completion | None] = [None] * len(encoded)
        eos = self.tokenizer.eos_token_id
        prefix = self._shared_prefix(encoded)
        prefix_cache = self._prefix_cache(prefix)
        batches = list(self._batches(encoded))
        for batch in tqdm(batches, desc=f"{self.name} generating", disable=not self.progress or len(batches) < 2):
            ids, mask = self._pad([encoded[i] for i in batch], prefix)
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                          eos_token_id=eos, past_key_values=self._expand_cache(prefix_cache, len(batch)))
            if self.drop_finished:
                new = self._decode_dropping_finished(ids, mask, kwargs["past_key_values"], sampling, eos)
            else:
                if sampling.temperature > 0:
                    torch.manual_seed(sampling.seed)
                    kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                with torch.inference_mode():
                    out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                new = out[:, ids.shape[1] :].tolist()
            for row, i in enumerate(batch):
                toks = new[row]
                ended = eos in toks
                if ended:
                    toks = toks[: toks.index(eos)]
                toks = [t for t in toks if t != self.tokenizer.pad_token_id]
                text = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
                results[i] = Completion(text, "stop" if ended else "length", len(toks))
        return results  # type: ignore[return-value]

    def choice_logprobs(self, conversations, choices):
        import torch

        choice_ids = {}
        for c in choices:
            ids = self.tokenizer.encode(c, add_special_tokens=False)
            if len(ids) != 1:
                raise BackendError(f"{self.name}: answer {c!r} is not a single token for this tokenizer")
            choice_ids[c] = ids[0]
        encoded = self._encode(conversations)
        results: list[dict | None] = [None] * len(encoded)
        prefix = self._shared_prefix(encoded)
        prefix_cache = self._prefix_cache(prefix)
        for batch in self._batches(encoded):
            ids, mask = self._pad([encoded[i] for i in batch], prefix)
            cache = self._expand_cache(prefix_cache, len(batch))
            with torch.inference_mode():
                if cache is None:
                    logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :]
                else:
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(prefix) :]
                    # Only the last position's logits: the whole sequence's would be batch x length x vocabulary
                    # floats (1.9 GB for 16 rows of 600 tokens) for one row of them used.
                    logits = self.model(input_ids=ids[:, len(prefix) :], attention_mask=mask, past_key_values=cache,
                                        position_ids=positions, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(batch):
                results[i] = {c: float(logp[row, t]) for c, t in choice_ids.items()}
        return results  # type: ignore[return-value]


def decode_dropping_finished(model, ids, mask, cache, max_new_tokens: int, warpers=None, eos=frozenset(),
                             reserve_cache: bool = True) -> list[list[int]]:
    """Decode a left-padded batch, dropping a row (and its keys and values) as soon as it has ended its
    turn. ``generate`` keeps stepping finished rows until the longest reply of the batch is done: 42 % of
    the decode steps of the default study's replies went to rows that had already finished
    (benchmarks/README.md). ``cache`` may already hold the keys and values of the first positions of
    ``ids`` (a prefix run once); positions follow the mask, as ``generate``'s do. ``warpers`` (a
    ``LogitsProcessorList``) turn the logits into a sampling distribution, one draw per row and step
    from torch's global generator; None = greedy. Returns each row's new tokens, ending with its end
    token (one of ``eos``) where the row ended its turn."""
    import torch

    from .kv_cache import reserved_cache, supports_reserved_cache

    past = cache.get_seq_length() if cache is not None else 0
    config = model.config
    if reserve_cache and supports_reserved_cache(config):
        room = (ids.shape[1] - past if cache is not None else 0) + max_new_tokens
        cache = reserved_cache(cache, config.num_hidden_layers, room)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, step_positions = ids[:, past:], positions[:, past:]
    rows = torch.arange(ids.shape[0])  # which of the batch's rows are still decoding
    new: list[list[int]] = [[] for _ in range(ids.shape[0])]
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            if warpers is None:
                chosen = logits.argmax(-1)
            else:
                probs = torch.softmax(warpers(step_ids, logits), dim=-1)
                chosen = torch.multinomial(probs, num_samples=1).squeeze(1)
            keep = []
            for j, (row, token) in enumerate(zip(rows.tolist(), chosen.tolist())):
                new[row].append(token)
                if token not in eos:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                rows, mask, chosen, step_positions = rows[keep], mask[index], chosen[index], step_positions[index]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            step_ids, step_positions = chosen[:, None], step_positions[:, -1:] + 1
    return new


# ------------------------------------------------------------------------------------ openai
class OpenAIBackend(ChatBackend):
    """Any OpenAI-compatible chat-completions server, through the ``openai`` SDK."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout_seconds: float = 120.0, max_retries: int = 5,
                 progress: bool = True):
        from openai import OpenAI

        # Local servers accept any key; hosted ones need the variable set. The key never leaves memory.
        key = os.environ.get(api_key_env) or "not-needed-for-local-servers"
        self.client = OpenAI(base_url=base_url, api_key=key, timeout=timeout_seconds, max_retries=max_retries)
        self.base_url = base_url
        self.model = model
        self.max_concurrency = max(1, max_concurrency)
        self.name = f"api:{model}"
        self.identity = f"openai:{base_url.rstrip('/')}:{model}"
        self.progress = progress
        # Requests in flight together; the cache commits after each group, so an interrupted run
        # loses at most this many answers.
        self.chunk_size = self.max_concurrency

    def _one(self, conv: Conversation, sampling: Sampling) -> Completion:
        import openai

        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=conv,
                max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=sampling.seed,
            )
        except openai.APIStatusError as exc:
            raise BackendError(
                f"{self.base_url}: the server answered HTTP {exc.status_code} for model {self.model!r} "
                f"after retries ({_short(exc)})"
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise BackendError(f"{self.base_url}: no answer after {self.client.max_retries} retries ({_short(exc)})") from None
        choice = resp.choices[0]
        text = (choice.message.content or "").strip()
        tokens = resp.usage.completion_tokens if resp.usage else 0
        return Completion(text, "length" if choice.finish_reason == "length" else "stop", tokens or 0)

    def chat(self, conversations, sampling):
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = [pool.submit(self._one, c, sampling) for c in conversations]
            return [f.result() for f in tqdm(futures, desc=f"{self.name}", disable=not self.progress)]


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"


# ------------------------------------------------------------------------------------- cache
class ResponseCache:
    """SQLite store of completions; every answer is committed as soon as it arrives."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def key(identity: str, conversation: Conversation, sampling: Sampling) -> str:
        payload = json.dumps([identity, conversation, asdict(sampling)], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        found = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                q = f"SELECT key, value FROM completions WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in self._db.execute(q, chunk):
                    found[k] = json.loads(v)
        return found

    def put_many(self, items: dict[str, dict]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO completions (key, value) VALUES (?, ?)",
                [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()],
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        self._db.close()


@dataclass
class CallStats:
    requested: int = 0
    from_cache: int = 0
    new_calls: int = 0


class CachedBackend(ChatBackend):
    """Answers from the cache where it can; asks the wrapped backend for the rest in chunks,
    committing each chunk, so an interrupted run loses at most one chunk of work (one batch for a
    local model, ``max_concurrency`` requests for a server)."""

    def __init__(self, inner: ChatBackend, cache: ResponseCache, chunk_size: int | None = None):
        self.inner = inner
        self.cache = cache
        self.chunk_size = chunk_size or inner.chunk_size
        self.name = inner.name
        self.identity = inner.identity
        self.stats = CallStats()

    @property
    def supports_logprobs(self) -> bool:
        return self.inner.supports_logprobs

    def chat(self, conversations, sampling):
        keys = [ResponseCache.key(self.identity, c, sampling) for c in conversations]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        self.stats.requested += len(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        # The same conversation asked twice in one call is answered once.
        unique_missing = list({keys[i]: i for i in missing}.values())
        for start in range(0, len(unique_missing), self.chunk_size):
            chunk = unique_missing[start : start + self.chunk_size]
            answers = self.inner.chat([conversations[i] for i in chunk], sampling)
            fresh = {keys[i]: a.to_json() for i, a in zip(chunk, answers)}
            self.cache.put_many(fresh)
            found.update(fresh)
            self.stats.new_calls += len(chunk)
        self.stats.from_cache += len(keys) - len(unique_missing)
        missing_set = set(missing)
        return [Completion(**found[k], cached=i not in missing_set) for i, k in enumerate(keys)]

    def choice_logprobs(self, conversations, choices):
        return self.inner.choice_logprobs(conversations, choices)


def make_backend(settings, cache_path: str | os.PathLike | None = None, batch_size: int | None = None,
                 dtype: str = "auto") -> ChatBackend:
    """Build the backend a ``teacher`` or ``judge`` section describes (cached if ``cache_path``).
    ``dtype`` (``model.dtype``) places a local model: a GPU when present, bf16 where the hardware has it."""
    if settings.backend == "local":
        backend: ChatBackend = LocalBackend(settings.model, batch_size=batch_size or settings.batch_size, dtype=dtype)
    elif settings.backend == "openai":
        backend = OpenAIBackend(
            settings.base_url,
            settings.model,
            api_key_env=settings.api_key_env,
            max_concurrency=settings.max_concurrency,
            timeout_seconds=settings.timeout_seconds,
            max_retries=settings.max_retries,
        )
    else:  # validated earlier; kept for direct callers
        raise BackendError(f"unknown backend {settings.backend!r}")
    if cache_path:
        backend = CachedBackend(backend, ResponseCache(cache_path))
    return backend


__all__ = [
    "Sampling",
    "Completion",
    "ChatBackend",
    "LocalBackend",
    "OpenAIBackend",
    "CachedBackend",
    "ResponseCache",
    "make_backend",
]
