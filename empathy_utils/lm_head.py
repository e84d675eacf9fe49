"""The LM head of LoRA training on a CPU: each token's log-probability from one product over the vocabulary.

TRL's SFT and DPO trainers score tokens with ``ChunkedLogProbFunction``, written for GPUs: it splits the
49,152-token vocabulary into tiles, casts each tile of the frozen head weight to the autocast dtype in every
forward and every backward, and on a CPU multiplies the backward in fp32 after casting the bf16 tiles
back. In mixed-bf16 SFT on a CPU with bf16 units that head was about a fifth of a step, most of it casts
and elementwise passes rather than products (torch.profiler, benchmarks/README.md).

:class:`WholeVocabularyLogProb` gives the same outputs (log-probabilities, and on request the entropy,
``log(sum p^2)``, the mean logit and whether the target is the first argmax) and the same gradients for
the hidden states: it multiplies a block of rows by the whole vocabulary at once, the logits in the
autocast dtype as TRL does (the frozen weight cast once, and kept while it is alive and unchanged), the
gradient in fp32 as TRL's does on a CPU. The maths is TRL's; the rounding is not identical (one product instead of two tiles), so trained adapters agree with
TRL's head to rounding, not bit for bit (tests/test_lm_head.py). Anything it does not cover — a bias, a
logit soft-cap, a head weight that is trained, a tensor off the CPU — goes to TRL's own function, and so
does everything with ``EMPATHY_LM_HEAD=trl`` in the environment (the old path, for benchmarks).
"""

from __future__ import annotations

import os
import weakref
from contextlib import contextmanager

import torch

ROWS_PER_BLOCK = 256  # 256 rows x 49,152 logits in fp32: 50 MB a temporary
ALL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")  # TRL's optional outputs


