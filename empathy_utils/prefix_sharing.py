"""Training on a batch whose rows begin with the same tokens: run that prefix once, not once per row.

Every SFT example and DPO row of the study starts with the base prompt's definitions of empathy (193
of an SFT example's 304 tokens on average in the default run), so a batch of four runs those 193
tokens four times, forward and backward. :func:`shared_prompt_prefix` wraps the model's decoder
(the module that TRL's trainers call for hidden states) so that, for a right-padded batch whose rows
share at least ``min_tokens`` leading tokens, it runs the prefix for one row, expands its keys and
values to every row and runs each row's remainder against them. The hidden states are the same
function of the weights (same positions, same causal attention), so the loss and its gradients are
too: gradients reach the prefix through the expanded keys and values, summed over the rows. Not
bit-identical: the matrix products see other shapes (tests compare within float tolerance).

Sharing goes beyond the batch-wide prefix: rows that go on agreeing after the batch parts ways share
that stretch too (:func:`plan_segments`). A DPO batch holds each prompt twice (chosen and rejected
reply), so after the batch-wide definitions each pair runs its own dialogue once; TRL's SDFT samples
``num_generations`` replies per prompt, so each prompt (left-padded alike) runs once for its copies,
for the student and for the privileged teacher. The same idea for DPO is "prefix sharing" (Wang and
Hegde, 2024).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Below this many shared tokens, the extra pass costs more than it saves.
MIN_SHARED_TOKENS = 16


@dataclass
class SharingStats:
    """What the wrapped decoder did: batches it saw, of those how many shared a prefix, and the
    tokens the model ran against the tokens the batches held."""

    batches: int = 0
    shared_batches: int = 0
    tokens_in_batches: int = 0
    tokens_run: int = 0

    def to_json(self) -> dict:
        saved = self.tokens_in_batches - self.tokens_run
        return {"batches": self.batches, "shared_batches": self.shared_batches,
                "tokens_in_batches": self.tokens_in_batches, "tokens_run": self.tokens_run,
                "share_saved": round(saved / self.tokens_in_batches, 3) if self.tokens_in_batches else 0.0}


def shared_length(input_ids, attention_mask, position_ids=None) -> int:
    """How many leading positions every row shares (same token, attended, same position), leaving
    each row at least one position of its own."""
    import torch

    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    if position_ids is not None and position_ids.dim() == 2 and position_ids.shape[0] == input_ids.shape[0]:
        same &= (position_ids == position_ids[:1]).all(dim=0)
    run = int(torch.cumprod(same.int(), dim=0).sum())
    return min(run, input_ids.shape[1] - 1)


def common_prefix_lengths(input_ids, attention_mask=None, position_ids=None):
    """``L[i, j]``: how many leading positions rows i and j agree on (same token, same mask value,
    same position). Padding the two rows share counts: a row's first positions depend only on
    themselves (causal attention)."""
    import torch

    same = input_ids[:, None, :] == input_ids[None, :, :]
    if attention_mask is not None:
        same &= attention_mask[:, None, :] == attention_mask[None, :, :]
    if position_ids is not None and position_ids.dim() == 2 and position_ids.shape[0] == input_ids.shape[0]:
        same &= position_ids[:, None, :] == position_ids[None, :, :]
    return torch.cumprod(same.int(), dim=-1).sum(-1)


@dataclass
class Segment:
    """Positions ``start:end`` of the batch, run for ``rows`` only (one row per group of rows that agree
    up to ``end``); ``member[i]`` is batch row i's group, an index into ``rows``."""

    start: int
    end: int
    rows: Any
    member: Any


def _groups(lengths, threshold: int):
    """Rows that agree on at least ``threshold`` leading positions, as (one row per group, each row's group)."""
    import torch

    first = (lengths >= threshold).int().argmax(dim=1)  # each row's first row that agrees with it that far
    rows, member = torch.unique(first, sorted=True, return_inverse=True)
    return rows, member


def plan_segments(input_ids, attention_mask=None, position_ids=None, min_tokens: int = MIN_SHARED_TOKENS):
    """How to run a batch with every stretch its rows agree on run once per group of agreeing rows.

    Returns the shared segments in order (the positions after the last one are run by every row), or
    ``[]`` when no stretch of at least ``min_tokens`` positions is shared. The groups only split as the
    positions go on, so each segment's keys and values, gathered row by row, serve the next. A stretch
    shorter than ``min_tokens`` is not run on its own: it joins the next segment (run by more rows)."""
    import torch

    n_rows, width = input_ids.shape
    lengths = common_prefix_lengths(input_ids, attention_mask, position_ids).clamp(max=width - 1)  # one own position
    off_diagonal = lengths[~torch.eye(n_rows, dtype=torch.bool)]
    segments: list[Segment] = []
    start = 0
    for end in sorted(int(v) for v in off_diagonal.unique() if v > 0):
        rows, member = _groups(lengths, end)
        if len(rows) == n_rows:
            break
        if end - start >= min_tokens:
            segments.append(Segment(start, end, rows, member))
            start = end
    return segments


