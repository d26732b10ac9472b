"""Label and NaN checks inside the Triton kernels' single pass (no clamp, no extra pass, one host read).

- Launched outside ``value_errors.collect()`` (checks off, ``torch.compile``, direct ``torch.ops``
  calls) a bad label gives NaN at its voxel and nowhere else.
- Inside it the kernels record the offending label / a NaN teacher probability in one int64 buffer.
- The public ops on the Triton backend raise from that buffer after a single host read, and make no
  other pass over their inputs (checked by recording every aten op of the call).
"""
from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pyseg_noise.kernels as K
import pyseg_noise.ops as ops
from pyseg_noise.kernels import value_errors
from pyseg_noise.ops import reference as ref
from tests.kernels.cases import DEVICE, Case, make_logits, make_prob, make_target, requires_kernels

pytestmark = requires_kernels

CASE = Case((2, 3, 5, 4, 3), torch.float32, "contiguous")
BAD_AT = ((0, 0, 0, 0), (1, 4, 3, 2))  # two voxels of [B, *S]


def _inputs(target_dtype=torch.int64, bad=(7, -5)):
    a, b = make_logits(CASE, 1), make_logits(CASE, 2)
    target = make_target(CASE, 3)
    teacher = make_prob(CASE, 4)
    good = target.clone()
    target = target.to(target_dtype)
    for where, value in zip(BAD_AT, bad):
        target[where] = value
    return a, b, target, good, teacher


def _nan_only_at(got, want, bad_mask):
    """got is NaN exactly where bad_mask is set and equals want elsewhere."""
    got, want = got.cpu(), want.cpu()
    assert torch.isnan(got[bad_mask]).all(), "a bad label's voxel is not NaN"
    assert not torch.isnan(got[~bad_mask]).any(), "NaN outside the bad voxels"
    torch.testing.assert_close(got[~bad_mask], want[~bad_mask], rtol=0, atol=0)


def _bad_mask():
    m = torch.zeros((CASE.shape[0], *CASE.shape[2:]), dtype=torch.bool)
    for where in BAD_AT:
        m[where] = True
    return m


@pytest.mark.parametrize("target_dtype,bad", [(torch.int64, (7, -5)), (torch.int32, (3, -1)),
                                              (torch.uint8, (200, 3)), (torch.int64, (2**32 + 1, 2**40))],
                         ids=["int64", "int32", "uint8", "int64-beyond-int32"])
