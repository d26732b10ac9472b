"""ema_update_ (SPEC 7): in place, multi-tensor, mixed dtypes and sizes, against
torch._foreach_lerp_ and the reference; refusals; opcheck; no recompilation for a changing decay."""
from __future__ import annotations

import pytest
import torch

from pyseg_noise import ops
from pyseg_noise.ops import reference
from tests.ops.op_cases import (BACKEND_PARAMS, BACKENDS, DTYPES, assert_close, device_for, skip_unsupported,
                                tolerances)

# A model-like list: scalars, biases, conv weights, one tensor spanning several CPU chunks.
SIZES = [(), (3,), (17, 5), (2, 3, 4, 5), (16, 8, 3, 3, 3), (70001,)]
DECAYS = [0.0, 0.3, 0.99, 0.7, 1.0]  # 0.3: lerp weight >= 0.5, the other form of ATen's lerp


def assert_ema_close(backend, actual, expected, dtype, what):
    """The kernels compute in fp32 and round once; the eager reference does its three half/bfloat16
    operations in that dtype, rounding each time, so it gets twice the tolerance."""
    if backend != "reference" or dtype in (torch.float32, torch.float64):
        return assert_close(actual, expected, dtype, what)
    rtol, atol = tolerances(dtype)
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=2 * rtol, atol=2 * atol)


