"""Triton multi-tensor EMA (SPEC 7) against the eager reference."""
from __future__ import annotations

import pytest
import torch

import pyseg_noise.kernels as K
from pyseg_noise.ops import reference as ref
from tests.kernels.cases import DEVICE, requires_compiled_gpu, requires_kernels, tolerances

pytestmark = requires_kernels


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(DEVICE)


def _expected(emas, tensors, decay: float):
    """float64 reference on the ema values and the tensors rounded to each ema's dtype (as the kernel does)."""
    out = [e.double().cpu().clone() for e in emas]
    ref.ema_update_(out, [t.to(e.dtype).double().cpu() for e, t in zip(emas, tensors)],
                    torch.tensor(decay, dtype=torch.float64))
    return out


def _check(emas, expected, decay_dtype=torch.float32):
    for e, want in zip(emas, expected):
        rtol, atol = tolerances(e.dtype)
        if e.dtype == torch.float64 and decay_dtype == torch.float32:
            rtol, atol = 1e-6, 1e-7  # decay itself is an fp32 value
        torch.testing.assert_close(e.double().cpu(), want, rtol=rtol, atol=atol)


def test_mixed_dtypes_sizes_and_layouts_in_one_call():
    shapes_dtypes = [
        ((9000,), torch.float32),  # several programs of one tensor
        ((3, 7), torch.float16),
        ((1,), torch.bfloat16),
        ((4, 5, 6), torch.float64),
        ((5000,), torch.float16),
        ((17, 3), torch.float32),
    ]
    emas = [_rand(s, d, i) for i, (s, d) in enumerate(shapes_dtypes)]
    emas.append(_rand((9, 4), torch.float32, 50).t())  # dense but permuted: updated in place
    emas.append(_rand((6, 8), torch.float32, 51)[:, ::2])  # not dense: through a copy written back
    tensors = [_rand(e.shape, torch.float32, 100 + i) for i, e in enumerate(emas)]
    tensors[2] = _rand((1,), torch.float64, 200)  # fp64 source into a bf16 ema
    tensors[3] = _rand((4, 5, 6), torch.bfloat16, 201)  # bf16 source into an fp64 ema
    tensors[1] = _rand((7, 3), torch.float32, 202).t()  # source layout differs from its ema
    ids = [e.data_ptr() for e in emas]
    sources = [t.clone() for t in tensors]
    expected = _expected(emas, tensors, 0.9)
    assert K.IMPLS["ema_update_"](emas, tensors, torch.tensor(0.9, device=DEVICE)) is None
    _check(emas, expected)
    assert [e.data_ptr() for e in emas] == ids  # in place
    for s, t in zip(sources, tensors):
        assert torch.equal(s, t)


def test_changing_decay_and_cached_tables():
    from pyseg_noise.kernels import ema as ema_module

    emas = [_rand((300,), torch.float32, 1), _rand((2, 3), torch.float16, 2)]
    tensors = [_rand((300,), torch.float32, 3), _rand((2, 3), torch.float16, 4)]
    for step, decay in enumerate([0.5, 0.99, 0.0, 1.0]):
        expected = _expected(emas, tensors, decay)
        K.IMPLS["ema_update_"](emas, tensors, torch.tensor(decay, dtype=torch.float64, device=DEVICE))
        _check(emas, expected, torch.float64)
        if step == 0:
            n_tables = len(ema_module._TABLES)
    assert len(ema_module._TABLES) == n_tables  # same tensors: the device tables are reused
    # decay = 0 copies the tensors (rounded to the ema's dtype); decay = 1 then keeps them
    assert torch.equal(emas[0], tensors[0]) and torch.equal(emas[1], tensors[1])


def test_empty_list_and_empty_tensor():
    K.IMPLS["ema_update_"]([], [], torch.tensor(0.5, device=DEVICE))
    e, t = torch.ones(0, device=DEVICE), torch.ones(0, device=DEVICE)
    x, y = torch.ones(3, device=DEVICE), torch.zeros(3, device=DEVICE)
    K.IMPLS["ema_update_"]([e, x], [t, y], torch.tensor(0.25, device=DEVICE))
    assert torch.equal(x.cpu(), torch.full((3,), 0.25))


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    from pyseg_noise.kernels import launch

    monkeypatch.setattr(launch, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.IMPLS["ema_update_"]([torch.ones(2)], [torch.ones(2)], torch.tensor(0.5))


@requires_compiled_gpu
def test_new_decay_value_does_not_recompile():
    from pyseg_noise.kernels.ema import ema_update_kernel

    emas, tensors = [_rand((1000,), torch.float32, 5)], [_rand((1000,), torch.float32, 6)]
    K.IMPLS["ema_update_"](emas, tensors, torch.tensor(0.9, device=DEVICE))
    n = sum(len(c[0]) for c in ema_update_kernel.device_caches.values())
    for decay in (0.91, 0.95, 0.999):
        K.IMPLS["ema_update_"](emas, tensors, torch.tensor(decay, device=DEVICE))
    assert sum(len(c[0]) for c in ema_update_kernel.device_caches.values()) == n