def regroup_cache(cache, parent, single: bool = False):
    """A key/value cache gathered row by row (``parent``: each new row's index among the cache's rows). From a single row it is a view (expand); otherwise a copy,
    and backward sums each row's gradients into its group's."""
    from transformers import DynamicCache

    regrouped = DynamicCache()
    for i, layer in enumerate(cache.layers):
        if single:
            keys, values = (t.expand(len(parent), -1, -1, -1) for t in (layer.keys, layer.values))
        else:
            keys, values = layer.keys[parent], layer.values[parent]
        regrouped.update(keys, values, i)
    return regrouped


def decoder_of(model):
    """The module that turns token ids into hidden states (``LlamaModel`` inside a PEFT-wrapped
    ``LlamaForCausalLM``), or None when the model has no separate one."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, "base_model", None)
    return backbone if backbone is not None and backbone is not inner else None


def supports_sharing(config) -> bool:
    """Only decoders whose every layer attends to all earlier tokens (no sliding windows)."""
    from .kv_cache import supports_reserved_cache

    return supports_reserved_cache(config)


class SharedPrefixForward:
    """The decoder's forward with shared stretches run once (see the module docstring); any
    call it cannot serve exactly (a cache passed in, embeddings instead of ids, extra outputs asked
    for, gradient checkpointing, one row) goes to the original forward unchanged."""

    HANDLED = {"use_cache", "return_dict"}

    def __init__(self, backbone, original, min_tokens: int = MIN_SHARED_TOKENS):
        self.backbone = backbone
        self.original = original
        self.min_tokens = min_tokens
        self.stats = SharingStats()

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, use_cache=None, **kwargs):
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPast

        plain = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        eligible = (input_ids is not None and inputs_embeds is None and past_key_values is None
                    and input_ids.dim() == 2 and input_ids.shape[0] > 1
                    and (attention_mask is None or attention_mask.dim() == 2)
                    and not (self.backbone.training and getattr(self.backbone, "gradient_checkpointing", False))
                    and not any(v for k, v in kwargs.items() if k not in self.HANDLED))
        if not eligible:
            return self.original(**plain)
        rows, width = input_ids.shape
        self.stats.batches += 1
        self.stats.tokens_in_batches += rows * width
        segments = plan_segments(input_ids, attention_mask, position_ids, self.min_tokens)
        if not segments:
            self.stats.tokens_run += rows * width
            return self.original(**plain)
        self.stats.shared_batches += 1
        self.stats.tokens_run += sum(len(s.rows) * (s.end - s.start) for s in segments) + rows * (width - segments[-1].end)
        every_row = torch.arange(rows, device=input_ids.device)
        last = Segment(segments[-1].end, width, every_row, every_row)

        def part(tensor, segment, sl):
            if tensor is None:
                return None
            return (tensor[segment.rows] if tensor.shape[0] == rows else tensor)[:, sl]

        cache, pieces, previous = None, [], None
        for segment in segments + [last]:
            if previous is not None:
                cache = regroup_cache(cache, previous.member[segment.rows], single=len(previous.rows) == 1)
            out = self.original(input_ids=input_ids[segment.rows, segment.start:segment.end],
                                attention_mask=part(attention_mask, segment, slice(0, segment.end)),
                                position_ids=part(position_ids, segment, slice(segment.start, segment.end)),
                                past_key_values=cache, use_cache=True)
            cache, previous = out.past_key_values, segment
            hidden = out.last_hidden_state
            if segment is not last:
                hidden = hidden.expand(rows, -1, -1) if len(segment.rows) == 1 else hidden[segment.member]
            pieces.append(hidden)
        return BaseModelOutputWithPast(last_hidden_state=torch.cat(pieces, dim=1),
                                       past_key_values=cache if use_cache else None)


@contextmanager
def shared_prompt_prefix(model, enabled: bool = True, min_tokens: int = MIN_SHARED_TOKENS):
    """Inside the block, ``model``'s decoder runs a batch's shared prefix once (module docstring).
    Yields the :class:`SharingStats` it keeps (None when off or when the model's decoder does not
    qualify)."""
    backbone = decoder_of(model) if enabled else None
    if backbone is None or not supports_sharing(backbone.config):
        yield None
        return
    had_own = "forward" in backbone.__dict__
    before = backbone.__dict__.get("forward")
    sharer = SharedPrefixForward(backbone, backbone.forward, min_tokens)
    backbone.forward = sharer
    try:
        yield sharer.stats
    finally:
        if had_own:
            backbone.forward = before
        else:
            del backbone.forward
