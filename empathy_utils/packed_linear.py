"""Linear layers with weights pre-packed for oneDNN, for models that only run inference on a CPU.

``nn.Linear`` hands its weight to the matrix-multiply library in the layout it is stored in, and the
library re-arranges it into its own blocked layout on every call. At the shapes of batched decoding
(32-64 rows against the 576 x 1536 and 49,152 x 576 matrices of SmolLM2-135M) that re-arrangement is
a large share of the call: on this 2-core CPU ``F.linear`` ran them at 39-88 GFLOP/s, oneDNN on a
weight packed once at 105-128 GFLOP/s (benchmarks/README.md). torch's own compiler does the same
when it freezes a model for CPU inference (``mkldnn._reorder_linear_weight`` and
``mkldnn._linear_pointwise``, the ops used here); this module does it without compiling, so shapes
may change every step (rows leave the batch as they finish, the cache grows).

The products are fp32 products summed in another order: equal to ``F.linear``'s to fp32 rounding
(about 1e-6 relative), not bit for bit, the same kind of difference as between two CPUs' instruction
sets. Greedy replies can therefore differ where two tokens' scores are within rounding; on the
default study's 32 student prompts all 32 replies were identical (benchmarks/README.md).

bf16 weights (``model.dtype: auto`` on a CPU with bf16 units) are packed the same way where oneDNN
multiplies bf16 on this CPU: there ``F.linear`` already goes through oneDNN's bf16 product, so packing
changes only the layout, and the results were bit for bit the same (32/32 greedy replies, every
log-probability), generation 1.15x and scoring 1.09x faster (benchmarks/README.md, 2026-12-06).
"""

from __future__ import annotations

import os

import torch
from torch import nn


def _product(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T + b`` by oneDNN on a weight packed with ``mkldnn._reorder_linear_weight``; no gradient."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")


class _PackedProduct(torch.autograd.Function):
    """``x @ W.T + b`` on packed weights. oneDNN's op has no gradient of its own (torch would backpropagate
    through it silently wrong), so this gives it one: the input's, from ``W`` packed the other way
    round, where the layer keeps it; the weight and bias are frozen and get none."""

    @staticmethod
    def forward(ctx, x, packed_weight, bias, packed_transpose):
        ctx.packed_transpose = packed_transpose
        return _product(x, packed_weight, bias)

    @staticmethod
    def backward(ctx, grad):
        if ctx.packed_transpose is None:
            raise RuntimeError("a PackedLinear packed for inference has no gradient; pack with input_gradient=True")
        return _product(grad, ctx.packed_transpose, None), None, None, None


class PackedLinear(nn.Module):
    """A frozen ``nn.Linear`` on a weight packed for oneDNN once, at construction. With
    ``input_gradient`` it also packs the transposed weight, so gradients flow to its input (the frozen
    base layers of LoRA training); without, backward raises. The plain weight is not kept."""

    def __init__(self, linear: nn.Linear, input_gradient: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight)
        self.packed_transpose = (torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous())
                                 if input_gradient else None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.requires_grad and torch.is_grad_enabled()):
            # No gradient can flow: oneDNN's op directly. An autograd function's ``apply`` costs about 11 us
            # even under inference mode, 2.3 ms of each decoding step's 211 products (benchmarks/README.md).
            return _product(x, self.packed_weight, self.bias)
        return _PackedProduct.apply(x, self.packed_weight, self.bias, self.packed_transpose)

    def dense_weight(self) -> torch.Tensor:
        """The weight as ``nn.Linear`` held it (oneDNN unpacks its copy exactly): for checks, not for speed."""
        return self.packed_weight.to_dense()

    def extra_repr(self) -> str:
        grad = ", input gradient" if self.packed_transpose is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN{grad}"


