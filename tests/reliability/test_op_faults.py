"""Adversarial inputs through the public op API, and a leak check."""
from __future__ import annotations

import gc
import re
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


@pytest.mark.slow  # 1100 calls of every PINT op: ~30 s here
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


# ------------------------------------------------------------------ sizes, empty axes, devices of every op
def _expanded(shape, dtype=torch.float32):
    """A tensor of ``shape`` that occupies one element (stride 0 everywhere)."""
    return torch.zeros((1,) * len(shape), dtype=dtype).expand(shape)


def _op_calls(shape):
    """(op name, argument named in the error, call) for every op, on expanded inputs of ``shape`` [B, C, *S]."""
    x = _expanded(shape)
    t = _expanded((shape[0],) + tuple(shape[2:]), torch.long)
    a = _expanded((shape[0],) + tuple(shape[2:]))
    e = _expanded((shape[0],) + tuple(shape[2:]), torch.float64)  # no C axis: 8-byte elements overflow too
    return [
        ("pint_pixel_loss", "logits", lambda be: ops.pint_pixel_loss(x, t, x, backend=be)),
        ("pint_image_loss", "logits", lambda be: ops.pint_image_loss(x, t, x, backend=be)),
        ("teacher_uncertainty", "teacher_logits", lambda be: ops.teacher_uncertainty(x[None], backend=be)),
        ("TeacherUncertaintyAccumulator.add", "logits",
         lambda be: ops.TeacherUncertaintyAccumulator(backend=be).add(x)),
        ("slice_uncertainty", "entropy", lambda be: ops.slice_uncertainty(e, backend=be)),
        ("loss_attention", "logits_a", lambda be: ops.loss_attention(x, x, backend=be)),
        ("attended_cross_entropy", "logits", lambda be: ops.attended_cross_entropy(x, t, a, backend=be)),
        ("tsman_loss", "logits_a", lambda be: ops.tsman_loss(x, x, t, backend=be)),
    ]


