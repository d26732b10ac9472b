"""Triton TSMAN kernels (SPEC 5-6) against the float64 eager reference."""
from __future__ import annotations

import pytest
import torch

import pyseg_noise.kernels as K
from pyseg_noise.ops import reference as ref
from tests.kernels.cases import (
    CASE_IDS, CASES, DEVICE, REDUCTIONS, Case, assert_close, assert_unchanged, leaf, make_logits,
    make_target, requires_kernels, snapshot, upstream, with_layout,
)

pytestmark = requires_kernels


def _tied_logits(case: Case, seed: int) -> torch.Tensor:
    """Small-integer logits: many exact argmax ties, which must go to the lowest class."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, case.shape, generator=g).to(case.dtype)
    return with_layout(x.to(DEVICE), case.layout)


# (sigma2, kernel_size, spatial_dims): the paper's 3x3, a wider window, 3-D smoothing, no smoothing
ATTENTION_SETTINGS = [(0.5, 3, 2), (1.7, 5, 2), (0.8, 3, 3), (0.5, 1, 2)]


@pytest.mark.parametrize("setting", ATTENTION_SETTINGS, ids=lambda s: f"s{s[0]}-k{s[1]}-d{s[2]}")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_loss_attention(case: Case, setting):
    sigma2, kernel_size, spatial_dims = setting
    a, b = make_logits(case, 1), _tied_logits(case, 2)
    before = snapshot(a, b)
    got = K.IMPLS["loss_attention"](a, b, sigma2, kernel_size, spatial_dims, case.slice_dim)
    expected = ref.loss_attention(a.double().cpu(), b.double().cpu(), sigma2=sigma2, kernel_size=kernel_size,
                                  spatial_dims=spatial_dims, slice_dim=case.slice_dim)
    assert got.is_contiguous()
    assert_close(got, expected, case.dtype, "attention")
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    assert_unchanged(before, [a, b])


def test_loss_attention_ties_go_to_lowest_class():
    """Both streams tie classes 0 and 1 identically: no disagreement; a lone flip is detected."""
    a = torch.zeros(1, 3, 4, 4, dtype=torch.float32, device=DEVICE)
    a[:, 2] = -1.0  # classes 0, 1 tie everywhere -> argmax 0
    b = a.clone()
    b[0, 1, 2, 1] = 0.5  # argmax 1 at one voxel
    got = K.IMPLS["loss_attention"](a, b, 0.5, 1, 2, -1)
    expected = torch.zeros(1, 4, 4)
    expected[0, 2, 1] = 1.0
    assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_attended_cross_entropy_and_backward(case: Case):
    logits, target = make_logits(case, 3), make_target(case, 4)
    attention = with_layout(torch.rand(case.shape[:1] + case.shape[2:], generator=torch.Generator().manual_seed(5),
                                       dtype=torch.float64).to(case.dtype).to(DEVICE), case.layout)
    before = snapshot(logits, target, attention)
    for i, reduction in enumerate(REDUCTIONS):
        out = K.IMPLS["attended_cross_entropy"](logits, target, attention, reduction)
        x = leaf(logits)
        expected = ref.attended_cross_entropy(x, target.cpu(), attention.double().cpu(), reduction=reduction)
        assert_close(out, expected.detach(), case.dtype, f"loss[{reduction}]")
        grad = upstream(out, 10 + i)
        expected.backward(grad.double().cpu())
        got = K.IMPLS["attended_cross_entropy_backward"](grad, logits, target, attention, reduction)
        assert_close(got, x.grad, case.dtype, f"grad[{reduction}]")
    assert_unchanged(before, [logits, target, attention])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_tsman_loss_and_backward(case: Case):
    a, b, target = make_logits(case, 6), _tied_logits(case, 7), make_target(case, 8)
    spatial_dims = 3 if case.shape[1] % 2 else 2
    before = snapshot(a, b, target)
    for i, reduction in enumerate(REDUCTIONS):
        loss, attention = K.IMPLS["tsman_loss"](a, b, target, 0.6, 3, spatial_dims, case.slice_dim, reduction)
        xa, xb = leaf(a), leaf(b)
        want_att = ref.loss_attention(xa.detach(), xb.detach(), sigma2=0.6, kernel_size=3,
                                      spatial_dims=spatial_dims, slice_dim=case.slice_dim)
        assert_close(attention, want_att, case.dtype, "attention")
        # the loss uses the attention as stored (rounded to the logits' dtype), as the CPU kernels do
        att = attention.double().cpu()
        expected = (ref.attended_cross_entropy(xa, target.cpu(), att, reduction=reduction)
                    + ref.attended_cross_entropy(xb, target.cpu(), att, reduction=reduction))
        assert_close(loss, expected.detach(), case.dtype, f"loss[{reduction}]")
        grad = upstream(loss, 20 + i)
        expected.backward(grad.double().cpu())
        grad_a, grad_b = K.IMPLS["tsman_loss_backward"](grad, a, b, target, attention, reduction)
        assert_close(grad_a, xa.grad, case.dtype, f"grad_a[{reduction}]")
        assert_close(grad_b, xb.grad, case.dtype, f"grad_b[{reduction}]")
    assert_unchanged(before, [a, b, target])


def test_expanded_upstream_grad_and_target():
    """Stride-0 inputs (an expanded grad of "none", a target broadcast over the batch) are read correctly."""
    case = Case((3, 4, 5, 6), torch.float64, "contiguous")
    logits, target1 = make_logits(case, 12), make_target(Case((1, 4, 5, 6), torch.float64, "contiguous"), 13)
    target = target1.expand(3, 5, 6)
    attention = torch.rand(3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(14)).to(DEVICE)
    grad = torch.tensor(0.7, dtype=torch.float64, device=DEVICE).expand(3, 5, 6)
    got = K.IMPLS["attended_cross_entropy_backward"](grad, logits, target, attention, "none")
    x = leaf(logits)
    ref.attended_cross_entropy(x, target.cpu(), attention.cpu(), reduction="none").backward(grad.cpu())
    assert_close(got, x.grad, torch.float64, "grad")
