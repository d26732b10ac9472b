"""Shared parametrization of the op tests: backends, dtypes, shapes, tolerances."""
from __future__ import annotations


import pytest
import torch

from pyseg_noise.ops.dispatch import HAS_CPU_EXTENSION, _triton_impls, triton_interpreter_enabled


def available_backends():
    backends = ["reference"]
    if HAS_CPU_EXTENSION:
        backends.append("cpu")
    if _triton_impls() and (torch.cuda.is_available() or triton_interpreter_enabled()):
        backends.append("triton")
    return backends


BACKENDS = available_backends()
#: Triton runs under its interpreter here (no GPU): correct but ~100x slower than compiled
TRITON_INTERPRETED = "triton" in BACKENDS and not torch.cuda.is_available()
#: the backends the matrix compares with the float64 reference, as parameters (the reference
#: against itself checks nothing). Interpreted Triton is in the slow tier; the fast tier still
#: runs the Triton kernels through tests/kernels.
KERNEL_BACKENDS = [
    pytest.param(b, marks=pytest.mark.slow) if b == "triton" and TRITON_INTERPRETED else b
    for b in BACKENDS if b != "reference"
]
#: every backend as parameters, for checks against something other than the reference
#: (``torch._foreach_lerp_``); interpreted Triton in the slow tier as above
BACKEND_PARAMS = ["reference", *KERNEL_BACKENDS]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# (B, C, *S): 2D and 3D, odd sizes, C from 2 to 8.
SHAPES = [
    (2, 2, 13, 11),
    (1, 5, 3, 41, 37),
    (2, 3, 7, 6, 5),
    (3, 8, 5, 4, 9),
    (1, 2, 17, 9, 3),
    (2, 4, 19, 23),
    (1, 6, 2, 3, 11),
]


#: the matrix's shape parameters. The fast tier runs four shapes (2D with C=2; 3D with C=3, 6
#: and 8; each slice_dim and both smoothing modes come up among them), every op x backend x
#: dtype x layout on each; the other three (the largest among them) are in the slow tier.
SHAPE_IDS = [pytest.param(i, marks=pytest.mark.slow) if i in (1, 4, 5) else i for i in range(len(SHAPES))]


def device_for(backend):
    if backend == "triton" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def tolerances(dtype, reduction="none"):
    """(rtol, atol) for a result in `dtype` compared with the float64 reference."""
    base = {
        torch.float64: (1e-9, 1e-10),
        torch.float32: (2e-5, 2e-6),
        torch.float16: (3e-3, 2e-3),
        torch.bfloat16: (2e-2, 1e-2),
    }[dtype]
    return base


def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values with every axis strided: every other element, along each axis, of a larger buffer.

    So no axis is dense and no pair of axes can be merged into one (a kernel that assumes a
    contiguous class, slice or batch axis reads the gaps' garbage).
    """
    big = torch.full(tuple(2 * n for n in x.shape), float("nan") if x.is_floating_point() else -1,
                     dtype=x.dtype, device=x.device)
    every_other = tuple(slice(None, None, 2) for _ in x.shape)
    big[every_other] = x
    out = big[every_other]
    assert torch.equal(out, x) and (x.numel() <= 1 or not out.is_contiguous())
    assert all(out.stride(d) == 2 * big.stride(d) for d in range(x.dim())), "every axis is strided"
    return out


def layout(x: torch.Tensor, contiguous: bool) -> torch.Tensor:
    return x if contiguous else noncontiguous(x)


def skip_unsupported(backend, dtype):
    if backend == "triton" and dtype == torch.bfloat16 and not torch.cuda.is_available():
        pytest.skip("bf16 under TRITON_INTERPRET is emulated through numpy float32 views; covered on GPU")


def assert_close(actual, expected, dtype, what):
    rtol, atol = tolerances(dtype)
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
