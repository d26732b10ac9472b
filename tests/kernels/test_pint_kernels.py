"""Triton PINT kernels (SPEC 1-4) against the float64 eager reference."""
from __future__ import annotations

import math

import pytest
import torch

import pyseg_noise.kernels as K
from pyseg_noise.ops import reference as ref
from tests.kernels.cases import (
    CASE_IDS, CASES, DEVICE, REDUCTIONS, Case, assert_close, assert_unchanged, make_logits, make_prob,
    leaf, make_target, requires_kernels, snapshot, upstream, with_layout,
)

pytestmark = requires_kernels


def _pixel_ref(logits, target, teacher, hard, normalize, reduction):
    """Reference loss and d loss/d logits (for a given upstream grad) in float64."""
    x = leaf(logits)
    q = teacher.to(logits.dtype).double().cpu()  # the kernels round teacher_prob to the logits' dtype
    loss = ref.pint_pixel_loss(x, target.cpu(), q, pseudo_label="hard" if hard else "soft",
                               reduction=reduction, normalize_entropy=normalize)
    return x, loss


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pint_pixel_loss_and_backward(case: Case, hard: bool):
    logits, target, teacher = make_logits(case, 1), make_target(case, 2), make_prob(case, 3)
    normalize = case.shape[1] % 2 == 1  # both entropy conventions across the cases
    before = snapshot(logits, target, teacher)
    for i, reduction in enumerate(REDUCTIONS):
        out = K.IMPLS["pint_pixel_loss"](logits, target, teacher, hard, normalize, reduction)
        x, expected = _pixel_ref(logits, target, teacher, hard, normalize, reduction)
        assert_close(out, expected.detach(), case.dtype, f"loss[{reduction}]")
        grad = upstream(out, 10 + i)
        expected.backward(grad.double().cpu())
        got = K.IMPLS["pint_pixel_loss_backward"](grad, logits, target, teacher, hard, normalize, reduction)
        assert got.is_contiguous()
        assert_close(got, x.grad, case.dtype, f"grad[{reduction}]")
    assert_unchanged(before, [logits, target, teacher])


@pytest.mark.parametrize("case", CASES[:3], ids=CASE_IDS[:3])
def test_pint_pixel_loss_with_grad_is_loss_and_unit_backward(case: Case):
    """The with-grad op on Triton: the forward's loss and the backward's gradient for upstream 1."""
    logits, target, teacher = make_logits(case, 1), make_target(case, 2), make_prob(case, 3)
    for reduction in REDUCTIONS:
        loss, grad = K.IMPLS["pint_pixel_loss_with_grad"](logits, target, teacher, True, False, reduction)
        x, expected = _pixel_ref(logits, target, teacher, True, False, reduction)
        assert_close(loss, expected.detach(), case.dtype, f"loss[{reduction}]")
        expected.backward(torch.ones_like(expected))
        assert_close(grad, x.grad, case.dtype, f"grad[{reduction}]")


def test_pint_pixel_loss_teacher_in_another_dtype():
    """A float32 teacher with float16 logits is rounded to float16 first."""
    case = Case((2, 3, 5, 6, 4), torch.float16, "contiguous")
    logits, target = make_logits(case, 4), make_target(case, 5)
    teacher = make_prob(case, 6, dtype=torch.float32)
    out = K.IMPLS["pint_pixel_loss"](logits, target, teacher, False, False, "none")
    _, expected = _pixel_ref(logits, target, teacher, False, False, "none")
    assert_close(out, expected.detach(), torch.float16, "loss")


def test_pint_hard_label_ties_go_to_lowest_class():
    """Exact ties in teacher_prob: the one-hot pseudo label picks the lowest class (torch.argmax)."""
    case = Case((1, 3, 2, 4), torch.float64, "contiguous")
    logits, target = make_logits(case, 7), make_target(case, 8)
    teacher = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 2, 4)
    teacher = teacher.clone().to(DEVICE)
    teacher[0, :, 1, 1] = torch.tensor([0.2, 0.4, 0.4])  # tie between classes 1 and 2
    out = K.IMPLS["pint_pixel_loss"](logits, target, teacher, True, False, "none")
    s = torch.softmax(logits.double().cpu(), 1)
    y = torch.zeros_like(s)
    y[:, 0] = 1
    y[0, :, 1, 1] = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    u = -(teacher.cpu() * teacher.cpu().log()).sum(1)
    ce = -torch.log_softmax(logits.double().cpu(), 1).gather(1, target.cpu().unsqueeze(1)).squeeze(1)
    mse = ((s - y) ** 2).mean(1)
    expected = torch.exp(-u) * ce + (1 - torch.exp(-u)) * mse
    assert_close(out, expected, torch.float64, "tied hard labels")


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pint_image_loss_and_backward(case: Case, hard: bool):
    logits, target, teacher = make_logits(case, 21), make_target(case, 22), make_prob(case, 23)
    normalize = case.shape[1] % 2 == 0
    before = snapshot(logits, target, teacher)
    acc = torch.float64 if case.dtype == torch.float64 else torch.float32
    n_slices = 1 if len(case.shape) == 4 else case.shape[2 + case.slice_dim % 3]
    for i, reduction in enumerate(REDUCTIONS):
        loss, alpha = K.IMPLS["pint_image_loss"](logits, target, teacher, hard, normalize, case.slice_dim,
                                                 reduction)
        x = leaf(logits)
        q = teacher.double().cpu()
        expected = ref.pint_image_loss(x, target.cpu(), q, pseudo_label="hard" if hard else "soft",
                                       reduction=reduction, normalize_entropy=normalize, slice_dim=case.slice_dim)
        assert_close(loss, expected.detach(), case.dtype, f"loss[{reduction}]")
        u = ref.prob_entropy(q) / (math.log(case.shape[1]) if normalize else 1.0)
        want_alpha = torch.exp(-ref.slice_uncertainty(u, slice_dim=case.slice_dim))
        assert alpha.shape == (case.shape[0], n_slices)
        assert_close(alpha, want_alpha, acc, "slice_alpha")
        grad = upstream(loss, 30 + i)
        expected.backward(grad.double().cpu())
        got = K.IMPLS["pint_image_loss_backward"](grad, logits, target, teacher, alpha, hard, case.slice_dim,
                                                  reduction)
        assert_close(got, x.grad, case.dtype, f"grad[{reduction}]")
    assert_unchanged(before, [logits, target, teacher])


