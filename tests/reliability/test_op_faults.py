"""Adversarial inputs through the public op API, and a leak check."""
from __future__ import annotations

import gc
import resource

import pytest
import torch

from pyseg_noise import ops
from tests.ops.op_cases import BACKENDS


def _inputs(C=3, S=(5, 6, 7), B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, C, *S), generator=g)
    t = torch.randint(0, C, (B, *S), generator=g)
    p = torch.softmax(torch.randn((B, C, *S), generator=g), 1)
    return x, t, p


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_logits_propagate(backend):
    """Documented behaviour: NaN/Inf in logits give NaN losses and gradients, never a crash or hang."""
    x, t, p = _inputs()
    x[0, 1, 2, 3, 4] = float("nan")
    x[1, 0, 0, 0, 0] = float("inf")
    xg = x.clone().requires_grad_()
    loss = ops.pint_pixel_loss(xg, t, p, reduction="none", backend=backend)
    assert torch.isnan(loss[0, 2, 3, 4])
    assert torch.isnan(loss[1, 0, 0, 0])
    finite = torch.ones_like(loss, dtype=torch.bool)
    finite[0, 2, 3, 4] = finite[1, 0, 0, 0] = False
    assert torch.isfinite(loss[finite]).all()  # the other voxels are untouched
    loss.sum().backward()
    assert torch.isnan(xg.grad[0, :, 2, 3, 4]).all()
    assert torch.isnan(ops.pint_image_loss(x, t, p, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("position", [(0, 0, 0, 0), (1, 4, 5, 6), (1, 2, 3, 1)])
def test_label_out_of_range_in_any_position(backend, position):
    x, t, p = _inputs()
    t[position] = 99
    with pytest.raises(ValueError, match="target has value 99 but logits have C=3"):
        ops.pint_pixel_loss(x, t, p, backend=backend)
    t[position] = -5
    with pytest.raises(ValueError, match="target has value -5"):
        ops.pint_image_loss(x, t, p, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_sized_dimensions_are_refused(backend):
    for shape in [(0, 3, 4, 4, 4), (2, 3, 0, 4, 4), (2, 3, 4, 4, 0)]:
        x = torch.zeros(shape)
        t = torch.zeros((shape[0],) + shape[2:], dtype=torch.long)
        with pytest.raises(ValueError, match="logits is empty"):
            ops.pint_pixel_loss(x, t, torch.zeros(shape), backend=backend)
    with pytest.raises(ValueError, match="teacher_logits is empty"):
        ops.teacher_uncertainty(torch.zeros(0, 2, 3, 4, 4), backend=backend)


def test_tensors_on_the_wrong_device():
    x, t, p = _inputs()
    with pytest.raises(ValueError, match="is on 'meta' but logits is on 'cpu'"):
        ops.pint_pixel_loss(x, t.to("meta"), p)
    if "cpu" in BACKENDS:
        with pytest.raises(RuntimeError, match="backend='cpu' needs CPU tensors"):
            ops.pint_pixel_loss(x.to("meta"), t.to("meta"), p.to("meta"), backend="cpu")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_thousand_calls_do_not_grow_memory():
    x, t, p = _inputs(S=(16, 16, 8))
    tl = torch.randn(3, *x.shape)

    def run_all():
        xg = x.clone().requires_grad_()
        (ops.pint_pixel_loss(xg, t, p) + ops.pint_image_loss(xg, t, p)).backward()
        prob, u = ops.teacher_uncertainty(tl)
        ops.slice_uncertainty(u)
        acc = ops.TeacherUncertaintyAccumulator()
        acc.add(x)
        acc.compute()

    for _ in range(100):  # warm up allocator caches
        run_all()
    gc.collect()
    before = _rss_mb()
    for _ in range(1000):
        run_all()
    gc.collect()
    grown = _rss_mb() - before
    assert grown < 20, f"RSS grew by {grown:.1f} MB over 1000 calls of each op"
