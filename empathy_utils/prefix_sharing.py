"""Training on a batch whose rows begin with the same tokens: run that prefix once, not once per row.

Every SFT example and DPO row of the study starts with the base prompt's definitions of empathy (193
of an SFT example's 304 tokens on average in the default run), so a batch of four runs those 193
tokens four times, forward and backward. :func:`shared_prompt_prefix` wraps the model's decoder
(the module that TRL's trainers call for hidden states) so that, for a right-padded batch whose rows
share at least ``min_tokens`` leading tokens, it runs the prefix for one row, expands its keys and
values to every row and runs each row's remainder against them. The hidden states are the same
function of the weights (same positions, same causal attention), so the loss and its gradients are
too: gradients reach the prefix through the expanded keys and values, summed over the rows. Not
bit-identical: the matrix products see other shapes (tests compare within float tolerance). The same
idea for DPO is "prefix sharing" (Wang and Hegde, 2024); here it is the batch-wide prefix only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

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
    """The decoder's forward with the batch-wide prefix run once (see the module docstring); any
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
        from transformers import DynamicCache
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
        n = shared_length(input_ids, attention_mask, position_ids)
        if n < self.min_tokens:
            self.stats.tokens_run += rows * width
            return self.original(**plain)
        self.stats.shared_batches += 1
        self.stats.tokens_run += n + rows * (width - n)

        def part(tensor, sl, first_row=False):
            if tensor is None:
                return None
            tensor = tensor[:1] if first_row and tensor.shape[0] == rows else tensor
            return tensor[:, sl]

        head = self.original(input_ids=input_ids[:1, :n], attention_mask=part(attention_mask, slice(0, n), True),
                             position_ids=part(position_ids, slice(0, n), True), use_cache=True)
        cache = DynamicCache()
        for i, layer in enumerate(head.past_key_values.layers):
            # expand is a view: the attention's concatenation copies it, and backward sums the rows' gradients
            cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), i)
        tail = self.original(input_ids=input_ids[:, n:], attention_mask=attention_mask,
                             position_ids=part(position_ids, slice(n, None)), past_key_values=cache, use_cache=True)
        hidden = torch.cat([head.last_hidden_state.expand(rows, -1, -1), tail.last_hidden_state], dim=1)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=tail.past_key_values if use_cache else None)


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