@pytest.mark.parametrize("slice_dim", [-1, 0, 1])
def test_pint_image_loss_many_slices_multi_program_finish(slice_dim):
    """Enough slices that the per-slice stage runs several programs and a third reduction stage."""
    case = Case((2, 2, 3, 5, 150), torch.float64, "contiguous", slice_dim)
    logits, target, teacher = make_logits(case, 41), make_target(case, 42), make_prob(case, 43)
    for reduction in ("mean", "sum"):
        loss, _ = K.IMPLS["pint_image_loss"](logits, target, teacher, False, False, slice_dim, reduction)
        expected = ref.pint_image_loss(logits.cpu(), target.cpu(), teacher.cpu(), reduction=reduction,
                                       slice_dim=slice_dim)
        assert_close(loss, expected, torch.float64, reduction)


@pytest.mark.parametrize("case", CASES[:6], ids=CASE_IDS[:6])
def test_slice_uncertainty(case: Case):
    entropy = with_layout(ref.prob_entropy(make_prob(case, 51).double()).to(case.dtype), case.layout)
    before = snapshot(entropy)
    got = K.IMPLS["slice_uncertainty"](entropy, case.slice_dim)
    expected = ref.slice_uncertainty(entropy.double().cpu(), slice_dim=case.slice_dim)
    assert_close(got, expected, case.dtype, "U")
    assert_unchanged(before, [entropy])


@pytest.mark.parametrize("case", CASES[:6], ids=CASE_IDS[:6])
def test_teacher_uncertainty_and_streaming_form(case: Case):
    M = 3
    passes = [make_logits(case, 60 + m) for m in range(M)]
    stacked = torch.stack(passes)
    if case.layout != "contiguous":  # a strided M axis too
        stacked = torch.stack(passes, dim=-1).movedim(-1, 0)
    before = snapshot(stacked)
    prob, entropy = K.IMPLS["teacher_uncertainty"](stacked)
    rp, re = ref.teacher_uncertainty(stacked.double().cpu())
    assert_close(prob, rp, case.dtype, "prob")
    assert_close(entropy, re, case.dtype, "entropy")
    assert_unchanged(before, [stacked])

    # streaming: an fp32 (fp64 for fp64) accumulator in another layout, one pass at a time
    acc_dtype = torch.float64 if case.dtype == torch.float64 else torch.float32
    prob_sum = with_layout(torch.zeros(case.shape, dtype=acc_dtype, device=DEVICE), "permuted")
    for p in passes:
        assert K.IMPLS["softmax_accumulate_"](prob_sum, p) is None
    assert_close(prob_sum, rp * M, acc_dtype, "prob_sum")
    prob2, entropy2 = K.IMPLS["prob_entropy"](prob_sum, 1.0 / M)
    assert_close(prob2, rp, acc_dtype, "streamed prob")
    assert_close(entropy2, re, acc_dtype, "streamed entropy")


def test_prob_entropy_scale_is_fp64_exact():
    """Triton passes Python floats as fp32; the launcher splits the scale so fp64 stays fp64-accurate."""
    p = torch.full((1, 2, 3, 3), 1.0, dtype=torch.float64, device=DEVICE)
    prob, _ = K.IMPLS["prob_entropy"](p, 1.0 / 3.0)
    assert torch.allclose(prob.cpu(), torch.full((1, 2, 3, 3), 1.0 / 3.0, dtype=torch.float64), rtol=0, atol=1e-15)


def test_reductions_are_bitwise_deterministic():
    case = Case((2, 4, 9, 10, 11), torch.float32, "contiguous")
    logits, target, teacher = make_logits(case, 71), make_target(case, 72), make_prob(case, 73)
    first = [K.IMPLS["pint_pixel_loss"](logits, target, teacher, False, False, "sum"),
             K.IMPLS["pint_image_loss"](logits, target, teacher, False, False, -1, "mean")[0]]
    second = [K.IMPLS["pint_pixel_loss"](logits, target, teacher, False, False, "sum"),
              K.IMPLS["pint_image_loss"](logits, target, teacher, False, False, -1, "mean")[0]]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
