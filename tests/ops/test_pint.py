"""PINT ops (SPEC 1-4): every backend x dtype x shape x layout against the float64 reference."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from pyseg_noise import ops
from pyseg_noise.ops import reference
from tests.ops.op_cases import (BACKENDS, DTYPES, KERNEL_BACKENDS, SHAPE_IDS, SHAPES, assert_close, device_for,
                                layout, skip_unsupported)

REDUCTIONS = ["mean", "sum", "none"]


def make_inputs(shape, dtype, device, seed, M=None):
    g = torch.Generator().manual_seed(seed)
    B, C, *S = shape
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    target = torch.randint(0, C, (B, *S), generator=g)
    sharp = torch.rand((B, 1, *S), generator=g, dtype=torch.float64) * 6
    prob = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * sharp, dim=1).to(dtype)
    out = [logits.to(device), target.to(device), prob.to(device)]
    if M is not None:
        out.append((torch.randn((M, *shape), generator=g, dtype=torch.float64) * 2).to(dtype).to(device))
    return out


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_teacher_uncertainty(backend, dtype, shape_id, contiguous):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    M = 1 + shape_id % 6  # M from 1 to 6
    *_, t_logits = make_inputs(shape, dtype, device_for(backend), seed=shape_id, M=M)
    t_logits = layout(t_logits, contiguous)
    prob, ent = ops.teacher_uncertainty(t_logits, backend=backend)
    ref_prob, ref_ent = reference.teacher_uncertainty(t_logits.double())
    assert prob.dtype == dtype and ent.dtype == dtype
    assert prob.shape == shape and ent.shape == (shape[0],) + shape[2:]
    assert_close(prob, ref_prob, dtype, "prob")
    assert_close(ent, ref_ent, dtype, "entropy")

    acc = ops.TeacherUncertaintyAccumulator(backend=backend)
    for m in range(M):
        acc.add(t_logits[m])
    s_prob, s_ent = acc.compute()
    assert acc.count == M
    assert_close(s_prob, ref_prob, torch.float64 if dtype == torch.float64 else torch.float32, "streamed prob")
    assert_close(s_ent, ref_ent, torch.float64 if dtype == torch.float64 else torch.float32, "streamed entropy")


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_pint_pixel_loss(backend, dtype, shape_id, contiguous):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    pseudo = "hard" if shape_id % 2 else "soft"
    normalize = shape_id == 3
    logits, target, prob = make_inputs(shape, dtype, device_for(backend), seed=10 + shape_id)
    for reduction in REDUCTIONS:
        x = layout(logits, contiguous).detach().requires_grad_()
        loss = ops.pint_pixel_loss(
            x, layout(target, contiguous), layout(prob, contiguous), pseudo_label=pseudo,
            reduction=reduction, normalize_entropy=normalize, backend=backend,
        )
        xr = logits.detach().double().requires_grad_()
        ref = reference.pint_pixel_loss(
            xr, target, prob.double(), pseudo_label=pseudo, reduction=reduction, normalize_entropy=normalize
        )
        assert loss.dtype == dtype and loss.shape == ref.shape
        scale = 1.0 if reduction != "sum" else 1.0 / target.numel()
        assert_close(loss * scale, ref * scale, dtype, f"loss ({reduction})")
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        loss.backward(grad.to(dtype).to(loss.device))
        ref.backward(grad.to(dtype).double())
        assert x.grad.dtype == dtype
        assert_close(x.grad, xr.grad, dtype, f"grad ({reduction})")


@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_slice_uncertainty(backend, dtype, shape_id):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    _, _, prob = make_inputs(shape, dtype, device_for(backend), seed=20 + shape_id)
    ent = reference.prob_entropy(prob.double()).to(dtype)
    n_spatial = len(shape) - 2
    for slice_dim in ([-1] if n_spatial == 2 else [-1, 0, 1]):
        for contiguous in (True, False):
            U = ops.slice_uncertainty(layout(ent, contiguous), slice_dim=slice_dim, backend=backend)
            ref = reference.slice_uncertainty(ent.double(), slice_dim=slice_dim)
            assert U.dtype == dtype and U.shape == ref.shape
            assert_close(U, ref, dtype, f"U (slice_dim={slice_dim})")


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_pint_image_loss(backend, dtype, shape_id, contiguous):
    skip_unsupported(backend, dtype)
    shape = SHAPES[shape_id]
    pseudo = "soft" if shape_id % 2 else "hard"
    normalize = shape_id == 2
    slice_dim = [-1, 0, 1][shape_id % 3]
    logits, target, prob = make_inputs(shape, dtype, device_for(backend), seed=30 + shape_id)
    for reduction in REDUCTIONS:
        x = layout(logits, contiguous).detach().requires_grad_()
        loss = ops.pint_image_loss(
            x, layout(target, contiguous), layout(prob, contiguous), pseudo_label=pseudo, reduction=reduction,
            normalize_entropy=normalize, slice_dim=slice_dim, backend=backend,
        )
        xr = logits.detach().double().requires_grad_()
        ref = reference.pint_image_loss(
            xr, target, prob.double(), pseudo_label=pseudo, reduction=reduction, normalize_entropy=normalize,
            slice_dim=slice_dim,
        )
        assert loss.dtype == dtype and loss.shape == ref.shape
        assert_close(loss, ref, dtype, f"loss ({reduction})")
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        loss.backward(grad.to(dtype).to(loss.device))
        ref.backward(grad.to(dtype).double())
        # per-voxel gradients are ~1/N_slice: compare relative to their scale
        scale = 1.0 / xr.grad.abs().max().clamp_min(1e-30)
        assert_close(x.grad.double() * scale, xr.grad * scale, dtype, f"grad ({reduction})")


# ---------------------------------------------------------------- hand-computed values


def test_reference_hand_computed_two_class_voxel():
    # teacher p = (0.8, 0.2): u = -(0.8 ln 0.8 + 0.2 ln 0.2); student logits (0, ln 3): s = (0.25, 0.75).
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).reshape(1, 2, 1, 1)
    prob = torch.tensor([0.8, 0.2], dtype=torch.float64).reshape(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    _, ent = reference.teacher_uncertainty(torch.log(prob).unsqueeze(0))
    assert ent.item() == pytest.approx(0.5004024235381879, abs=1e-12)
    # alpha = exp(-u) = 0.60628662..., ce = ln 4, mse_soft = (0.55^2 + 0.55^2) / 2 = 0.3025
    for backend in BACKENDS:
        soft = ops.pint_pixel_loss(logits, target, prob, pseudo_label="soft", backend=backend)
        hard = ops.pint_pixel_loss(logits, target, prob, pseudo_label="hard", backend=backend)
        assert soft.item() == pytest.approx(0.6062866266041592 * math.log(4) + (1 - 0.6062866266041592) * 0.3025, abs=1e-12)
        assert soft.item() == pytest.approx(0.9595900271359884, abs=1e-12)
        # hard pseudo label (1, 0): mse = (0.75^2 + 0.75^2) / 2 = 0.5625
        assert hard.item() == pytest.approx(1.061955504218907, abs=1e-12)
        # a single voxel is a single slice: the image loss equals the pixel loss
        img = ops.pint_image_loss(logits, target, prob, backend=backend)
        assert img.item() == pytest.approx(0.9595900271359884, abs=1e-12)


def test_reference_hand_computed_slice_uncertainty():
    ent = torch.tensor([[[1.0, 3.0], [5.0, 7.0]]], dtype=torch.float64).unsqueeze(-1).expand(1, 2, 2, 3)
    # slice_dim=0 averages over (Y, Z): slices x=0 -> (1+3)/2 = 2, x=1 -> 6
    for backend in BACKENDS:
        U = ops.slice_uncertainty(ent, slice_dim=0, backend=backend)
        torch.testing.assert_close(U, torch.tensor([[2.0, 6.0]], dtype=torch.float64))
        U = ops.slice_uncertainty(ent, slice_dim=-1, backend=backend)
        torch.testing.assert_close(U, torch.full((1, 3), 4.0, dtype=torch.float64))


def test_entropy_of_exact_zero_and_one_probabilities():
    prob = torch.tensor([1.0, 0.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    logits = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    for backend in BACKENDS:
        # u = 0, alpha = 1: the loss is the plain CE ln 2
        loss = ops.pint_pixel_loss(logits, target, prob, backend=backend)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-12)


# ---------------------------------------------------------------- autograd, opcheck, compile


@pytest.mark.slow  # 12 numerical Jacobians, 20-40 s here; the matrix checks the same gradients in float64
def test_gradcheck_cpu_float64():
    logits, target, prob = make_inputs((2, 3, 4, 3, 5), torch.float64, "cpu", seed=5)
    for reduction in REDUCTIONS:
        for pseudo in ("soft", "hard"):
            torch.autograd.gradcheck(
                lambda x: ops.pint_pixel_loss(x, target, prob, pseudo_label=pseudo, reduction=reduction, backend="cpu"),
                (logits.requires_grad_(),),
            )
            torch.autograd.gradcheck(
                lambda x: ops.pint_image_loss(x, target, prob, pseudo_label=pseudo, reduction=reduction,
                                              slice_dim=1, backend="cpu"),
                (logits.requires_grad_(),),
            )


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_opcheck():
    logits, target, prob, t_logits = make_inputs((2, 3, 5, 4, 3), torch.float32, "cpu", seed=6, M=3)
    P = torch.ops.pyseg_noise
    x = logits.requires_grad_()
    for reduction in REDUCTIONS:
        torch.library.opcheck(P.pint_pixel_loss.default, (x, target, prob, False, False, reduction))
        torch.library.opcheck(P.pint_pixel_loss.default, (x, target, prob, True, True, reduction))
        torch.library.opcheck(P.pint_image_loss.default, (x, target, prob, False, False, -1, reduction))
        torch.library.opcheck(P.pint_image_loss.default, (x, target, prob, True, False, 0, reduction))
    loss = torch.ops.pyseg_noise.pint_pixel_loss(logits.detach(), target, prob, False, False, "none")
    torch.library.opcheck(P.pint_pixel_loss_backward.default, (torch.ones_like(loss), logits.detach(), target, prob, False, False, "none"))
    torch.library.opcheck(P.teacher_uncertainty.default, (t_logits,))
    torch.library.opcheck(P.softmax_accumulate_.default, (torch.zeros_like(prob), logits.detach()))
    torch.library.opcheck(P.prob_entropy.default, (prob * 2, 0.5))
    torch.library.opcheck(P.slice_uncertainty.default, (prob[:, 0], 1))


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_torch_compile_fullgraph():
    logits, target, _, t_logits = make_inputs((2, 2, 8, 6, 4), torch.float32, "cpu", seed=7, M=4)

    def step(x, t, tl):
        prob, ent = ops.teacher_uncertainty(tl)
        U = ops.slice_uncertainty(ent)
        loss = ops.pint_pixel_loss(x, t, prob) + ops.pint_image_loss(x, t, prob, pseudo_label="hard")
        return loss, U

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    l1, U1 = compiled(x1, target, t_logits)
    l2, U2 = step(x2, target, t_logits)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(U1, U2)
    torch.testing.assert_close(x1.grad, x2.grad)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_raises_clear_errors(backend):
    logits, target, prob = make_inputs((2, 3, 4, 5, 6), torch.float32, "cpu", seed=8)
    f = lambda *a, **k: ops.pint_pixel_loss(*a, backend=backend, **k)  # noqa: E731
    bad_target = target.clone()
    bad_target[1, 2, 3, 4] = 3
    with pytest.raises(ValueError, match=r"target has value 3 but logits have C=3"):
        f(logits, bad_target, prob)
    bad_target[1, 2, 3, 4] = -1
    with pytest.raises(ValueError, match=r"target has value -1"):
        ops.pint_image_loss(logits, bad_target, prob, backend=backend)
    with pytest.raises(ValueError, match=r"logits must be \[B, C, \*S\]"):
        f(logits[0, 0, 0, 0], target, prob)
    with pytest.raises(ValueError, match=r"target must be \[B, \*S\]"):
        f(logits, target[:, :3], prob)
    with pytest.raises(ValueError, match=r"teacher_prob must have the shape of logits"):
        f(logits, target, prob[:, :2])
    with pytest.raises(TypeError, match=r"target must be an integer tensor"):
        f(logits, target.float(), prob)
    with pytest.raises(TypeError, match=r"logits must be a floating point"):
        f(logits.long(), target, prob)
    nan_prob = prob.clone()
    nan_prob[0, 1, 2, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_prob contains NaN"):
        f(logits, target, nan_prob)
    with pytest.raises(ValueError, match=r"logits is empty"):
        f(logits[:0], target[:0], prob[:0])
    with pytest.raises(ValueError, match=r"target is on 'meta' but logits is on 'cpu'|teacher_prob is on 'meta'"):
        f(logits, target, prob.to("meta"))
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        f(logits, target, prob, reduction="avg")
    with pytest.raises(ValueError, match=r"pseudo_label must be one of"):
        f(logits, target, prob, pseudo_label="onehot")
    with pytest.raises(ValueError, match=r"slice_dim must index one of the 3 spatial axes"):
        ops.pint_image_loss(logits, target, prob, slice_dim=3, backend=backend)
    with pytest.raises(ValueError, match=r"teacher_logits must be \[M, B, C, \*S\]"):
        ops.teacher_uncertainty(logits[0, 0], backend=backend)
    with pytest.raises(ValueError, match=r"entropy must be \[B, H, W\] or \[B, X, Y, Z\]"):
        ops.slice_uncertainty(prob, backend=backend)


def test_backend_choice_errors(monkeypatch):
    logits, target, prob = make_inputs((1, 2, 4, 4), torch.float32, "cpu", seed=9)
    with pytest.raises(ValueError, match=r"backend must be None or one of"):
        ops.pint_pixel_loss(logits, target, prob, backend="gpu")
    import pyseg_noise.kernels

    monkeypatch.setattr(pyseg_noise.kernels, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match=r"backend='triton' needs CUDA tensors|needs the `triton` package"):
        ops.pint_pixel_loss(logits, target, prob, backend="triton")


def test_direct_torch_ops_call_checks_in_cpp():
    """torch.ops.* skips the Python checks; the C++ kernel still refuses bad labels cleanly."""
    if "cpu" not in BACKENDS:
        pytest.skip("C++ extension not built")
    logits, target, prob = make_inputs((1, 2, 4, 4), torch.float32, "cpu", seed=9)
    target[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"target has value 7 but logits have C=2"):
        torch.ops.pyseg_noise.pint_pixel_loss(logits, target, prob, False, False, "mean")
    with pytest.raises(ValueError, match=r"reduction must be 'mean', 'sum' or 'none'"):
        torch.ops.pyseg_noise.pint_pixel_loss(logits, target.clamp(0, 1), prob, False, False, "avg")


def test_missing_extension_falls_back_with_one_warning():
    code = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["pyseg_noise._C"] = None  # makes `from pyseg_noise import _C` fail
        import torch
        from pyseg_noise import ops
        assert not ops.HAS_CPU_EXTENSION
        x = torch.randn(1, 2, 3, 4); t = torch.zeros(1, 3, 4, dtype=torch.long); p = torch.full_like(x, 0.5)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            a = ops.pint_pixel_loss(x, t, p)
            b = ops.pint_image_loss(x, t, p)
        assert len(w) == 1 and "fall back to the eager reference" in str(w[0].message), [str(m.message) for m in w]
        try:
            ops.pint_pixel_loss(x, t, p, backend="cpu")
        except RuntimeError as e:
            assert "needs the C++ extension" in str(e)
        else:
            raise AssertionError("backend='cpu' did not raise")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("C", [2, 4, 6])  # the register paths (2, 4) and the block path (6)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_extreme_logits_and_probabilities(backend, C):
    """±1e4 logits, all-equal rows (also at -3e4, where logsumexp - x[t] would lose the ce of
    log C to rounding in fp32) and probabilities spanning 1e-30..1 stay finite and exact."""
    g = torch.Generator().manual_seed(11)
    B, S = 2, (9, 8, 7)
    logits = torch.randn((B, C, *S), generator=g, dtype=torch.float64) * 1e4
    logits[:, :, 0] = 3.0  # all-equal rows: softmax exactly uniform
    logits[:, :, 2] = -3e4  # all-equal rows at a large magnitude: ce = log C exactly
    prob = torch.softmax(torch.randn((B, C, *S), generator=g, dtype=torch.float64) * 30, dim=1)
    prob[:, :, 1] = torch.nn.functional.one_hot(torch.tensor(0), C).double().reshape(1, C, 1, 1)
    target = torch.randint(0, C, (B, *S), generator=g)
    for dtype in (torch.float32, torch.float64):
        x = logits.to(dtype).requires_grad_()
        for op in (ops.pint_pixel_loss, ops.pint_image_loss):
            loss = op(x, target, prob.to(dtype), reduction="none", backend=backend)
            xr = logits.to(dtype).double().requires_grad_()
            ref_op = getattr(reference, op.__name__)
            ref = ref_op(xr, target, prob.to(dtype).double(), reduction="none")
            assert torch.isfinite(loss).all()
            # CE of a 1e4-logit gap is ~1e4: compare relative to that scale
            torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)
            (gl,) = torch.autograd.grad(loss.sum(), x)
            (gr,) = torch.autograd.grad(ref.sum(), xr)
            assert torch.isfinite(gl).all()
            torch.testing.assert_close(gl.double(), gr, rtol=1e-5, atol=1e-6)
        p, u = ops.teacher_uncertainty(logits.to(dtype).unsqueeze(0).expand(3, -1, -1, -1, -1, -1), backend=backend)
        rp, ru = reference.teacher_uncertainty(logits.to(dtype).double().unsqueeze(0))
        torch.testing.assert_close(p.double(), rp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(u.double(), ru, rtol=1e-5, atol=1e-5)


# ------------------------------------------- gradient computed in the forward


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("pseudo", ["soft", "hard"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("C", [2, 3, 4, 5])
def test_with_grad_op_matches_backward_op(C, reduction, pseudo):
    """pint_pixel_loss_with_grad's loss is pint_pixel_loss's, its gradient the backward op's for
    a unit upstream gradient (C = 2..4 take the register path, 5 the block path)."""
    logits, target, prob = make_inputs((2, C, 7, 5, 9), torch.float32, "cpu", seed=20 + C)
    P = torch.ops.pyseg_noise
    hard = pseudo == "hard"
    loss, grad = P.pint_pixel_loss_with_grad(logits, target, prob, hard, C == 3, reduction)
    expected_loss = P.pint_pixel_loss(logits, target, prob, hard, C == 3, reduction)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-7)
    ones = torch.ones_like(expected_loss)
    expected_grad = P.pint_pixel_loss_backward(ones, logits, target, prob, hard, C == 3, reduction)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)
    # and against the float64 reference
    xr = logits.double().requires_grad_()
    ref = reference.pint_pixel_loss(xr, target, prob.double(), pseudo_label=pseudo, reduction=reduction,
                                    normalize_entropy=C == 3)
    ref.backward(torch.ones_like(ref))
    assert_close(grad, xr.grad, torch.float32, f"grad in forward (C={C}, {reduction}, {pseudo})")


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_in_forward_unit_upstream_and_retained_graph(reduction):
    """loss.backward() (upstream 1: the precomputed gradient returned as is), then a second
    backward through the retained graph with another upstream gradient (recomputed)."""
    logits, target, prob = make_inputs((2, 2, 6, 7, 5), torch.float32, "cpu", seed=31)
    x = logits.clone().requires_grad_()
    xr = logits.double().requires_grad_()
    loss = ops.pint_pixel_loss(x, target, prob, reduction=reduction, backend="cpu")
    ref = reference.pint_pixel_loss(xr, target, prob.double(), reduction=reduction)
    first = torch.ones_like(ref)
    second = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (g1,) = torch.autograd.grad(loss, x, first.float(), retain_graph=True)
    (r1,) = torch.autograd.grad(ref, xr, first, retain_graph=True)
    assert_close(g1, r1, torch.float32, "first backward")
    (g2,) = torch.autograd.grad(loss, x, second.float())
    (r2,) = torch.autograd.grad(ref, xr, second)
    assert_close(g2, r2, torch.float32, "second backward (retained graph)")
    # the first gradient was not changed by the second backward
    assert_close(g1, r1, torch.float32, "first backward after the second")


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_grad_in_forward_refuses_double_backward_and_skips_without_grad():
    logits, target, prob = make_inputs((1, 2, 4, 5, 3), torch.float32, "cpu", seed=32)
    x = logits.clone().requires_grad_()
    loss = ops.pint_pixel_loss(x, target, prob, backend="cpu")
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|differentiable"):
        g.sum().backward()
    with torch.no_grad():
        plain = ops.pint_pixel_loss(x, target, prob, backend="cpu")
    assert plain.grad_fn is None
    torch.testing.assert_close(plain, loss.detach())


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_opcheck_with_grad_op():
    logits, target, prob = make_inputs((2, 3, 5, 4, 3), torch.float32, "cpu", seed=33)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.pyseg_noise.pint_pixel_loss_with_grad.default,
                              (logits, target, prob, False, False, reduction))


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_cpu_capability_reports_the_build():
    import pyseg_noise

    assert pyseg_noise.cpu_capability() in ("AVX512", "AVX2", "DEFAULT")


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize(
    "shape,slice_dim",
    [
        ((2, 2, 40, 37, 9), 1),    # period 333: sums by phase, lanes spread over slices
        ((2, 2, 40, 37, 9), 0),    # period 13320, slices of 333 voxels: per-slice vectors, some straddle
        ((2, 3, 40, 37, 9), 2),    # period 9 < one vector: per lane
        ((1, 4, 5, 600, 7), 1),    # slices of 7 voxels, period 4200: per lane
        ((3, 2, 64, 48), 0),       # 2D: one slice per item
    ],
    ids=["phase", "slice-vectors", "short-period", "long-period", "2d"],
)
def test_image_loss_slice_accumulation_modes(shape, slice_dim):
    """The register path's three ways of summing per slice agree with the float64 reference
    (sizes chosen so every way, chunk borders and item tails are hit)."""
    logits, target, prob = make_inputs(shape, torch.float32, "cpu", seed=40)
    for pseudo in ("soft", "hard"):
        x = logits.clone().requires_grad_()
        xr = logits.double().requires_grad_()
        loss = ops.pint_image_loss(x, target, prob, pseudo_label=pseudo, reduction="none",
                                   slice_dim=slice_dim, backend="cpu")
        ref = reference.pint_image_loss(xr, target, prob.double(), pseudo_label=pseudo,
                                        reduction="none", slice_dim=slice_dim)
        assert_close(loss, ref, torch.float32, f"per-slice loss ({pseudo}, slice_dim={slice_dim})")
        # a different upstream gradient per slice, so a lane given its neighbour's slice shows
        up = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        (gx,) = torch.autograd.grad(loss, x, up.float())
        (gr,) = torch.autograd.grad(ref, xr, up)
        scale = 1.0 / gr.abs().max()
        assert_close(gx.double() * scale, gr * scale, torch.float32, f"grad ({pseudo}, slice_dim={slice_dim})")
