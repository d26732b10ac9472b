"""Loss modules: each equals its functional op (values and gradients), honours `reduction`,
validates its arguments at construction, and the Example of each docstring runs."""
from __future__ import annotations

import doctest

import pytest
import torch

import pyseg_noise.losses.pint as pint_losses
import pyseg_noise.losses.tsman as tsman_losses
from pyseg_noise import ops
from pyseg_noise.losses import AttendedCrossEntropyLoss, LossAttention, PINTImageLoss, PINTPixelLoss, TSMANLoss

REDUCTIONS = ["mean", "sum", "none"]


def inputs(shape=(2, 3, 6, 5, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    B, C, *S = shape
    logits_a = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    logits_b = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, C, (B, *S), generator=g)
    prob = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 3, dim=1)
    attention = torch.rand((B, *S), generator=g, dtype=torch.float64)
    return logits_a, logits_b, target, prob, attention


def module_and_op_agree(module_out, op_out, leaves_m, leaves_o):
    """Same value and, after backward of a random upstream gradient, the same gradients."""
    torch.testing.assert_close(module_out, op_out, rtol=0, atol=0)
    grad = torch.randn(op_out.shape, dtype=op_out.dtype, generator=torch.Generator().manual_seed(1))
    module_out.backward(grad)
    op_out.backward(grad)
    for lm, lo in zip(leaves_m, leaves_o):
        torch.testing.assert_close(lm.grad, lo.grad, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pint_pixel_loss_module_equals_op(reduction):
    x, _, t, p, _ = inputs()
    for pseudo in ("soft", "hard"):
        xm, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        loss_fn = PINTPixelLoss(pseudo_label=pseudo, reduction=reduction, normalize_entropy=True)
        out = loss_fn(xm, t, p)
        ref = ops.pint_pixel_loss(xo, t, p, pseudo_label=pseudo, reduction=reduction, normalize_entropy=True)
        assert out.shape == ((2, 6, 5, 4) if reduction == "none" else ())
        module_and_op_agree(out, ref, [xm], [xo])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pint_image_loss_module_equals_op(reduction):
    x, _, t, p, _ = inputs()
    xm, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = PINTImageLoss(pseudo_label="hard", reduction=reduction, slice_dim=0)(xm, t, p)
    ref = ops.pint_image_loss(xo, t, p, pseudo_label="hard", reduction=reduction, slice_dim=0)
    assert out.shape == ((2, 6) if reduction == "none" else ())  # 6 slices along axis 0
    module_and_op_agree(out, ref, [xm], [xo])


def test_loss_attention_module_equals_op():
    a, b, *_ = inputs()
    for kw in (dict(), dict(sigma2=1.5, kernel_size=5, spatial_dims=3), dict(slice_dim=0)):
        out = LossAttention(**kw)(a, b)
        torch.testing.assert_close(out, ops.loss_attention(a, b, **kw), rtol=0, atol=0)
        assert out.shape == (2, 6, 5, 4) and not out.requires_grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_attended_cross_entropy_module_equals_op(reduction):
    x, _, t, _, att = inputs()
    xm, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = AttendedCrossEntropyLoss(reduction=reduction)(xm, t, att)
    ref = ops.attended_cross_entropy(xo, t, att, reduction=reduction)
    module_and_op_agree(out, ref, [xm], [xo])
    # the reductions relate as the definitions say
    per_voxel = AttendedCrossEntropyLoss(reduction="none")(x, t, att)
    total = AttendedCrossEntropyLoss(reduction="sum")(x, t, att)
    mean = AttendedCrossEntropyLoss(reduction="mean")(x, t, att)
    torch.testing.assert_close(total, per_voxel.sum())
    torch.testing.assert_close(mean, per_voxel.mean())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_tsman_loss_module_equals_op(reduction):
    a, b, t, _, _ = inputs()
    am, bm = a.clone().requires_grad_(), b.clone().requires_grad_()
    ao, bo = a.clone().requires_grad_(), b.clone().requires_grad_()
    out = TSMANLoss(spatial_dims=3, kernel_size=5, reduction=reduction)(am, bm, t)
    ref = ops.tsman_loss(ao, bo, t, spatial_dims=3, kernel_size=5, reduction=reduction)
    module_and_op_agree(out, ref, [am, bm], [ao, bo])
    loss, att = TSMANLoss(return_attention=True, reduction=reduction)(a, b, t)
    torch.testing.assert_close(att, LossAttention()(a, b), rtol=0, atol=0)
    torch.testing.assert_close(loss, ops.tsman_loss(a, b, t, reduction=reduction), rtol=0, atol=0)


def test_modules_validate_their_arguments():
    with pytest.raises(ValueError, match=r"PINTPixelLoss: reduction must be one of"):
        PINTPixelLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"PINTImageLoss: pseudo_label must be one of"):
        PINTImageLoss(pseudo_label="onehot")
    with pytest.raises(TypeError, match=r"PINTImageLoss: slice_dim must be an int"):
        PINTImageLoss(slice_dim=1.0)
    with pytest.raises(ValueError, match=r"LossAttention: kernel_size must be an odd integer >= 1, got 2"):
        LossAttention(kernel_size=2)
    with pytest.raises(ValueError, match=r"TSMANLoss: sigma2 .* must be > 0"):
        TSMANLoss(sigma2=-1.0)
    with pytest.raises(ValueError, match=r"TSMANLoss: spatial_dims must be 2 \(in-plane\) or 3"):
        TSMANLoss(spatial_dims=4)
    with pytest.raises(ValueError, match=r"LossAttention: slice_dim must index one of the 3 spatial axes"):
        LossAttention(slice_dim=3)
    with pytest.raises(ValueError, match=r"AttendedCrossEntropyLoss: reduction must be one of"):
        AttendedCrossEntropyLoss(reduction="batchmean")
    with pytest.raises(ValueError, match=r"TSMANLoss: backend must be one of"):
        TSMANLoss(backend="gpu")
    # volumetric smoothing of 2D input is refused when the input arrives
    a, b, t, _, _ = inputs((1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"spatial_dims=3 needs 3D input"):
        TSMANLoss(spatial_dims=3)(a, b, t)
    # bad input reaches the op's checks
    with pytest.raises(ValueError, match=r"target has value 2 but logits have C=2"):
        TSMANLoss()(a, b, t + 2)


def test_modules_repr_names_their_settings():
    assert "kernel_size=5" in repr(TSMANLoss(kernel_size=5)) and "reduction='sum'" in repr(TSMANLoss(reduction="sum"))
    assert "pseudo_label='hard'" in repr(PINTPixelLoss(pseudo_label="hard"))


@pytest.mark.parametrize("module", [pint_losses, tsman_losses], ids=["pint", "tsman"])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