# Sibling layers that read one input, in the order the model calls them (Llama, Mistral, Qwen, Gemma, ...).
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _SiblingProduct:
    """One packed product for sibling layers that read the same input: the attention's query, key and
    value projections, the MLP's gate and up projections. Decoding streams every weight from memory at
    each step; three or two products of one input cost more than one product of their stacked weights
    (the decoder's 30 layers at 16 rows: 11.3 against 9.1 ms in bf16, bit for bit the same outputs;
    benchmarks/README.md). The first sibling called computes the stacked product and keeps it; the
    others, called with the same input tensor, take their columns from it; the last releases it. A
    sibling called with another input, or twice, computes the product again: never a stale result."""

    def __init__(self, layers: list[nn.Linear]):
        weight = torch.cat([layer.weight.detach() for layer in layers])
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight)
        self.bias = (None if all(layer.bias is None for layer in layers) else torch.cat(
            [layer.bias.detach() if layer.bias is not None else weight.new_zeros(layer.out_features) for layer in layers]))
        ends = torch.tensor([layer.out_features for layer in layers]).cumsum(0).tolist()
        self.columns = [slice(end - layer.out_features, end) for end, layer in zip(ends, layers)]
        self._input = self._output = None
        self._waiting: set[int] = set()

    def part(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("a layer packed for inference has no gradient")
        if x is not self._input or index not in self._waiting:
            self._output = _product(x, self.packed_weight, self.bias)
            self._input, self._waiting = x, set(range(len(self.columns)))
        self._waiting.discard(index)
        out = self._output[..., self.columns[index]]
        if not self._waiting:
            self._input = self._output = None
        return out


class PackedSibling(nn.Module):
    """One of the layers of a :class:`_SiblingProduct`: its columns of the stacked product."""

    def __init__(self, product: _SiblingProduct, index: int, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.product, self.index = product, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product.part(self.index, x)

    def dense_weight(self) -> torch.Tensor:
        """This layer's rows of the stacked weight (oneDNN unpacks its copy exactly): for checks."""
        return self.product.packed_weight.to_dense()[self.product.columns[self.index]]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN with its "
                f"siblings, part {self.index + 1} of {len(self.product.columns)}")


def packing_applies(model) -> bool:
    """Whether :func:`pack_linear_layers` may pack ``model``: weights on a CPU whose torch has oneDNN,
    in fp32, or in bf16 where oneDNN multiplies bf16 on this CPU (``model.dtype: auto`` picks bf16 only
    on a CPU with bf16 units); not switched off with ``EMPATHY_PACKED_LINEAR=0`` (kept for benchmarks:
    the old path beside the new)."""
    if os.environ.get("EMPATHY_PACKED_LINEAR") == "0":
        return False
    first = next(model.parameters(), None)  # any nn.Module (PRIDE's student wraps its language model)
    if first is None or first.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if first.dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return first.dtype == torch.float32


def pack_linear_layers(model) -> int:
    """Replace every plain ``nn.Linear`` in an inference-only ``model`` by a :class:`PackedLinear`
    (where :func:`packing_applies`), sibling layers that read one input (:data:`SIBLINGS`) by parts of one
    stacked product (:class:`PackedSibling`); returns how many were replaced. The model can no longer be
    trained or saved: only models loaded for inference (``models.load_model(dtype=...)``) are packed."""
    if not packing_applies(model):
        return 0
    return _stack_siblings(model) + _replace(model, lambda name, layer: True, input_gradient=False)


def _stack_siblings(model) -> int:
    """Replace each group of :data:`SIBLINGS` (plain ``nn.Linear`` layers of one module, same input width
    and dtype) by :class:`PackedSibling` layers sharing one stacked product, unless
    ``EMPATHY_STACKED_SIBLINGS=0`` (the old path, for benchmarks). Returns how many layers it replaced."""
    if os.environ.get("EMPATHY_STACKED_SIBLINGS") == "0":
        return 0
    replaced = 0
    for module in list(model.modules()):
        for names in SIBLINGS:
            layers = [getattr(module, name, None) for name in names]
            if not all(type(layer) is nn.Linear for layer in layers) or len(
                    {(layer.in_features, layer.weight.dtype) for layer in layers}) != 1:
                continue
            product = _SiblingProduct(layers)
            for index, (name, layer) in enumerate(zip(names, layers)):
                setattr(module, name, PackedSibling(product, index, layer))
            replaced += len(layers)
    return replaced


def pack_frozen_layers(model) -> int:
    """For LoRA training in fp32 on a CPU: replace LoRA's frozen base layers (PEFT's ``base_layer``) by
    :class:`PackedLinear` layers that pass gradients to their input. Everything else stays as it is:
    the adapters' A and B (trainable, or frozen copies such as DPO's reference adapter) and the output
    layer (TRL reads its weight to score only the labelled positions). Returns how many were replaced;
    the saved adapter is unchanged (it holds LoRA's weights only)."""
    if not packing_applies(model):
        return 0
    return _replace(model, lambda name, layer: name == "base_layer" and not layer.weight.requires_grad,
                    input_gradient=True)


def _replace(model, wanted, input_gradient: bool) -> int:
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and wanted(name, child):
                setattr(module, name, PackedLinear(child, input_gradient=input_gradient))
                replaced += 1
    return replaced


def packed_count(model) -> int:
    """How many of ``model``'s layers run on packed weights (a train log records it)."""
    return sum(isinstance(m, (PackedLinear, PackedSibling)) for m in model.modules())