def make_lists(sizes, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    ema = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device) for s in sizes]
    src = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device) for s in sizes]
    return ema, src


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_matches_foreach_lerp_in_place(backend, dtype):
    skip_unsupported(backend, dtype)
    device = device_for(backend)
    for k, decay in enumerate(DECAYS):
        ema, src = make_lists(SIZES, dtype, device, seed=k)
        expected = [e.clone() for e in ema]
        torch._foreach_lerp_(expected, src, 1.0 - decay)
        ptrs = [e.data_ptr() for e in ema]
        # a float64 0-d decay here, a Python float below
        ops.ema_update_(ema, src, torch.tensor(decay, dtype=torch.float64), backend=backend)
        assert [e.data_ptr() for e in ema] == ptrs  # updated where they lie
        for i, (e, x) in enumerate(zip(ema, expected)):
            assert e.dtype == dtype and e.shape == SIZES[i]
            assert_ema_close(backend, e, x, dtype, f"ema[{i}] at decay {decay}")
        # and the float64 reference of SPEC 7
        ema2, src2 = make_lists(SIZES, dtype, device, seed=k)
        ops.ema_update_(ema2, src2, decay, backend=backend)
        ref, ref_src = make_lists(SIZES, torch.float64, "cpu", seed=k)
        ref = [r.to(dtype).double() for r in ref]
        reference.ema_update_(ref, [s.to(dtype).double() for s in ref_src], decay)
        for i, (e, r) in enumerate(zip(ema2, ref)):
            assert_ema_close(backend, e, r, dtype, f"ema[{i}] vs reference at decay {decay}")


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_cpu_is_bitwise_foreach_lerp_for_float32():
    ema, src = make_lists(SIZES, torch.float32, "cpu", seed=9)
    expected = [e.clone() for e in ema]
    torch._foreach_lerp_(expected, src, 1.0 - 0.99)
    ops.ema_update_(ema, src, torch.tensor(0.99, dtype=torch.float64), backend="cpu")
    for e, x in zip(ema, expected):
        # same formula, same float weight; only FMA contraction may differ (1 ulp)
        torch.testing.assert_close(e, x, rtol=1.2e-7, atol=1e-7)


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_threads_split_the_list_anywhere(threads):
    # The C++ op lays all tensors end to end and splits that index space between threads:
    # the split points fall inside tensors, at their ends and between small ones.
    g = torch.Generator().manual_seed(21)
    sizes = [int(v) for v in torch.randint(1, 90_000, (40,), generator=g)] + [1, 32_768, 32_769, 5, 65_536]
    ema, src = make_lists(sizes, torch.float32, "cpu", seed=22)
    expected = [e.clone() for e in ema]
    torch._foreach_lerp_(expected, src, 1.0 - 0.9)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ops.ema_update_(ema, src, 0.9, backend="cpu")
    finally:
        torch.set_num_threads(old)
    for i, (e, x) in enumerate(zip(ema, expected)):
        torch.testing.assert_close(e, x, rtol=1.2e-7, atol=1e-7, msg=lambda m: f"tensor {i}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_sizes_and_layouts_in_one_call(backend):
    device = device_for(backend)
    g = torch.Generator().manual_seed(3)
    pairs = [  # (ema dtype, source dtype, shape)
        (torch.float32, torch.float32, (33, 7)),
        (torch.float16, torch.float16, (5,)),
        (torch.float64, torch.float64, (4, 4, 4)),
        (torch.float32, torch.float16, (9, 9)),  # an fp32 EMA of a half-precision model
        (torch.float32, torch.float64, (40000,)),
        (torch.float16, torch.float32, (6, 2)),
        (torch.float64, torch.float32, ()),
    ]
    if backend != "triton" or torch.cuda.is_available():
        pairs += [(torch.bfloat16, torch.bfloat16, (3, 70)), (torch.float32, torch.bfloat16, (11,))]
    ema = [torch.randn(s, generator=g, dtype=torch.float64).to(ed).to(device) for ed, _, s in pairs]
    src = [torch.randn(s, generator=g, dtype=torch.float64).to(sd).to(device) for _, sd, s in pairs]
    # strided ema and source: a transposed view and every other element
    ema[0] = ema[0].t()
    src[0] = src[0].t().contiguous()
    big = torch.randn(80000, generator=g, dtype=torch.float64).to(device)
    src[4] = big[::2]
    expected = []
    for e, s in zip(ema, src):
        r = e.double().clone()
        reference.ema_update_([r], [s.to(e.dtype).double()], 0.9)
        expected.append(r)
    ema0_storage = ema[0].data_ptr()
    ops.ema_update_(ema, src, 0.9, backend=backend)
    assert ema[0].data_ptr() == ema0_storage and not ema[0].is_contiguous()
    for i, (e, r) in enumerate(zip(ema, expected)):
        assert e.dtype == pairs[i][0]
        assert_ema_close(backend, e, r, e.dtype, f"pair {i} {pairs[i][:2]}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_dense_ema_is_written_back(backend):
    device = device_for(backend)
    base = torch.zeros(6, 8, dtype=torch.float32, device=device)
    view = base[:, ::2]  # not dense: updated through a contiguous copy, then written back
    src = torch.ones(6, 4, dtype=torch.float32, device=device)
    ops.ema_update_([view], [src], 0.75, backend=backend)
    torch.testing.assert_close(base[:, ::2], torch.full((6, 4), 0.25, device=device))
    assert base[:, 1::2].abs().max().item() == 0.0  # the elements between are untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_refusals_name_the_first_mismatch(backend):
    device = device_for(backend)
    ema = [torch.zeros(3, device=device), torch.zeros(2, 5, device=device), torch.zeros(4, device=device)]
    src = [torch.ones(3, device=device), torch.ones(2, 5, device=device), torch.ones(4, device=device)]
    bad = src[:1] + [torch.ones(5, 2, device=device), torch.ones(7, device=device)]
    with pytest.raises(ValueError, match=r"ema_tensors\[1\] has shape \(2, 5\) but tensors\[1\] has shape \(5, 2\)"):
        ops.ema_update_(ema, bad, 0.5, backend=backend)
    with pytest.raises(ValueError, match=r"ema_tensors has 3 tensors but tensors has 2"):
        ops.ema_update_(ema, src[:2], 0.5, backend=backend)
    with pytest.raises(TypeError, match=r"ema_tensors\[2\] must be floating point .* got torch.int64"):
        ops.ema_update_(ema[:2] + [torch.zeros(4, dtype=torch.long, device=device)], src, 0.5, backend=backend)
    with pytest.raises(TypeError, match=r"tensors\[0\] must be floating point, got torch.int32"):
        ops.ema_update_(ema, [src[0].int()] + src[1:], 0.5, backend=backend)
    with pytest.raises(TypeError, match=r"ema_tensors\[1\] must be a torch.Tensor, got list"):
        ops.ema_update_([ema[0], [1.0]], src[:2], 0.5, backend=backend)
    with pytest.raises(TypeError, match=r"ema_tensors must be a list or tuple of tensors, got Tensor"):
        ops.ema_update_(ema[0], src[0], 0.5, backend=backend)
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\], got 1.5"):
        ops.ema_update_(ema, src, 1.5, backend=backend)
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\], got -0.25"):
        ops.ema_update_(ema, src, torch.tensor(-0.25), backend=backend)
    with pytest.raises(ValueError, match=r"decay must be a float or a 0-d tensor, got a tensor of shape \(2,\)"):
        ops.ema_update_(ema, src, torch.tensor([0.5, 0.5]), backend=backend)
    with pytest.raises(TypeError, match=r"decay must be a floating point tensor"):
        ops.ema_update_(ema, src, torch.tensor(1), backend=backend)
    with pytest.raises(TypeError, match=r"decay must be a float or a 0-d tensor, got str"):
        ops.ema_update_(ema, src, "0.99", backend=backend)
    with pytest.raises(ValueError, match=r"ema_tensors\[1\] is on 'meta'"):
        ops.ema_update_([ema[0], torch.zeros(2, 5, device="meta")], src[:2], 0.5, backend=backend)
    # nothing was changed by the refused calls
    assert all(e.abs().max().item() == 0.0 for e in ema)
    ops.ema_update_([], [], 0.5, backend=backend)  # an empty list is a no-op


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_direct_torch_ops_call_checks_in_cpp():
    P = torch.ops.pyseg_noise
    ema = [torch.zeros(3), torch.zeros(2, 5)]
    with pytest.raises(ValueError, match=r"ema_tensors\[1\] has shape \[2, 5\] but tensors\[1\] has shape \[10\]"):
        P.ema_update_(ema, [torch.ones(3), torch.ones(10)], torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"ema_tensors has 2 tensors but tensors has 1"):
        P.ema_update_(ema, [torch.ones(3)], torch.tensor(0.5))
    with pytest.raises(TypeError, match=r"ema_tensors\[0\] must be floating point"):
        P.ema_update_([torch.zeros(3, dtype=torch.long)], [torch.ones(3)], torch.tensor(0.5))
    with pytest.raises(TypeError, match=r"decay must be a floating point tensor"):
        P.ema_update_(ema, [torch.ones(3), torch.ones(2, 5)], torch.tensor(1))
    with pytest.raises(ValueError, match=r"decay must be a float or a 0-d tensor"):
        P.ema_update_(ema, [torch.ones(3), torch.ones(2, 5)], torch.ones(2))


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_opcheck():
    ema, src = make_lists([(3,), (4, 5), (2, 3, 3)], torch.float32, "cpu", seed=5)
    torch.library.opcheck(torch.ops.pyseg_noise.ema_update_.default, (ema, src, torch.tensor(0.9)))
    ema16, src32 = make_lists([(7,), (3, 3)], torch.float16, "cpu", seed=6)
    torch.library.opcheck(
        torch.ops.pyseg_noise.ema_update_.default, (ema16, [s.float() for s in src32], torch.tensor(0.5, dtype=torch.float64))
    )


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_changing_decay_does_not_recompile():
    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    def step(ema, src, decay):
        ops.ema_update_(ema, src, decay)

    compiled = torch.compile(step, fullgraph=True, backend=counting_backend)
    ema, src = make_lists([(5,), (3, 4)], torch.float32, "cpu", seed=7)
    ema_eager = [e.clone() for e in ema]
    decay = torch.zeros((), dtype=torch.float64)
    for t in range(5):
        decay.fill_(min(1.0 - 1.0 / (t + 1), 0.99))  # the warm-up schedule: a new value every step
        compiled(ema, src, decay)
        ops.ema_update_(ema_eager, src, decay)
    assert len(compiles) == 1
    for e, x in zip(ema, ema_eager):
        torch.testing.assert_close(e, x)
    # new 0-d tensors with other values do not recompile either
    compiled(ema, src, torch.tensor(0.5, dtype=torch.float64))
    assert len(compiles) == 1


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_inductor_fullgraph_matches_eager():
    ema, src = make_lists([(5,), (3, 4), (2, 3, 3)], torch.float32, "cpu", seed=8)
    ema_eager = [e.clone() for e in ema]
    compiled = torch.compile(lambda e, s, d: ops.ema_update_(e, s, d), fullgraph=True, backend="inductor")
    for d in (0.5, 0.9):
        compiled(ema, src, torch.tensor(d, dtype=torch.float64))
        ops.ema_update_(ema_eager, src, d)
    for e, x in zip(ema, ema_eager):
        torch.testing.assert_close(e, x)
