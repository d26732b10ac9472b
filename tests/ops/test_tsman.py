"""TSMAN ops (SPEC 5-6): every backend x dtype x shape x layout against the float64 reference,
hand-computed attention maps, autograd, opcheck, torch.compile and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from pyseg_noise import ops
from pyseg_noise.ops import reference
from tests.ops.op_cases import (BACKENDS, DTYPES, KERNEL_BACKENDS, SHAPE_IDS, SHAPES, assert_close, device_for,
                                layout, skip_unsupported)

REDUCTIONS = ["mean", "sum", "none"]

# Per shape: (sigma2, kernel_size, spatial_dims, slice_dim); spatial_dims=3 only for 3D shapes.
SMOOTHING = [
    (0.5, 3, 2, -1),
    (0.5, 3, 3, -1),
    (1.3, 5, 2, 0),
    (0.5, 1, 2, 1),
    (0.5, 3, 2, 0),
    (2.0, 5, 2, -1),
    (0.8, 3, 3, 1),
]


def smoothing_for(shape_id):
    sigma2, k, sd, sl = SMOOTHING[shape_id]
    if len(SHAPES[shape_id]) == 4:
        sd = 2  # 2D input is smoothed in-plane only
    return dict(sigma2=sigma2, kernel_size=k, spatial_dims=sd, slice_dim=sl)


def two_streams(shape, dtype, device, seed, agree=0.7):
    """Logits whose argmax has a margin of >= 1 (unambiguous after rounding to any dtype), the two
    streams agreeing on about `agree` of the voxels; labels; a random attention map."""
    g = torch.Generator().manual_seed(seed)
    B, C, *S = shape
    k_a = torch.randint(0, C, (B, *S), generator=g)
    k_b = torch.where(torch.rand((B, *S), generator=g) < agree, k_a, torch.randint(0, C, (B, *S), generator=g))

    def logits(k):
        noise = torch.rand(shape, generator=g, dtype=torch.float64) - 0.5
        return (noise + 2.0 * torch.nn.functional.one_hot(k, C).movedim(-1, 1)).to(dtype).to(device)

    target = torch.randint(0, C, (B, *S), generator=g).to(device)
    attention = torch.rand((B, *S), generator=g, dtype=torch.float64).to(dtype).to(device)
    return logits(k_a), logits(k_b), target, attention


def relative(actual, expected):
    """Both scaled by the largest |expected|: per-voxel gradients of a mean are ~1/N."""
    scale = 1.0 / expected.abs().max().clamp_min(1e-30)
    return actual.double().cpu() * scale, expected.double().cpu() * scale


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_loss_attention(backend, dtype, shape_id, contiguous):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    kw = smoothing_for(shape_id)
    a, b, _, _ = two_streams(shape, dtype, device_for(backend), seed=shape_id)
    a = layout(a, contiguous).requires_grad_()
    att = ops.loss_attention(a, layout(b, contiguous), **kw, backend=backend)
    ref = reference.loss_attention(a.detach().double(), b.double(), **kw)
    assert att.dtype == dtype and att.shape == (shape[0],) + shape[2:]
    assert not att.requires_grad
    assert float(att.min()) >= 0.0 and float(att.max()) <= 1.0
    assert float(ref.max()) > 0.0  # the streams do disagree somewhere
    assert_close(att, ref, dtype, f"attention {kw}")


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_attended_cross_entropy(backend, dtype, shape_id, contiguous):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    g = torch.Generator().manual_seed(40 + shape_id)
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype).to(device_for(backend))
    _, _, target, attention = two_streams(shape, dtype, device_for(backend), seed=40 + shape_id)
    if shape_id == 2:
        attention = attention.float()  # cast to the logits' dtype inside
    for reduction in REDUCTIONS:
        x = layout(logits, contiguous).detach().requires_grad_()
        att = layout(attention, contiguous).requires_grad_()
        loss = ops.attended_cross_entropy(x, layout(target, contiguous), att, reduction=reduction, backend=backend)
        xr = logits.detach().double().requires_grad_()
        ref = reference.attended_cross_entropy(xr, target, attention.to(dtype).double(), reduction=reduction)
        assert loss.dtype == dtype and loss.shape == ref.shape
        scale = 1.0 if reduction != "sum" else 1.0 / target.numel()
        assert_close(loss * scale, ref * scale, dtype, f"loss ({reduction})")
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        loss.backward(grad.to(dtype).to(loss.device))
        ref.backward(grad.to(dtype).double())
        assert x.grad.dtype == dtype and att.grad is None  # the attention is a constant
        assert_close(*relative(x.grad, xr.grad), dtype, f"grad ({reduction})")


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_tsman_loss(backend, dtype, shape_id, contiguous):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    kw = smoothing_for(shape_id)
    a, b, target, _ = two_streams(shape, dtype, device_for(backend), seed=50 + shape_id)
    for reduction in REDUCTIONS:
        xa = layout(a, contiguous).detach().requires_grad_()
        xb = layout(b, contiguous).detach().requires_grad_()
        loss, att = ops.tsman_loss(
            xa, xb, layout(target, contiguous), **kw, reduction=reduction, return_attention=True, backend=backend
        )
        ra = a.detach().double().requires_grad_()
        rb = b.detach().double().requires_grad_()
        ref, ref_att = reference.tsman_loss(ra, rb, target, **kw, reduction=reduction)
        assert loss.dtype == dtype and loss.shape == ref.shape
        assert att.dtype == dtype and not att.requires_grad
        assert_close(att, ref_att, dtype, "attention")
        scale = 1.0 if reduction != "sum" else 1.0 / target.numel()
        assert_close(loss * scale, ref * scale, dtype, f"loss ({reduction})")
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        loss.backward(grad.to(dtype).to(loss.device))
        ref.backward(grad.to(dtype).double())
        assert xa.grad.dtype == dtype and xb.grad.dtype == dtype
        assert_close(*relative(xa.grad, ra.grad), dtype, f"grad a ({reduction})")
        assert_close(*relative(xb.grad, rb.grad), dtype, f"grad b ({reduction})")
    # without return_attention: the loss alone, equal to the sum of the two attended CEs
    loss = ops.tsman_loss(a, b, target, **kw, backend=backend)
    att = ops.loss_attention(a, b, **kw, backend=backend)
    pair = ops.attended_cross_entropy(a, target, att, backend=backend) + ops.attended_cross_entropy(
        b, target, att, backend=backend
    )
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    assert_close(loss, pair, dtype, "tsman_loss vs two attended CEs")


# ---------------------------------------------------------------- hand-computed values

# 1-D weights for sigma2 = 0.5, kernel_size = 3: exp(-x^2) at x = -1, 0, 1, normalized.
_W = torch.tensor([math.exp(-1.0), 1.0, math.exp(-1.0)], dtype=torch.float64) / (1.0 + 2.0 * math.exp(-1.0))


def _streams_disagreeing_at(shape, mask):
    """Two-class logits: stream a predicts class 0 everywhere (a tie, so the lowest class), stream
    b predicts class 1 where mask is True."""
    a = torch.zeros(shape, dtype=torch.float64)
    b = torch.zeros(shape, dtype=torch.float64)
    b[:, 1][mask] = 1.0
    return a, b


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_disagreeing_voxel_gives_the_gaussian(backend):
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[0, 2, 2] = True
    a, b = _streams_disagreeing_at((1, 2, 5, 5), mask)
    att = ops.loss_attention(a, b, backend=backend)
    expected = torch.zeros(1, 5, 5, dtype=torch.float64)
    expected[0, 1:4, 1:4] = torch.outer(_W, _W)
    torch.testing.assert_close(att, expected, rtol=0, atol=1e-12)
    assert att[0, 2, 2].item() == pytest.approx(0.3319, abs=1e-4)
    assert att[0, 1, 2].item() == pytest.approx(0.1221, abs=1e-4)  # edge neighbour
    assert att[0, 1, 1].item() == pytest.approx(0.0449, abs=1e-4)  # corner neighbour
    assert att.sum().item() == pytest.approx(1.0, abs=1e-12)  # the kernel is normalized


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_plane_smoothing_does_not_mix_slices_but_volumetric_does(backend):
    # One disagreeing voxel at (x, y, z) = (2, 2, 1) of a 5 x 5 x 3 volume, slices along z.
    mask = torch.zeros(1, 5, 5, 3, dtype=torch.bool)
    mask[0, 2, 2, 1] = True
    a, b = _streams_disagreeing_at((1, 2, 5, 5, 3), mask)
    spot = torch.zeros(5, 5, dtype=torch.float64)
    spot[1:4, 1:4] = torch.outer(_W, _W)

    att2 = ops.loss_attention(a, b, spatial_dims=2, slice_dim=-1, backend=backend)
    torch.testing.assert_close(att2[0, :, :, 1], spot, rtol=0, atol=1e-12)
    assert att2[0, :, :, 0].abs().max().item() == 0.0 and att2[0, :, :, 2].abs().max().item() == 0.0

    att3 = ops.loss_attention(a, b, spatial_dims=3, backend=backend)
    for z in range(3):
        torch.testing.assert_close(att3[0, :, :, z], spot * _W[z], rtol=0, atol=1e-12)
    assert att3.sum().item() == pytest.approx(1.0, abs=1e-12)

    # slice_dim=0: the same voxel is smoothed in its (y, z) plane only
    att0 = ops.loss_attention(a, b, spatial_dims=2, slice_dim=0, backend=backend)
    expected = torch.zeros(5, 5, 3, dtype=torch.float64)
    expected[2, 1:4, 0:3] = torch.outer(_W, _W)
    torch.testing.assert_close(att0[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_disagreeing_region_is_one_inside_and_agreement_far_away_is_zero(backend):
    mask = torch.zeros(1, 11, 12, dtype=torch.bool)
    mask[0, 2:7, 3:9] = True  # a 5 x 6 block of disagreement
    a, b = _streams_disagreeing_at((1, 2, 11, 12), mask)
    att = ops.loss_attention(a, b, backend=backend)
    torch.testing.assert_close(att[0, 3:6, 4:8], torch.ones(3, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    # one voxel outside the block's edge: the outer tap's share of the weight
    assert att[0, 7, 5].item() == pytest.approx(_W[0].item(), abs=1e-12)
    # two or more voxels away from any disagreement: exactly 0
    far = torch.ones(11, 12, dtype=torch.bool)
    far[1:8, 2:10] = False
    assert att[0][far].abs().max().item() == 0.0
    # the block's corner inside: (w1 + w2)^2 of the 3 x 3 kernel falls inside the block
    assert att[0, 2, 3].item() == pytest.approx(((_W[1] + _W[2]) ** 2).item(), abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_disagreement_is_one_away_from_the_volume_border(backend):
    a, b = _streams_disagreeing_at((2, 2, 6, 7, 4), torch.ones(2, 6, 7, 4, dtype=torch.bool))
    att = ops.loss_attention(a, b, spatial_dims=3, backend=backend)
    torch.testing.assert_close(att[:, 1:-1, 1:-1, 1:-1], torch.ones(2, 4, 5, 2, dtype=torch.float64), rtol=0, atol=1e-12)
    # zero padding: a corner keeps (w1 + w2)^3
    assert att[0, 0, 0, 0].item() == pytest.approx(((_W[1] + _W[2]) ** 3).item(), abs=1e-12)
    # agreeing streams: attention 0 everywhere, so the loss is 0
    same = ops.loss_attention(a, a, spatial_dims=3, backend=backend)
    assert same.abs().max().item() == 0.0
    target = torch.zeros(2, 6, 7, 4, dtype=torch.long)
    assert ops.tsman_loss(a, a, target, backend=backend).item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmax_ties_go_to_the_lowest_class(backend):
    a = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).reshape(1, 3, 1, 1).repeat(1, 1, 1, 2)
    b = a.clone()
    b[0, :, 0, 0] = torch.tensor([1.0, 0.5, 0.0])  # argmax 0 = a's tie-broken argmax: agree
    b[0, :, 0, 1] = torch.tensor([0.5, 1.0, 0.0])  # argmax 1: disagree
    att = ops.loss_attention(a, b, kernel_size=1, backend=backend)
    torch.testing.assert_close(att, torch.tensor([[[0.0, 1.0]]], dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_attended_cross_entropy_hand_computed(backend):
    # logits (0, ln 3): softmax (1/4, 3/4); target 0: ce = ln 4; attention 0.5 -> 0.5 ln 4
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).reshape(1, 2, 1, 1).requires_grad_()
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    att = torch.full((1, 1, 1), 0.5, dtype=torch.float64)
    loss = ops.attended_cross_entropy(logits, target, att, backend=backend)
    assert loss.item() == pytest.approx(0.5 * math.log(4.0), abs=1e-12)
    loss.backward()
    # d/dx = 0.5 * (softmax - onehot) = 0.5 * (-3/4, 3/4)
    torch.testing.assert_close(logits.grad.flatten(), torch.tensor([-0.375, 0.375], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("C", [2, 3, 4, 5])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_cross_entropy_with_extreme_logits_and_ties(backend, C, dtype):
    # The kernels form logsumexp from the largest logit (exp(0) = 1 without an exp, the others
    # found by min/max for C <= 3) and the two streams' logs as one log of a product: check that
    # against the reference where this could go wrong: logits ~1e4 apart, a -inf class, ties
    # at the maximum (two and all classes), and the target on every class.
    skip_unsupported(backend, dtype)
    g = torch.Generator().manual_seed(70 + C)
    a = 3.0 * torch.randn(2, C, 6, 7, 5, generator=g, dtype=torch.float64)
    b = a + torch.randn(a.shape, generator=g, dtype=torch.float64)
    a[0, 1, 0, 0, :] = -math.inf  # a class ruled out (the target there is 0)
    b[1, 0, 2, 2, :] = -math.inf  # (the target there is 1)
    a[1, :, 3, 3, 3] = 1e4 * torch.arange(C, dtype=torch.float64)
    b[0, :, 1, 1, 1] = -3e4
    a[0, :, 4, 4, :] = 2.5  # all classes tie
    b[1, :2, 5, 1, :] = 7.0  # the two lowest classes tie at the maximum
    target = torch.randint(0, C, (2, 6, 7, 5), generator=g)
    target[0, 0, 0, :] = 0
    target[1, 2, 2, :] = 1
    dev = device_for(backend)
    xa, xb, t = a.to(dtype).to(dev), b.to(dtype).to(dev), target.to(dev)
    ra, rb = a.to(dtype).double(), b.to(dtype).double()
    for sd in (2, 3):
        for reduction in ("none", "sum"):
            loss = ops.tsman_loss(xa, xb, t, spatial_dims=sd, reduction=reduction, backend=backend)
            ref, _ = reference.tsman_loss(ra, rb, target, spatial_dims=sd, reduction=reduction)
            assert torch.isfinite(ref).all()
            scale = 1.0 if reduction == "none" else 1.0 / target.numel()
            assert_close(loss * scale, ref * scale, dtype, f"tsman_loss spatial_dims={sd} ({reduction})")
    att = torch.rand(2, 6, 7, 5, generator=g, dtype=torch.float64)
    for x, r in ((xa, ra), (xb, rb)):
        loss = ops.attended_cross_entropy(x, t, att.to(dtype).to(dev), reduction="none", backend=backend)
        ref = reference.attended_cross_entropy(r, target, att.to(dtype).double(), reduction="none")
        assert_close(loss, ref, dtype, "attended_cross_entropy")
    # A NaN logit in any class (the first, which starts the running maximum, or a later one)
    # makes that voxel's loss NaN, as in the reference, and nowhere else.
    for c in range(C):
        na, nb = xa.clone(), xb.clone()
        na[0, c, 2, 3, 1] = math.nan
        nb[1, C - 1 - c, 4, 0, 2] = math.nan
        loss = ops.tsman_loss(na, nb, t, spatial_dims=3, reduction="none", backend=backend).cpu()
        ref, _ = reference.tsman_loss(na.cpu().double(), nb.cpu().double(), target, spatial_dims=3, reduction="none")
        assert torch.equal(loss.isnan(), ref.isnan()) and int(ref.isnan().sum()) == 2, f"NaN in class {c}"
        ce = ops.attended_cross_entropy(na, t, att.to(dtype).to(dev), reduction="none", backend=backend).cpu()
        assert torch.isnan(ce[0, 2, 3, 1]) and int(ce.isnan().sum()) == 1, f"NaN in class {c}"


# ---------------------------------------------------------------- autograd, opcheck, compile


@pytest.mark.slow  # numerical Jacobians, ~6 s here; the matrix checks the same gradients in float64
@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_gradcheck_cpu_float64():
    for shape, kw in (((1, 3, 4, 3, 2), dict(spatial_dims=3)), ((2, 2, 5, 4), dict(kernel_size=5, sigma2=1.5))):
        # margin >= 1 keeps every argmax (hence the attention) fixed under the finite differences
        a, b, target, att = two_streams(shape, torch.float64, "cpu", seed=60)
        for reduction in REDUCTIONS:
            torch.autograd.gradcheck(
                lambda x: ops.attended_cross_entropy(x, target, att, reduction=reduction, backend="cpu"),
                (a.clone().requires_grad_(),),
            )
            torch.autograd.gradcheck(
                lambda x, y: ops.tsman_loss(x, y, target, **kw, reduction=reduction, backend="cpu"),
                (a.clone().requires_grad_(), b.clone().requires_grad_()),
            )


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_opcheck():
    a, b, target, att = two_streams((2, 3, 5, 4, 3), torch.float32, "cpu", seed=61)
    P = torch.ops.pyseg_noise
    xa, xb = a.clone().requires_grad_(), b.clone().requires_grad_()
    torch.library.opcheck(P.loss_attention.default, (a, b, 0.5, 3, 2, -1))
    torch.library.opcheck(P.loss_attention.default, (xa, xb, 1.0, 5, 3, 0))
    for reduction in REDUCTIONS:
        torch.library.opcheck(P.attended_cross_entropy.default, (xa, target, att, reduction))
        torch.library.opcheck(P.tsman_loss.default, (xa, xb, target, 0.5, 3, 2, 1, reduction))
    loss_map = P.attended_cross_entropy(a, target, att, "none")
    torch.library.opcheck(P.attended_cross_entropy_backward.default, (torch.ones_like(loss_map), a, target, att, "none"))
    torch.library.opcheck(P.attended_cross_entropy_backward.default, (torch.tensor(2.0), a, target, att, "mean"))
    torch.library.opcheck(P.tsman_loss_backward.default, (torch.ones_like(loss_map), a, b, target, att, "none"))
    torch.library.opcheck(P.tsman_loss_backward.default, (torch.tensor(0.5), a, b, target, att, "sum"))


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_torch_compile_fullgraph():
    a, b, target, _ = two_streams((2, 2, 8, 6, 4), torch.float32, "cpu", seed=62)

    def step(x, y, t):
        loss, att = ops.tsman_loss(x, y, t, spatial_dims=3, return_attention=True)
        return loss + ops.attended_cross_entropy(x, t, att, reduction="sum") * 1e-3, att

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    x1, y1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    x2, y2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    l1, att1 = compiled(x1, y1, target)
    l2, att2 = step(x2, y2, target)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(att1, att2)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(y1.grad, y2.grad)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_raises_clear_errors(backend):
    a, b, target, att = two_streams((2, 3, 4, 5, 6), torch.float32, "cpu", seed=63)
    bad_target = target.clone()
    bad_target[1, 2, 3, 4] = 3
    with pytest.raises(ValueError, match=r"target has value 3 but logits have C=3"):
        ops.tsman_loss(a, b, bad_target, backend=backend)
    bad_target[1, 2, 3, 4] = -2
    with pytest.raises(ValueError, match=r"target has value -2 but logits have C=3"):
        ops.attended_cross_entropy(a, bad_target, att, backend=backend)
    with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 1, got 4"):
        ops.loss_attention(a, b, kernel_size=4, backend=backend)
    with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 1, got -1"):
        ops.tsman_loss(a, b, target, kernel_size=-1, backend=backend)
    with pytest.raises(TypeError, match=r"kernel_size must be an int"):
        ops.loss_attention(a, b, kernel_size=3.0, backend=backend)
    with pytest.raises(ValueError, match=r"sigma2 \(the Gaussian's variance\) must be > 0, got 0"):
        ops.loss_attention(a, b, sigma2=0.0, backend=backend)
    with pytest.raises(ValueError, match=r"sigma2 .* must be > 0, got nan"):
        ops.tsman_loss(a, b, target, sigma2=float("nan"), backend=backend)
    with pytest.raises(ValueError, match=r"spatial_dims must be 2 \(in-plane\) or 3 \(volumetric\), got 1"):
        ops.loss_attention(a, b, spatial_dims=1, backend=backend)
    with pytest.raises(ValueError, match=r"spatial_dims=3 needs 3D input"):
        ops.loss_attention(a[..., 0], b[..., 0], spatial_dims=3, backend=backend)
    with pytest.raises(ValueError, match=r"slice_dim must index one of the 3 spatial axes"):
        ops.loss_attention(a, b, slice_dim=3, backend=backend)
    with pytest.raises(ValueError, match=r"logits_b must have the shape of logits_a"):
        ops.loss_attention(a, b[:, :2], backend=backend)
    with pytest.raises(TypeError, match=r"logits_b must have the dtype of logits_a"):
        ops.tsman_loss(a, b.double(), target, backend=backend)
    with pytest.raises(ValueError, match=r"logits_a must be \[B, C, H, W\] or \[B, C, X, Y, Z\]"):
        ops.loss_attention(a[..., 0, 0], b[..., 0, 0], backend=backend)
    with pytest.raises(ValueError, match=r"logits_a must be \[B, C, \*S\]"):
        ops.tsman_loss(a[0, 0, 0], b, target, backend=backend)
    with pytest.raises(TypeError, match=r"logits_a must be a floating point"):
        ops.loss_attention(a.long(), b, backend=backend)
    with pytest.raises(ValueError, match=r"logits_a needs at least C=2 classes"):
        ops.loss_attention(a[:, :1], b[:, :1], backend=backend)
    with pytest.raises(ValueError, match=r"logits_a is empty"):
        ops.tsman_loss(a[:0], b[:0], target[:0], backend=backend)
    with pytest.raises(ValueError, match=r"target must be \[B, \*S\]"):
        ops.tsman_loss(a, b, target[:, :3], backend=backend)
    with pytest.raises(TypeError, match=r"target must be an integer tensor"):
        ops.attended_cross_entropy(a, target.float(), att, backend=backend)
    with pytest.raises(ValueError, match=r"attention must be \[B, \*S\]"):
        ops.attended_cross_entropy(a, target, att[:, :2], backend=backend)
    with pytest.raises(TypeError, match=r"attention must be a floating point"):
        ops.attended_cross_entropy(a, target, target, backend=backend)
    with pytest.raises(ValueError, match=r"logits_b is on 'meta' but logits_a is on 'cpu'"):
        ops.loss_attention(a, b.to("meta"), backend=backend)
    with pytest.raises(ValueError, match=r"attention is on 'meta'"):
        ops.attended_cross_entropy(a, target, att.to("meta"), backend=backend)
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        ops.tsman_loss(a, b, target, reduction="avg", backend=backend)


def test_direct_torch_ops_call_checks_in_cpp():
    """torch.ops.* skips the Python checks; the C++ kernels still refuse bad arguments cleanly."""
    if "cpu" not in BACKENDS:
        pytest.skip("C++ extension not built")
    P = torch.ops.pyseg_noise
    a, b, target, att = two_streams((1, 2, 4, 4, 3), torch.float32, "cpu", seed=64)
    bad = target.clone()
    bad[0, 0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"tsman_loss: target has value 7 but logits have C=2"):
        P.tsman_loss(a, b, bad, 0.5, 3, 2, -1, "mean")
    with pytest.raises(ValueError, match=r"target has value 7"):
        P.tsman_loss_backward(torch.tensor(1.0), a, b, bad, att, "mean")
    with pytest.raises(ValueError, match=r"attended_cross_entropy: target has value 7"):
        P.attended_cross_entropy(a, bad, att, "none")
    with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 1, got 2"):
        P.loss_attention(a, b, 0.5, 2, 2, -1)
    with pytest.raises(ValueError, match=r"sigma2 .* must be > 0"):
        P.loss_attention(a, b, -1.0, 3, 2, -1)
    with pytest.raises(ValueError, match=r"spatial_dims must be 2 \(in-plane\) or 3"):
        P.loss_attention(a, b, 0.5, 3, 4, -1)
    with pytest.raises(ValueError, match=r"slice_dim must index one of the 3 spatial axes"):
        P.loss_attention(a, b, 0.5, 3, 2, 5)
    with pytest.raises(ValueError, match=r"spatial_dims=3 needs 3D input"):
        P.loss_attention(a[..., 0], b[..., 0], 0.5, 3, 3, -1)
    with pytest.raises(TypeError, match=r"logits_b must have the dtype of logits_a"):
        P.loss_attention(a, b.half(), 0.5, 3, 2, -1)
    with pytest.raises(ValueError, match=r"logits_b must have the shape of logits_a"):
        P.tsman_loss(a, b[..., :2], target, 0.5, 3, 2, -1, "mean")
    with pytest.raises(ValueError, match=r"attention must be \[B, \*S\]"):
        P.attended_cross_entropy(a, target, att[..., :2], "mean")
    with pytest.raises(ValueError, match=r"grad must have the loss map's shape"):
        P.tsman_loss_backward(torch.ones(3), a, b, target, att, "none")
    with pytest.raises(ValueError, match=r"reduction must be 'mean', 'sum' or 'none'"):
        P.attended_cross_entropy(a, target, att, "avg")
