"""Attention for LoRA training on a CPU: each key/value head's queries in one matrix product.

The embedded model has 9 query heads and 3 key/value heads (grouped-query attention). transformers'
``sdpa`` attention repeats every key/value head three times (``repeat_kv``, a copy) whenever a
training batch carries a mask, then runs SDPA's flash kernel, whose CPU backward is slow: in a profile
of ten mixed-bf16 SFT steps of the default run, its backward took 16 % of the time and its forward
5 % (benchmarks/README.md). Here the three query heads that share a key/value head are stacked into
one matrix, so attention is two plain products per key/value head, no key or value copied: scores
``queries @ keys.T``, a softmax in fp32, then ``probabilities @ values``. At the SFT batches' shape
(4 rows, 152 positions against 345 keys) forward and backward took 7.4 ms against the flash kernel's
18.5 ms in bf16; the default run's whole SFT and DPO steps in mixed bf16 ran 1.07-1.11x and 1.10x
faster. In fp32 the products are no faster than the kernel there (the whole SFT step 0.98x), so fp32
training keeps SDPA. The masks are transformers' own (those it makes for ``sdpa``: boolean, or none
for plain causal attention).

The same function of the inputs; not bit-identical (sums in another order, the softmax's
probabilities rounded to the values' dtype before the second product, as eager attention does).
Used while the study trains in mixed bf16 on a CPU (:func:`grouped_products_attention`);
``EMPATHY_ATTENTION=sdpa`` keeps transformers' attention (the old path, for comparisons). On a GPU,
SDPA's fused kernels stay.

Inference on a CPU has a second, smaller fix (:func:`grouped_decode_attention_forward`, registered as
``INFERENCE_NAME`` by ``models.load_model`` for inference models): a decoding step whose batch carries no
padding (one row, or rows of one length) has no mask, and transformers then hands SDPA the grouped
heads with ``enable_gqa``, which torch's CPU kernel serves far more slowly than the masked path, where
transformers stacks each key/value head's query heads as rows of one attention (``pack_gqa``): a decode
step of 16 unpadded rows took 115 ms against 50 ms (benchmarks/README.md, 2026-12-06 night). Here such a
step takes the stacked path too, without a mask; every other call is transformers' SDPA unchanged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

NAME = "grouped_products"
INFERENCE_NAME = "sdpa_stacked_decode"


def grouped_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                              scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' attention-function interface: ``query`` (batch, heads, length, dim), ``key`` and
    ``value`` (batch, key/value heads, keys, dim), ``attention_mask`` boolean (True: attend) or additive,
    of shape (batch, 1, length, keys), or None; returns (batch, length, heads, dim) and no weights."""
    import torch

    batch, heads, length, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling
    stacked = query.reshape(batch, kv_heads, group * length, dim)  # query head h = kv head h // group
    scores = torch.matmul(stacked, key.transpose(-1, -2)).float().view(batch, kv_heads, group, length, keys)
    scores = scores * scaling
    if attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True)) \
            and length > 1:
        attention_mask = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril(keys - length)
    if attention_mask is not None:
        mask = attention_mask
        if mask.dim() == 4:  # (batch, 1 or heads, length, keys) -> (batch, kv heads or 1, group or 1, ...)
            mask = mask.view(mask.shape[0], kv_heads, group, length, keys) if mask.shape[1] == heads \
                else mask[:, :, None]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.float()
    probabilities = torch.softmax(scores, dim=-1)
    if dropout > 0.0 and module.training:
        probabilities = torch.nn.functional.dropout(probabilities, p=dropout)
    out = torch.matmul(probabilities.to(value.dtype).view(batch, kv_heads, group * length, keys), value)
    return out.view(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def grouped_decode_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                     scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' SDPA attention, except a one-token step with no mask and grouped key/value heads on
    a CPU: the query heads that share a key/value head become that head's rows of one SDPA call (what
    transformers does when there is a mask), instead of ``enable_gqa``. The same function of the inputs."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    if (length == 1 and attention_mask is None and heads > kv_heads and query.device.type == "cpu"
            and kwargs.get("position_bias") is None and kwargs.get("cache") is None):
        stacked = query.reshape(batch, kv_heads, heads // kv_heads, dim)
        out = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, scale=scaling)
        return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def use_stacked_decode(model) -> bool:
    """For a model loaded only for inference: on a CPU, with transformers' SDPA attention, and unless
    ``EMPATHY_ATTENTION=sdpa``, switch it to :func:`grouped_decode_attention_forward`. Returns whether it did."""
    if (os.environ.get("EMPATHY_ATTENTION", "") == "sdpa" or model.device.type != "cpu"
            or getattr(model.config, "_attn_implementation", None) != "sdpa"):
        return False
    register(INFERENCE_NAME, grouped_decode_attention_forward)
    model.set_attn_implementation(INFERENCE_NAME)
    return True


def register(name: str = NAME, forward=None) -> None:
    """Make ``name`` an attention implementation transformers knows (``forward``, by default the grouped
    products), with SDPA's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(name, forward or grouped_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)


def applies(model, mixed_bf16: bool) -> bool:
    """Training in mixed bf16 on a CPU, a model whose attention is transformers' SDPA, unless
    ``EMPATHY_ATTENTION=sdpa``."""
    return (mixed_bf16 and os.environ.get("EMPATHY_ATTENTION", "") != "sdpa" and model.device.type == "cpu"
            and getattr(model.config, "_attn_implementation", None) == "sdpa")


@contextmanager
def grouped_products_attention(model, mixed_bf16: bool):
    """While training ``model`` (in mixed bf16 when ``mixed_bf16``, the trainer's ``bf16``) on a CPU:
    attention as :func:`grouped_attention_forward`, then SDPA again (the saved adapter and any later
    inference are unaffected). Yields the attention used, for the train log: "grouped products" or the
    model's own implementation's name."""
    if not applies(model, mixed_bf16):
        yield getattr(model.config, "_attn_implementation", None) or "eager"
        return
    register()
    before = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield "grouped products"
    finally:
        model.set_attn_implementation(before)
