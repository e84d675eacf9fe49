"""PRIDE's loss terms against closed-form values (book chapter "PRIDE", section "The loss")."""

from __future__ import annotations

import math

import pytest
import torch

from empathy_utils.pride.losses import bandwidths_for, mmd2, reverse_kl


def test_reverse_kl_equals_the_closed_form_on_two_tokens():
    # p_student = (1/2, 1/2), p_teacher = (1/4, 3/4)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert reverse_kl(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # It is the *reverse* direction: KL(teacher || student) is a different number.
    forward = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert reverse_kl(teacher, student).item() == pytest.approx(forward, rel=1e-6)
    assert expected != pytest.approx(forward)


def test_reverse_kl_temperature_softens_both_sides_and_scales_by_t_squared():
    student = torch.tensor([[0.0, 2.0, -1.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.5]])
    t = 2.0
    ps = torch.softmax(student / t, -1)[0].tolist()
    pt = torch.softmax(teacher / t, -1)[0].tolist()
    expected = t**2 * sum(a * math.log(a / b) for a, b in zip(ps, pt))
    assert reverse_kl(student, teacher, temperature=t).item() == pytest.approx(expected, rel=1e-5)


def test_reverse_kl_is_zero_for_equal_distributions_and_averages_over_masked_positions():
    logits = torch.randn(3, 5, 7)
    assert reverse_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert reverse_kl(logits, logits + 4.0).item() == pytest.approx(0.0, abs=1e-5)  # same softmax
    student = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    mask = torch.tensor([[True, False]])  # only the first position counts
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert reverse_kl(student, teacher, mask=mask).item() == pytest.approx(expected, rel=1e-6)


def test_reverse_kl_sends_gradient_to_the_student_only():
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    reverse_kl(student, teacher).backward()
    assert student.grad is not None
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_mmd_equals_the_closed_form_for_one_point_each():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # fixed width 1: k(x, y) = exp(-1/2); k(x, x) = k(y, y) = 1
    assert mmd2(x, y, [1.0], mode="fixed").item() == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-6)
    # two widths, 1 and 2: the kernel is their mean
    k = (math.exp(-1 / 2) + math.exp(-1 / 8)) / 2
    assert mmd2(x, y, [1.0, 2.0], mode="fixed").item() == pytest.approx(2 - 2 * k, rel=1e-6)


def test_mmd_median_heuristic_makes_it_scale_free():
    # pooled sample {0, 2}: the median squared distance is 4, so s = 2 and k(x, y) = exp(-4 / 8)
    x, y = torch.tensor([[0.0]]), torch.tensor([[2.0]])
    assert bandwidths_for(x, y, [1.0], "median") == pytest.approx([2.0])
    assert mmd2(x, y, [1.0], mode="median").item() == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-6)
    assert mmd2(100 * x, 100 * y, [1.0], mode="median").item() == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-5)


def test_mmd_two_point_sets_biased_and_unbiased():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[0.0], [3.0]])
    k = lambda a, b: math.exp(-((a - b) ** 2) / 2)  # noqa: E731 - width 1
    kxx = [k(a, b) for a in (0, 1) for b in (0, 1)]
    kyy = [k(a, b) for a in (0, 3) for b in (0, 3)]
    kxy = [k(a, b) for a in (0, 1) for b in (0, 3)]
    biased = sum(kxx) / 4 + sum(kyy) / 4 - 2 * sum(kxy) / 4
    unbiased = k(0, 1) + k(0, 3) - 2 * sum(kxy) / 4
    assert mmd2(x, y, [1.0], mode="fixed").item() == pytest.approx(biased, rel=1e-6)
    assert mmd2(x, y, [1.0], mode="fixed", estimator="unbiased").item() == pytest.approx(unbiased, rel=1e-6)


def test_mmd_is_zero_for_the_same_sample_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    assert mmd2(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd2(x, x[torch.randperm(16)]).item() == pytest.approx(0.0, abs=1e-6)  # order does not matter
    assert mmd2(x, x + 3.0).item() > 0.1
    # the unbiased estimator is not bounded below by zero: on the same sample it is negative
    assert mmd2(x, x.clone(), estimator="unbiased").item() < 0


def test_mmd_needs_equal_widths():
    with pytest.raises(ValueError, match="same width"):
        mmd2(torch.zeros(3, 4), torch.zeros(3, 5))


def test_mmd_stays_fp32_inside_a_bf16_autocast_region():
    """Mixed-precision training (pride.bf16) runs the loss inside autocast: MMD's distance products would
    then run in bf16 and lose |x|^2 + |y|^2 - 2xy to cancellation, far from the origin as hidden states are."""
    torch.manual_seed(0)
    x = torch.randn(12, 64) + 20.0
    y = torch.randn(10, 64) * 1.3 + 20.0
    exact = mmd2(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        guarded = mmd2(x, y)
        unguarded = mmd2.__wrapped__(x, y)  # the same arithmetic without switching autocast off
    assert guarded.dtype == torch.float32
    assert guarded.item() == pytest.approx(exact.item(), rel=1e-6)
    assert abs(unguarded.item() - exact.item()) > 0.05 * exact.item(), "autocast leaves this MMD intact: the test shows nothing"


def test_reverse_kl_of_bf16_logits_is_computed_in_fp32():
    """A bf16 model's logits, inside autocast or not: the divergence is the fp32 one of the same logits."""
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 50) * 3, torch.randn(4, 50) * 3
    exact = reverse_kl(student.bfloat16().float(), teacher.bfloat16().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = reverse_kl(student.bfloat16(), teacher.bfloat16())
    outside = reverse_kl(student.bfloat16(), teacher.bfloat16())
    for value in (in_autocast, outside):
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(exact.item(), rel=1e-6)
