"""Property-based tests (hypothesis) of the PINT ops on every backend available here.

Random shapes (1-3 spatial axes of size 1..40 within a voxel budget, C 2..8, M 1..6),
dtypes, strides (permuted, sliced, expanded teacher tensors), extreme logits and
probabilities with exact zeros and ones: forward and gradients finite and equal to
the float64 reference; invariants: losses >= 0, alpha in (0, 1], entropy in
[0, log C], "mean" equals the mean of "none".
"""
from __future__ import annotations

import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyseg_noise import ops  # noqa: E402
from pyseg_noise.ops import reference  # noqa: E402
from tests.ops.op_cases import KERNEL_BACKENDS, device_for  # noqa: E402

MAX_VOXELS = 6000
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def volumes(draw, min_spatial=1):
    n_spatial = draw(st.integers(min_spatial, 3))
    sizes = []
    budget = MAX_VOXELS
    for _ in range(n_spatial):
        s = draw(st.integers(1, min(40, max(1, budget))))
        sizes.append(s)
        budget //= s
    B = draw(st.integers(1, 3))
    C = draw(st.integers(2, 8))
    return (B, C, *sizes)


def strided(x: torch.Tensor, how: str) -> torch.Tensor:
    """Same values, other strides: a permuted copy viewed back, or a slice of a larger buffer."""
    if how == "permuted":
        perm = list(range(x.dim()))[::-1]
        inv = [perm.index(i) for i in range(x.dim())]
        return x.permute(perm).contiguous().permute(inv)
    if how == "sliced":
        big = torch.zeros(x.shape[:-1] + (x.shape[-1] * 2,), dtype=x.dtype)
        big[..., 1::2] = x
        return big[..., 1::2]
    return x