class _CastWeight:
    """The frozen head weight in the compute dtype, cast once while that weight lives unchanged."""

    def __init__(self):
        self.key = None
        self.cast = None

    def __call__(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if weight.dtype == dtype:
            return weight
        key = (weight._version, dtype)
        if self.key is None or self.key[0]() is not weight or self.key[1:] != key:
            self.key, self.cast = (weakref.ref(weight), *key), weight.detach().to(dtype)
        return self.cast


cast_weight = _CastWeight()


def _logits(hidden: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """fp32 logits of a block of rows, multiplied in ``dtype`` (autocast's, as TRL's head does)."""
    z = torch.mm(hidden.to(dtype), cast_weight(weight, dtype).t()).float()
    return z.mul_(scale) if scale != 1.0 else z


class WholeVocabularyLogProb(torch.autograd.Function):
    """TRL's ``ChunkedLogProbFunction`` interface and outputs, for CPU training with a frozen head."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
                logit_scale=1.0, outputs=ALL_OUTPUTS):
        ctx.set_materialize_grads(False)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        scale = logit_scale / temperature
        rows = hidden.shape[0]
        log_z = hidden.new_empty(rows, dtype=torch.float32)
        log_probs = torch.empty_like(log_z)
        entropy = torch.empty_like(log_z) if "entropy" in outputs else None
        log_sum_sq = torch.empty_like(log_z) if "log_sum_sq_probs" in outputs else None
        mean_logits = torch.empty_like(log_z) if "mean_logits" in outputs else None
        is_top1 = torch.empty(rows, dtype=torch.bool) if "is_top1" in outputs else None
        with torch.no_grad():
            for start in range(0, rows, ROWS_PER_BLOCK):
                block = slice(start, min(start + ROWS_PER_BLOCK, rows))
                z = _logits(hidden[block], weight, dtype, scale)
                target = targets[block].unsqueeze(-1)
                log_z[block] = torch.logsumexp(z, -1)
                log_probs[block] = z.gather(-1, target).squeeze(-1) - log_z[block]
                if mean_logits is not None:
                    mean_logits[block] = z.mean(-1)
                if is_top1 is not None:  # argmax is the first maximum: a tie with an earlier token is not top-1
                    is_top1[block] = z.argmax(-1) == targets[block]
                if entropy is not None or log_sum_sq is not None:
                    log_p = z.sub_(log_z[block].unsqueeze(-1))
                    if log_sum_sq is not None:
                        log_sum_sq[block] = torch.logsumexp(2 * log_p, -1)
                    if entropy is not None:
                        entropy[block] = -(log_p.exp() * log_p).sum(-1)
        ctx.save_for_backward(hidden, weight, targets, log_z, log_z if entropy is None else entropy)
        ctx.dtype, ctx.scale = dtype, scale
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq, mean_logits, is_top1) if x is not None))
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, targets, log_z, entropy = ctx.saved_tensors
        if not ctx.needs_input_grad[0] or (grad_log_probs is None and grad_entropy is None):
            return (None,) * 9
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32)
        for start in range(0, hidden.shape[0], ROWS_PER_BLOCK):
            block = slice(start, min(start + ROWS_PER_BLOCK, hidden.shape[0]))
            log_p = _logits(hidden[block], weight, ctx.dtype, ctx.scale).sub_(log_z[block].unsqueeze(-1))
            p = log_p.exp()
            grad = None
            if grad_log_probs is not None:  # d log p_target / dz_j = 1[j = target] - p_j
                g = grad_log_probs[block].float().unsqueeze(-1)
                grad = (p * -g).scatter_add_(-1, targets[block].unsqueeze(-1), g)
            if grad_entropy is not None:  # d entropy / dz_j = -p_j (log p_j + entropy)
                term = p.mul_(log_p.add_(entropy[block].unsqueeze(-1))).mul_(grad_entropy[block].float().unsqueeze(-1))
                grad = term.neg_() if grad is None else grad.sub_(term)
            if ctx.scale != 1.0:
                grad.mul_(ctx.scale)
            # in fp32, as TRL's head multiplies its backward on a CPU: a bf16 product was faster, but its
            # gradient was further from fp32's than TRL's (benchmarks/README.md)
            grad_hidden[block] = torch.mm(grad, cast_weight(weight, torch.float32))
        return grad_hidden.to(hidden.dtype), None, None, None, None, None, None, None, None


class _DispatchingLogProb:
    """What TRL calls as ``_ChunkedLogProbFunction``: the whole-vocabulary head where it applies, else TRL's."""

    def __init__(self, trl_function):
        self.trl_function = trl_function
        self.rows = 0  # rows this head scored (tests, benchmarks)

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=ALL_OUTPUTS):
        if (hidden.device.type != "cpu" or weight.device.type != "cpu" or bias is not None
                or final_logit_softcapping is not None or weight.requires_grad
                or os.environ.get("EMPATHY_LM_HEAD") == "trl"):
            return self.trl_function.apply(hidden, weight, bias, targets, temperature, chunk_size,
                                           final_logit_softcapping, logit_scale, outputs)
        self.rows += hidden.shape[0]
        return WholeVocabularyLogProb.apply(hidden, weight, bias, targets, temperature, chunk_size,
                                            final_logit_softcapping, logit_scale, outputs)


@contextmanager
def whole_vocabulary_lm_head():
    """Inside this block TRL's trainers score tokens with :class:`WholeVocabularyLogProb` where it applies.

    Yields the dispatcher (its ``rows`` counts what the new head scored). A TRL without the
    ``_ChunkedLogProbFunction`` this replaces is an error, so an upgrade cannot silently undo it."""
    import trl.trainer.utils as trl_utils

    from .errors import StudyError

    original = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if original is None:
        raise StudyError("this TRL has no trl.trainer.utils._ChunkedLogProbFunction: empathy_utils.lm_head "
                         "needs revisiting for it (pinned TRL: see environment.yml)")
    dispatcher = _DispatchingLogProb(original)
    trl_utils._ChunkedLogProbFunction = dispatcher
    try:
        yield dispatcher
    finally:
        trl_utils._ChunkedLogProbFunction = original


def head_summary(head: _DispatchingLogProb) -> dict:
    """What a training summary records of the head: which one scored its tokens."""
    return {"lm_head": "whole-vocabulary (empathy_utils.lm_head)" if head.rows else "TRL's chunked"}