# 2**61 elements x 4 bytes = 2**63 bytes: one more than a 64-bit size holds
OVERFLOW_SHAPE = (2**15, 2, 2**15, 2**15, 2**15)
# 2**39 elements (2 TiB in float32): representable, but more than this machine's memory
HUGE_SHAPE = (2**10, 2, 2**10, 2**10, 2**8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(_op_calls((1, 2, 1, 1, 1)))))
def test_overflow_sized_shapes_are_refused_before_allocation(backend, case):
    """Expanded inputs describe results that cannot exist: a ValueError naming the argument, not an allocator error."""
    from pyseg_noise.ops.checks import _host_memory_bytes

    op, name, call = _op_calls(OVERFLOW_SHAPE)[case]
    with pytest.raises(ValueError, match=rf"^{re.escape(op)}: {name} of shape .* is too large: .* overflow a 64-bit "
                                         r"size; refused before allocating"):
        call(backend)
    if _host_memory_bytes() and _host_memory_bytes() < 2**39 * 4:
        op, name, call = _op_calls(HUGE_SHAPE)[case]
        with pytest.raises(ValueError, match=rf"^{re.escape(op)}: {name} of shape .* is too large: its results need "
                                             r"\d+\.\d GiB .* but device 'cpu' has"):
            call(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expanded_inputs_that_fit_are_accepted(backend):
    """The size check refuses only what cannot be allocated: eight expanded teacher passes of one pass work."""
    x = torch.randn(2, 3, 4, 5, 6)
    prob, entropy = ops.teacher_uncertainty(x[None].expand(8, *x.shape), backend=backend)
    torch.testing.assert_close(prob, torch.softmax(x, 1))
    assert entropy.shape == (2, 4, 5, 6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_sized_dimensions_of_the_other_ops(backend):
    z = torch.zeros(2, 3, 4, 0, 5)
    tz = torch.zeros(2, 4, 0, 5, dtype=torch.long)
    az = torch.zeros(2, 4, 0, 5)
    for call, name in [
        (lambda: ops.loss_attention(z, z, backend=backend), "loss_attention: logits_a is empty"),
        (lambda: ops.attended_cross_entropy(z, tz, az, backend=backend), "attended_cross_entropy: logits is empty"),
        (lambda: ops.tsman_loss(z, z, tz, backend=backend), "tsman_loss: logits_a is empty"),
        (lambda: ops.slice_uncertainty(az, backend=backend), "slice_uncertainty: entropy is empty"),
        (lambda: ops.TeacherUncertaintyAccumulator(backend=backend).add(z),
         "TeacherUncertaintyAccumulator.add: logits is empty"),
        (lambda: ops.pint_image_loss(z, tz, z, backend=backend), "pint_image_loss: logits is empty"),
    ]:
        with pytest.raises(ValueError, match=re.escape(name)):
            call()
    # an EMA over empty parameters is well defined: nothing to update, no error
    ema, src = [torch.zeros(0), torch.ones(3)], [torch.zeros(0), torch.zeros(3)]
    ops.ema_update_(ema, src, 0.5, backend=backend)
    assert ema[0].shape == (0,) and torch.equal(ema[1], torch.full((3,), 0.5))


def test_tensors_on_the_wrong_device_for_every_op():
    """A 'meta' tensor (shape only, no data) mixed with CPU tensors: a ValueError naming it, in any position."""
    x, t, p = _inputs()
    a = torch.rand(t.shape)
    meta = lambda v: v.to("meta")  # noqa: E731
    cases = [
        (lambda: ops.pint_pixel_loss(x, t, meta(p)), "pint_pixel_loss: teacher_prob is on 'meta' but logits is on 'cpu'"),
        (lambda: ops.pint_image_loss(meta(x), t, p), "pint_image_loss: target is on 'cpu' but logits is on 'meta'"),
        (lambda: ops.loss_attention(x, meta(x)), "loss_attention: logits_b is on 'meta' but logits_a is on 'cpu'"),
        (lambda: ops.attended_cross_entropy(x, t, meta(a)),
         "attended_cross_entropy: attention is on 'meta' but logits is on 'cpu'"),
        (lambda: ops.attended_cross_entropy(x, meta(t), a),
         "attended_cross_entropy: target is on 'meta' but logits is on 'cpu'"),
        (lambda: ops.tsman_loss(x, x, meta(t)), "tsman_loss: target is on 'meta' but logits_a is on 'cpu'"),
        (lambda: ops.ema_update_([torch.zeros(3), torch.zeros(2)], [torch.zeros(3), meta(torch.zeros(2))], 0.9),
         "ema_update_: tensors[1] is on 'meta' but ema_tensors[1] is on 'cpu'"),
        (lambda: ops.ema_update_([torch.zeros(3), meta(torch.zeros(2))], [torch.zeros(3), meta(torch.zeros(2))], 0.9),
         "ema_update_: ema_tensors[1] is on 'meta' but ema_tensors[0] is on 'cpu'"),
        (lambda: ops.ema_update_([torch.zeros(3)], [torch.zeros(3)], meta(torch.tensor(0.9))),
         "ema_update_: decay is on 'meta'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    acc = ops.TeacherUncertaintyAccumulator()
    acc.add(x)
    with pytest.raises(ValueError, match=r"must match the first pass's shape \(2, 3, 5, 6, 7\) on cpu, got .* on meta"):
        acc.add(meta(x))
    assert acc.count == 1  # the refused pass was not counted


# ------------------------------------------------------------------ NaN / Inf behaviour of the other ops
def _bad_voxels(x):
    """NaN in one logit and +Inf in another; returns the damaged copy and the [B, *S] mask of those voxels."""
    bad = x.clone()
    bad[0, 1, 2, 3, 4] = float("nan")
    bad[1, 0, 0, 0, 0] = float("inf")
    mask = torch.zeros((x.shape[0],) + x.shape[2:], dtype=torch.bool)
    mask[0, 2, 3, 4] = mask[1, 0, 0, 0] = True
    return bad, mask


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_in_the_teacher_and_tsman_ops(backend):
    """Documented behaviour: NaN/Inf logits make exactly the voxels they touch NaN (values and gradients);
    the loss attention is a finite weight in [0, 1]; never a crash or hang."""
    x, t, _ = _inputs()
    bad, mask = _bad_voxels(x)
    prob, entropy = ops.teacher_uncertainty(torch.stack([bad, x]), backend=backend)
    assert torch.isnan(prob.movedim(1, -1)[mask]).all() and torch.isfinite(prob.movedim(1, -1)[~mask]).all()
    assert torch.isnan(entropy[mask]).all() and torch.isfinite(entropy[~mask]).all()  # not hidden as 0 log 0
    acc = ops.TeacherUncertaintyAccumulator(backend=backend)
    acc.add(bad)
    acc.add(x)
    streamed = acc.compute()
    torch.testing.assert_close(streamed[0], prob, equal_nan=True)
    torch.testing.assert_close(streamed[1], entropy, equal_nan=True)
    per_slice = ops.slice_uncertainty(entropy, backend=backend)  # slices along the last axis: 4 and 0
    assert torch.isnan(per_slice[0, 4]) and torch.isnan(per_slice[1, 0])
    assert int(torch.isnan(per_slice).sum()) == 2

    attention = ops.loss_attention(bad, x, backend=backend)
    assert torch.isfinite(attention).all() and attention.min() >= 0 and attention.max() <= 1

    z = bad.clone().requires_grad_()
    ops.pint_pixel_loss(z, t, prob.nan_to_num(0.5), reduction="none", backend=backend).sum().backward()
    assert torch.equal(torch.isnan(z.grad).any(1), mask)
    z = bad.clone().requires_grad_()
    image = ops.pint_image_loss(z, t, prob.nan_to_num(0.5), reduction="none", backend=backend)
    assert torch.isnan(image[0, 4]) and torch.isnan(image[1, 0]) and int(torch.isnan(image).sum()) == 2
    image.sum().backward()
    assert torch.equal(torch.isnan(z.grad).any(1), mask)

    weights = torch.rand(t.shape, generator=torch.Generator().manual_seed(1))
    for loss_of in (lambda z: ops.attended_cross_entropy(z, t, weights, reduction="none", backend=backend),
                    lambda z: ops.tsman_loss(z, x, t, reduction="none", backend=backend)):
        z = bad.clone().requires_grad_()
        loss = loss_of(z)
        assert torch.isnan(loss[mask]).all() and torch.isfinite(loss[~mask]).all()
        loss.sum().backward()
        assert torch.equal(torch.isnan(z.grad).any(1), mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_in_ema_update(backend):
    ema = [torch.zeros(4)]
    ops.ema_update_(ema, [torch.tensor([1.0, float("nan"), float("inf"), 2.0])], 0.5, backend=backend)
    assert ema[0][0] == 0.5 and ema[0][3] == 1.0 and torch.isnan(ema[0][1])
    assert not torch.isfinite(ema[0][2])  # inf, or NaN as torch.lerp's weight >= 0.5 branch gives


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_teacher_probabilities_are_refused(backend):
    x, t, p = _inputs()
    p = p.clone()
    p[1, 2, 3, 4, 5] = float("nan")
    for op in (ops.pint_pixel_loss, ops.pint_image_loss):
        with pytest.raises(ValueError, match="teacher_prob contains NaN"):
            op(x, t, p, backend=backend)