def make(shape, seed, scale, exact_probs):
    g = torch.Generator().manual_seed(seed)
    B, C, *S = shape
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    target = torch.randint(0, C, (B, *S), generator=g)
    prob = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 4, dim=1)
    if exact_probs:
        # some voxels exactly one-hot (zeros and a one), some exactly uniform
        hot = torch.randint(0, C, (B, *S), generator=g)
        onehot = torch.nn.functional.one_hot(hot, C).movedim(-1, 1).double()
        mask = (torch.rand((B, 1, *S), generator=g) < 0.3)
        prob = torch.where(mask, onehot, prob)
        mask2 = (torch.rand((B, 1, *S), generator=g) < 0.1)
        prob = torch.where(mask2, torch.full_like(prob, 1.0 / C), prob)
    return logits, target, prob


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(
    shape=volumes(),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 3.0, 1e4]),
    exact=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    layout=st.sampled_from(["contiguous", "permuted", "sliced"]),
    pseudo=st.sampled_from(["soft", "hard"]),
)
def test_pixel_loss_properties(backend, shape, seed, scale, exact, dtype, layout, pseudo):
    logits, target, prob = make(shape, seed, scale, exact)
    dev = device_for(backend)
    x = strided(logits.to(dtype), layout).to(dev).requires_grad_()
    none = ops.pint_pixel_loss(x, strided(target, layout).to(dev), strided(prob.to(dtype), layout).to(dev),
                               pseudo_label=pseudo, reduction="none", backend=backend)
    mean = ops.pint_pixel_loss(x, target.to(dev), prob.to(dtype).to(dev), pseudo_label=pseudo, backend=backend)
    assert torch.isfinite(none).all() and (none >= 0).all()
    # Logit differences of fp32 inputs of size `scale` carry an absolute error of a few
    # ulp(scale) (1e-3 at 1e4): the loss and softmax inherit it, whatever the kernel.
    eps = torch.finfo(dtype).eps
    tol = dict(rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=1e-5 + 8 * eps * scale)
    torch.testing.assert_close(mean.double(), none.double().mean(), **tol)
    xr = logits.to(dtype).double().requires_grad_()
    ref = reference.pint_pixel_loss(xr, target, prob.to(dtype).double(), pseudo_label=pseudo, reduction="none")
    torch.testing.assert_close(none.double().cpu(), ref, **tol)
    g = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 1000))
    (gx,) = torch.autograd.grad(none, x, g.to(dtype).to(dev))
    (gr,) = torch.autograd.grad(ref, xr, g.to(dtype).double())
    assert torch.isfinite(gx).all()
    torch.testing.assert_close(gx.double().cpu(), gr, **tol)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(
    shape=volumes(min_spatial=2),
    seed=st.integers(0, 2**31 - 1),
    exact=st.booleans(),
    layout=st.sampled_from(["contiguous", "permuted", "sliced"]),
    slice_dim=st.sampled_from([-1, 0, 1]),
)
def test_image_loss_and_uncertainty_properties(backend, shape, seed, exact, layout, slice_dim):
    logits, target, prob = make(shape, seed, 3.0, exact)
    dev = device_for(backend)
    C = shape[1]
    x = strided(logits.float(), layout).to(dev).requires_grad_()
    none = ops.pint_image_loss(x, target.to(dev), strided(prob.float(), layout).to(dev), reduction="none",
                               slice_dim=slice_dim, backend=backend)
    mean = ops.pint_image_loss(x, target.to(dev), prob.float().to(dev), slice_dim=slice_dim, backend=backend)
    assert torch.isfinite(none).all() and (none >= 0).all()
    torch.testing.assert_close(mean.double(), none.double().mean(), rtol=1e-4, atol=1e-6)
    ref = reference.pint_image_loss(logits.float().double(), target, prob.float().double(), reduction="none",
                                    slice_dim=slice_dim)
    torch.testing.assert_close(none.double().cpu(), ref, rtol=1e-4, atol=1e-5)

    # entropy in [0, log C]; alpha = exp(-U) in (0, 1]
    M = 1 + seed % 6
    t_logits = torch.randn((M, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    # expanded teacher tensor: stride 0 over the passes
    t_in = t_logits[:1].expand(M, *shape) if seed % 2 else t_logits
    p, u = ops.teacher_uncertainty(t_in.to(dev), backend=backend)
    assert (u >= -1e-6).all() and (u <= math.log(C) + 1e-5).all()
    rp, ru = reference.teacher_uncertainty(t_in.double())
    torch.testing.assert_close(p.double().cpu(), rp, rtol=1e-5, atol=1e-6)
    U = ops.slice_uncertainty(u, slice_dim=slice_dim, backend=backend)
    alpha = torch.exp(-U)
    assert (alpha > 0).all() and (alpha <= 1).all()
    torch.testing.assert_close(U.double().cpu(), reference.slice_uncertainty(u.double().cpu(), slice_dim=slice_dim),
                               rtol=1e-5, atol=1e-6)


@st.composite
def two_streams(draw):
    n_spatial = draw(st.integers(2, 3))
    sizes = [draw(st.integers(1, 18)) for _ in range(n_spatial)]
    return (draw(st.integers(1, 2)), draw(st.integers(2, 8)), *sizes)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(
    shape=two_streams(),
    seed=st.integers(0, 2**31 - 1),
    agree=st.floats(0.0, 1.0),
    kernel_size=st.sampled_from([1, 3, 5]),
    sigma2=st.sampled_from([0.25, 0.5, 2.0]),
    volumetric=st.booleans(),
    slice_dim=st.sampled_from([-1, 0, 1]),
    layout=st.sampled_from(["contiguous", "permuted", "sliced"]),
)
def test_tsman_properties(backend, shape, seed, agree, kernel_size, sigma2, volumetric, slice_dim, layout):
    """attention in [0, 1] and equal to the dense reference; the loss >= 0, its mean the mean
    of "none", both gradients equal to the reference."""
    g = torch.Generator().manual_seed(seed)
    B, C, *S = shape
    spatial_dims = 3 if (volumetric and len(S) == 3) else 2
    # one-hot-ish logits with a margin: the argmax cannot flip by rounding
    la = torch.nn.functional.one_hot(torch.randint(0, C, (B, *S), generator=g), C).movedim(-1, 1).double() * 4
    lb = torch.nn.functional.one_hot(torch.randint(0, C, (B, *S), generator=g), C).movedim(-1, 1).double() * 4
    same = torch.rand((B, 1, *S), generator=g) < agree
    lb = torch.where(same, la, lb)
    la = la + torch.rand(la.shape, generator=g, dtype=torch.float64)
    lb = lb + torch.rand(lb.shape, generator=g, dtype=torch.float64)
    target = torch.randint(0, C, (B, *S), generator=g)
    dev = device_for(backend)
    kw = dict(sigma2=sigma2, kernel_size=kernel_size, spatial_dims=spatial_dims, slice_dim=slice_dim)
    a = strided(la.float(), layout).to(dev).requires_grad_()
    b = strided(lb.float(), layout).to(dev).requires_grad_()
    att = ops.loss_attention(a, b, backend=backend, **kw)
    ref_att = reference.loss_attention(la.float().double(), lb.float().double(), **kw)
    assert (att >= 0).all() and (att <= 1).all()
    torch.testing.assert_close(att.double().cpu(), ref_att, rtol=1e-5, atol=1e-6)
    none = ops.tsman_loss(a, b, target.to(dev), reduction="none", backend=backend, **kw)
    mean = ops.tsman_loss(a, b, target.to(dev), backend=backend, **kw)
    assert (none >= 0).all()
    torch.testing.assert_close(mean.double(), none.double().mean(), rtol=1e-4, atol=1e-6)
    ar = la.float().double().requires_grad_()
    br = lb.float().double().requires_grad_()
    ref, _ = reference.tsman_loss(ar, br, target, reduction="none", **kw)
    torch.testing.assert_close(none.double().cpu(), ref, rtol=1e-4, atol=1e-5)
    up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    ga, gb = torch.autograd.grad(none, (a, b), up.float().to(dev))
    gar, gbr = torch.autograd.grad(ref, (ar, br), up.float().double())
    torch.testing.assert_close(ga.double().cpu(), gar, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb.double().cpu(), gbr, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    dtypes=st.lists(st.sampled_from([torch.float32, torch.float16, torch.float64]), min_size=12, max_size=12),
    decay=st.floats(0.0, 1.0),
    as_tensor=st.booleans(),
)
def test_ema_update_properties(backend, sizes, dtypes, decay, as_tensor):
    """ema_update_ equals torch._foreach_lerp_ for any mix of sizes and dtypes, in place."""
    if backend == "triton" and not torch.cuda.is_available() and torch.float64 in dtypes[: len(sizes)]:
        dtypes = [torch.float32 if d == torch.float64 else d for d in dtypes]
    g = torch.Generator().manual_seed(len(sizes))
    dev = device_for(backend)
    ema = [torch.randn(n, generator=g).to(d).to(dev) for n, d in zip(sizes, dtypes)]
    src = [torch.randn(n, generator=g).to(d).to(dev) for n, d in zip(sizes, dtypes)]
    expect = [e.clone() for e in ema]
    torch._foreach_lerp_(expect, src, 1.0 - decay)
    ptrs = [e.data_ptr() for e in ema]
    ops.ema_update_(ema, src, torch.tensor(decay, dtype=torch.float64) if as_tensor else decay, backend=backend)
    assert [e.data_ptr() for e in ema] == ptrs
    for e, x, d in zip(ema, expect, dtypes):
        tol = {torch.float16: (2e-3, 2e-3), torch.float32: (1e-6, 1e-6), torch.float64: (1e-12, 1e-12)}[d]
        torch.testing.assert_close(e, x, rtol=tol[0], atol=tol[1])


def test_ci_replays_the_same_examples():
    """tests/conftest.py: the "ci" profile is derandomized, and CI=true (set by .ci/run) selects it."""
    assert settings.get_profile("ci").derandomize
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    if ci and not os.environ.get("HYPOTHESIS_PROFILE"):
        assert settings.default.derandomize and SETTINGS.derandomize
