"""Property-based tests (hypothesis) of the PINT ops on every backend available here.

Random shapes (1-3 spatial axes of size 1..40 within a voxel budget, C 2..8, M 1..6),
dtypes, strides (permuted, sliced, expanded teacher tensors), extreme logits and
probabilities with exact zeros and ones: forward and gradients finite and equal to
the float64 reference; invariants: losses >= 0, alpha in (0, 1], entropy in
[0, log C], "mean" equals the mean of "none".
"""
from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyseg_noise import ops  # noqa: E402
from pyseg_noise.ops import reference  # noqa: E402
from tests.ops.op_cases import BACKENDS, device_for  # noqa: E402

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


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
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


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
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