def test_unchecked_bad_labels_give_nan_at_their_voxels(target_dtype, bad):
    a, b, target, good, teacher = _inputs(target_dtype, bad)
    mask = _bad_mask()
    m4 = mask.unsqueeze(1).expand(-1, CASE.shape[1], *CASE.shape[2:])
    for hard in (False, True):
        got = K.IMPLS["pint_pixel_loss"](a, target, teacher, hard, False, "none")
        _nan_only_at(got, K.IMPLS["pint_pixel_loss"](a, good, teacher, hard, False, "none"), mask)
        g = torch.ones_like(got)
        got = K.IMPLS["pint_pixel_loss_backward"](g, a, target, teacher, hard, False, "none")
        _nan_only_at(got, K.IMPLS["pint_pixel_loss_backward"](g, a, good, teacher, hard, False, "none"), m4)
    assert torch.isnan(K.IMPLS["pint_pixel_loss"](a, target, teacher, False, False, "mean"))
    loss, alpha = K.IMPLS["pint_image_loss"](a, target, teacher, False, False, -1, "none")
    slice_mask = mask.any(dim=(1, 2))  # slices along the last axis
    slice_mask = torch.zeros(loss.shape, dtype=torch.bool)
    for where in BAD_AT:
        slice_mask[where[0], where[-1]] = True
    want, alpha_good = K.IMPLS["pint_image_loss"](a, good, teacher, False, False, -1, "none")
    _nan_only_at(loss, want, slice_mask)
    g = torch.ones_like(loss)
    got = K.IMPLS["pint_image_loss_backward"](g, a, target, teacher, alpha_good, False, -1, "none")
    _nan_only_at(got, K.IMPLS["pint_image_loss_backward"](g, a, good, teacher, alpha_good, False, -1, "none"), m4)
    att = torch.rand(mask.shape, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    att[BAD_AT[0]] = 0.0  # NaN even where the attention is 0: a bad label is never silent
    got = K.IMPLS["attended_cross_entropy"](a, target, att, "none")
    _nan_only_at(got, K.IMPLS["attended_cross_entropy"](a, good, att, "none"), mask)
    g = torch.ones_like(got)
    got = K.IMPLS["attended_cross_entropy_backward"](g, a, target, att, "none")
    _nan_only_at(got, K.IMPLS["attended_cross_entropy_backward"](g, a, good, att, "none"), m4)
    loss, attention = K.IMPLS["tsman_loss"](a, b, target, 0.5, 3, 2, -1, "none")
    want, want_att = K.IMPLS["tsman_loss"](a, b, good, 0.5, 3, 2, -1, "none")
    assert torch.equal(attention, want_att)  # the attention does not read labels
    _nan_only_at(loss, want, mask)
    ga, gb = K.IMPLS["tsman_loss_backward"](torch.ones_like(loss), a, b, target, attention, "none")
    wa, wb = K.IMPLS["tsman_loss_backward"](torch.ones_like(loss), a, b, good, attention, "none")
    _nan_only_at(ga, wa, m4)
    _nan_only_at(gb, wb, m4)


@pytest.mark.parametrize("bad", [(7, -5), (-5, -2), (2**32 + 1, 1)])
def test_kernels_record_the_offending_label(bad):
    """One of the offending labels (programs race; each writes an offending value, never a valid one)."""
    a, b, target, good, teacher = _inputs(torch.int64, bad)
    calls = [
        lambda t: K.IMPLS["pint_pixel_loss"](a, t, teacher, False, False, "mean"),
        lambda t: K.IMPLS["pint_image_loss"](a, t, teacher, True, False, 0, "sum"),
        lambda t: K.IMPLS["attended_cross_entropy"](a, t, torch.ones_like(t, dtype=a.dtype), "none"),
        lambda t: K.IMPLS["tsman_loss"](a, b, t, 0.5, 3, 3, -1, "mean"),
    ]
    for call in calls:
        with value_errors.collect() as box:
            call(target)
        label, nan = box.read()
        assert label in bad and label not in (0, 1, 2) and not nan
        with value_errors.collect() as box:
            call(good)
        assert box.buffer is not None and box.read() == (0, False)
    nan_teacher = teacher.clone()
    nan_teacher[1, 2, 4, 3, 2] = float("nan")
    for op, extra in (("pint_pixel_loss", ()), ("pint_image_loss", (-1,))):
        with value_errors.collect() as box:
            K.IMPLS[op](a, good, nan_teacher, False, False, *extra, "mean")
        assert box.read() == (0, True)
    with value_errors.collect() as box:  # a NaN in a masked-off tail lane is never read
        K.IMPLS["pint_pixel_loss"](a, good, teacher, False, False, "none")
    assert box.read() == (0, False)


def test_public_ops_raise_after_one_pass_and_give_nan_when_checks_are_off():
    a, b, target, good, teacher = _inputs(torch.int64, (7, -5))
    att = torch.ones_like(good, dtype=a.dtype)
    for call in (
        lambda: ops.pint_pixel_loss(a, target, teacher, backend="triton"),
        lambda: ops.pint_image_loss(a, target, teacher, backend="triton"),
        lambda: ops.attended_cross_entropy(a, target, att, backend="triton"),
        lambda: ops.tsman_loss(a, b, target, backend="triton"),
    ):
        with pytest.raises(ValueError, match=r"target has value (7|-5) but logits have C=3 classes"):
            call()
        ops.set_value_checks(False)
        try:
            assert torch.isnan(call())
        finally:
            ops.set_value_checks(True)
    nan_teacher = teacher.clone()
    nan_teacher[0, 1, 2, 2, 2] = float("nan")
    for fn in (ops.pint_pixel_loss, ops.pint_image_loss):
        with pytest.raises(ValueError, match=r"teacher_prob contains NaN"):
            fn(a, good, nan_teacher, backend="triton")
    # a valid call matches the float64 reference (the checks change no number)
    got = ops.pint_pixel_loss(a, good, teacher, backend="triton")
    want = ref.pint_pixel_loss(a.double().cpu(), good.cpu(), teacher.double().cpu())
    torch.testing.assert_close(got.double().cpu(), want, rtol=2e-5, atol=2e-6)


# aten ops a Triton call may make: allocations, views, and the interpreter's own copies of kernel
# arguments between "device" and host (set_/copy_). Anything else (min/max/isnan/any/sum/...)
# would be an extra pass over the data.
_ALLOWED = {
    "aten.empty.memory_format", "aten.empty_strided.default", "aten.zeros.default", "aten.new_empty.default",
    "aten.detach.default", "aten.select.int", "aten.view.default", "aten.alias.default", "aten.lift_fresh.default",
    "aten.set_.source_Storage", "aten.set_.source_Storage_storage_offset", "aten.copy_.default",
    "aten.ones_like.default", "aten.fill_.Scalar",
}


class _Record(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads(monkeypatch):
    """Counts every read of a tensor's values by the host (item, tolist, bool/int/float)."""
    count = collections.Counter()
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            count[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


def test_triton_path_of_every_op_makes_no_extra_pass_and_at_most_one_host_read(host_reads):
    a, b, _, target, teacher = _inputs()
    stacked = torch.stack([a, b])
    entropy = torch.rand(target.shape, dtype=a.dtype).to(DEVICE)
    att = torch.rand(target.shape, dtype=a.dtype).to(DEVICE)
    ema, src = [torch.randn(300).to(DEVICE), torch.randn(5, 7).to(DEVICE)], [torch.randn(300).to(DEVICE)] * 0
    src = [torch.randn(300).to(DEVICE), torch.randn(5, 7).to(DEVICE)]
    decay = torch.tensor(0.9).to(DEVICE)
    acc = ops.TeacherUncertaintyAccumulator(backend="triton")
    calls = {
        "teacher_uncertainty": (lambda: ops.teacher_uncertainty(stacked, backend="triton"), 0),
        "softmax_accumulate_": (lambda: acc.add(a), 0),
        "prob_entropy": (lambda: acc.compute(), 0),
        "slice_uncertainty": (lambda: ops.slice_uncertainty(entropy, backend="triton"), 0),
        "pint_pixel_loss": (lambda: ops.pint_pixel_loss(a, target, teacher, backend="triton"), 1),
        "pint_image_loss": (lambda: ops.pint_image_loss(a, target, teacher, reduction="none", backend="triton"), 1),
        "loss_attention": (lambda: ops.loss_attention(a, b, spatial_dims=3, backend="triton"), 0),
        "attended_cross_entropy": (lambda: ops.attended_cross_entropy(a, target, att, backend="triton"), 1),
        "tsman_loss": (lambda: ops.tsman_loss(a, b, target, backend="triton"), 1),
        "ema_update_ (tensor decay, checks off)": (lambda: _ema_unchecked(ema, src, decay), 0),
        "ema_update_ (float decay)": (lambda: ops.ema_update_(ema, src, 0.9, backend="triton"), 0),
    }
    for name, (call, reads) in calls.items():
        host_reads.clear()
        with _Record() as rec:
            call()
        extra = {op: n for op, n in rec.ops.items() if op not in _ALLOWED}
        assert not extra, f"{name}: ops beyond the kernels: {extra}"
        assert sum(host_reads.values()) == reads, f"{name}: host reads {dict(host_reads)}, expected {reads}"
        assert rec.ops["aten._local_scalar_dense.default"] == 0


def _ema_unchecked(ema, src, decay):
    ops.set_value_checks(False)  # a tensor decay's range check reads it: the one read a user can turn off
    try:
        ops.ema_update_(ema, src, decay, backend="triton")
    finally:
        ops.set_value_checks(True)


def test_training_step_with_checks_reads_the_host_once(host_reads):
    """Forward (checked) + backward of pint_pixel_loss on the Triton path: one host read in all."""
    a, _, _, target, teacher = _inputs()
    x = a.clone().requires_grad_()
    with _Record() as rec:
        ops.pint_pixel_loss(x, target, teacher, backend="triton").backward()
    assert sum(host_reads.values()) == 1, dict(host_reads)
    extra = {op: n for op, n in rec.ops.items() if op not in _ALLOWED}
    assert not extra, extra
