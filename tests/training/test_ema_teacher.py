"""EMATeacher: warm-up decay, the EMA of parameters and copy of buffers, one fused op call per
update, checkpoints, bad input, and the docstring example."""
from __future__ import annotations

import doctest
import io

import pytest
import torch
from torch import nn

import pyseg_noise.training.ema as ema_module
from pyseg_noise.training import EMATeacher


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, 1))


def train_step(net, opt, seed):
    g = torch.Generator().manual_seed(seed)
    loss = net(torch.randn(2, 1, 6, 6, 6, generator=g)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_warm_up_decay_values():
    ema = EMATeacher(small_net(), gamma=0.99)
    assert ema.decay(0) == 0.0
    assert ema.decay(1) == 0.5
    assert ema.decay(10) == pytest.approx(10 / 11, abs=1e-15)
    assert ema.decay(1000) == 0.99  # min(1 - 1/1001, 0.99)
    assert ema.decay(98) == pytest.approx(1 - 1 / 99) and ema.decay(99) == pytest.approx(0.99)
    assert EMATeacher(small_net(), gamma=0.5).decay(10) == 0.5


def test_teacher_is_a_frozen_copy():
    student = small_net()
    ema = EMATeacher(student)
    for (n, t), (_, s) in zip(ema.teacher.named_parameters(), student.named_parameters()):
        assert not t.requires_grad and s.requires_grad, n
        assert t.data_ptr() != s.data_ptr() and torch.equal(t, s)


def test_update_is_the_ema_of_parameters_and_copies_buffers():
    student = small_net()
    ema = EMATeacher(student, gamma=0.9)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    for step in range(4):
        before = {n: p.clone() for n, p in ema.teacher.named_parameters()}
        train_step(student, opt, seed=step)
        decay = ema.update(student, step)
        assert decay == ema.decay(step) and ema.step == step
        for (n, t), (_, s) in zip(ema.teacher.named_parameters(), student.named_parameters()):
            expected = decay * before[n] + (1 - decay) * s.detach()
            torch.testing.assert_close(t, expected, rtol=1e-6, atol=1e-7, msg=n)
        for (n, t), (_, s) in zip(ema.teacher.named_buffers(), student.named_buffers()):
            assert torch.equal(t, s), n  # BatchNorm running stats and counter, copied
    # step 0 used decay 0: right after it the teacher equalled the student; later it lags behind
    assert not torch.equal(ema.teacher[0].weight, student[0].weight)
    assert int(ema.teacher[1].num_batches_tracked) == 4


def test_update_makes_one_fused_call_for_all_float_parameters(monkeypatch):
    calls = []
    real = ema_module.ema_update_

    def spy(ema_tensors, tensors, decay, **kw):
        calls.append((len(ema_tensors), decay.dim(), float(decay)))
        return real(ema_tensors, tensors, decay, **kw)

    monkeypatch.setattr(ema_module, "ema_update_", spy)
    student = small_net()
    ema = EMATeacher(student)
    ema.update(student, 0)
    ema.update(student, 5)
    n_params = len(list(student.parameters()))
    assert calls == [(n_params, 0, 0.0), (n_params, 0, pytest.approx(5 / 6))]


def test_state_dict_round_trip():
    student = small_net(0)
    ema = EMATeacher(student, gamma=0.95)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    for step in range(3):
        train_step(student, opt, seed=step)
        ema.update(student, step)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    restored = EMATeacher(small_net(1), gamma=0.5)  # other weights, other gamma
    restored.load_state_dict(torch.load(buf))
    assert restored.gamma == 0.95 and restored.step == 2
    for (n, a), (_, b) in zip(ema.teacher.state_dict().items(), restored.teacher.state_dict().items()):
        assert torch.equal(a, b), n
    # both continue identically
    ema.update(student, 3)
    restored.update(student, 3)
    for (n, a), (_, b) in zip(ema.teacher.state_dict().items(), restored.teacher.state_dict().items()):
        assert torch.equal(a, b), n


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match=r"student must be an nn.Module, got Tensor"):
        EMATeacher(torch.zeros(3))
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\], got 1.5"):
        EMATeacher(small_net(), gamma=1.5)
    with pytest.raises(TypeError, match=r"gamma must be a float in \[0, 1\], got str"):
        EMATeacher(small_net(), gamma="0.99")
    ema = EMATeacher(small_net())
    with pytest.raises(ValueError, match=r"step must be >= 0, got -1"):
        ema.update(small_net(), -1)
    with pytest.raises(TypeError, match=r"step must be an int"):
        ema.update(small_net(), 1.5)
    other = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4))
    with pytest.raises(ValueError, match=r"the student has 4 parameters but the teacher has 6"):
        ema.update(other, 1)
    renamed = nn.Sequential()
    renamed.add_module("conv", nn.Conv3d(1, 4, 3, padding=1))
    for k, m in list(small_net().named_children())[1:]:
        renamed.add_module(k, m)
    with pytest.raises(ValueError, match=r"parameters 0 is 'conv.weight' in the student but '0.weight' in the teacher"):
        ema.update(renamed, 1)
    wide = nn.Sequential(nn.Conv3d(1, 5, 3, padding=1), nn.BatchNorm3d(5), nn.ReLU(), nn.Conv3d(5, 2, 1))
    with pytest.raises(ValueError, match=r"ema_tensors\[0\] has shape \(4, 1, 3, 3, 3\) but tensors\[0\] has shape \(5, 1, 3, 3, 3\)"):
        ema.update(wide, 1)
    with pytest.raises(KeyError, match=r"lacks \['gamma', 'step'\]"):
        ema.load_state_dict({"teacher": ema.teacher.state_dict()})


def test_docstring_example_runs():
    result = doctest.testmod(ema_module)
    assert result.attempted >= 5 and result.failed == 0
