"""PRIDE's dual-alignment loss terms (book/pride.md), on plain tensors.

- :func:`reverse_kl` — KL(student ‖ teacher) between next-token distributions, averaged over the
  response positions: sum_v p_s(v) (log p_s(v) - log p_t(v)). Mode-seeking, as in MiniLLM: the student is
  pushed to put its mass where the teacher does, rather than to cover every mode of the teacher.
  Both distributions are softened by the same temperature T and the result is scaled by T^2, so its
  gradients keep their size when T changes (Hinton et al.'s convention).
- :func:`mmd2` — squared maximum mean discrepancy between two feature sets X and Y under a
  multi-bandwidth Gaussian kernel: MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y). The kernel is the mean
  of exp(-|x - y|^2 / (2 s^2)) over the bandwidths s; with ``mode="median"`` each s is a multiplier of
  the median pairwise distance of the pooled sample (the median heuristic, computed without gradient),
  with ``mode="fixed"`` s is the number itself. The biased estimator (a V-statistic) is never negative
  and is exactly zero when X and Y are the same sample; the unbiased one (U-statistic) drops the
  diagonal terms and can dip below zero.

Both run in fp32 even inside a bf16 autocast region (mixed-precision training, ``pride.bf16``). MMD runs
with autocast switched off (:func:`in_fp32`): autocast would run its distance products ``x @ y.T`` in bf16,
whose 8-bit mantissa loses |x|^2 + |y|^2 - 2xy to cancellation. Reverse KL casts the logits to fp32 itself,
and autocast lowers none of its operations, so the small probabilities it weighs keep fp32's precision.
"""

from __future__ import annotations

from functools import wraps
from typing import Sequence

import torch
import torch.nn.functional as F


def in_fp32(loss):
    """Run ``loss`` with autocast switched off on its tensors' device: its inputs are cast to fp32 inside,
    so its arithmetic is fp32 whatever precision the model's forward pass ran in."""

    @wraps(loss)
    def run(first: torch.Tensor, *args, **kwargs):
        with torch.autocast(device_type=first.device.type, enabled=False):
            return loss(first, *args, **kwargs)

    return run


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over positions of KL(p_student ‖ p_teacher); logits [..., vocab], ``mask`` [...] selects positions.

    The teacher side carries no gradient (it is a target)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (the teacher must share the student's vocabulary)")
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    per_position = (log_ps.exp() * (log_ps - log_pt)).sum(-1)
    if mask is not None:
        per_position = per_position[mask.bool()]
    if per_position.numel() == 0:
        return student_logits.sum() * 0.0
    return per_position.mean() * temperature**2


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|^2 for every pair (rows of x and y), clamped at 0 against rounding."""
    xx = (x * x).sum(-1, keepdim=True)
    yy = (y * y).sum(-1, keepdim=True)
    return (xx + yy.T - 2.0 * x @ y.T).clamp_min(0.0)


def bandwidths_for(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float], mode: str = "median") -> list[float]:
    """The kernel widths s actually used: the numbers themselves (fixed) or multipliers of the square
    root of the median squared distance between distinct points of the pooled sample (median)."""
    if mode == "fixed":
        return [float(b) for b in bandwidths]
    if mode != "median":
        raise ValueError(f"unknown bandwidth mode {mode!r}; use 'median' or 'fixed'")
    with torch.no_grad():
        z = torch.cat([x, y]).float()
        d2 = squared_distances(z, z)
        off = d2[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
        median = off.median().item() if off.numel() else 0.0
    scale = median**0.5 if median > 0 else 1.0
    return [float(b) * scale for b in bandwidths]


def gaussian_kernel(d2: torch.Tensor, widths: Sequence[float]) -> torch.Tensor:
    """Mean over widths s of exp(-d^2 / (2 s^2))."""
    return torch.stack([torch.exp(-d2 / (2.0 * s * s)) for s in widths]).mean(0)


@in_fp32
def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
         mode: str = "median", estimator: str = "biased") -> torch.Tensor:
    """Squared MMD between samples ``x`` [n, d] and ``y`` [m, d] (see the module docstring)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd2 needs two [n, d] samples of the same width, got {tuple(x.shape)} and {tuple(y.shape)}"
                         " (project one side when the widths differ)")
    x, y = x.float(), y.float()
    widths = bandwidths_for(x, y, bandwidths, mode)
    kxx = gaussian_kernel(squared_distances(x, x), widths)
    kyy = gaussian_kernel(squared_distances(y, y), widths)
    kxy = gaussian_kernel(squared_distances(x, y), widths)
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    if estimator != "unbiased":
        raise ValueError(f"unknown MMD estimator {estimator!r}; use 'biased' or 'unbiased'")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("the unbiased MMD estimator needs at least two points on each side")
    off_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    off_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return off_x + off_y - 2.0 * kxy.mean()
