"""Shared inputs, layouts and tolerances of the Triton kernel tests.

Every test compares a launcher of ``pyseg_noise.kernels`` with the float64
eager reference (``pyseg_noise.ops.reference``) evaluated on float64 copies
of the very same (dtype-rounded) inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import pyseg_noise.kernels as K

CUDA = torch.cuda.is_available()


def _skip_reason():
    if not K.IMPLS:
        return f"Triton kernels unavailable: {K.TRITON_ERROR}"
    if not K.INTERPRETED and not CUDA:
        return ("pyseg_noise.kernels was imported without TRITON_INTERPRET=1 and there is no GPU; run "
                "`TRITON_INTERPRET=1 python -m pytest tests/kernels`")
    return None


SKIP_REASON = _skip_reason()
requires_kernels = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
requires_compiled_gpu = pytest.mark.skipif(
    not CUDA or K.INTERPRETED, reason="needs a CUDA GPU with compiled (not interpreted) Triton kernels")
DEVICE = torch.device("cuda" if CUDA and not K.INTERPRETED else "cpu")
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class Case:
    """One input configuration: logits shape [B, C, *S], dtype, memory layout, slice_dim."""

    shape: tuple
    dtype: torch.dtype
    layout: str  # "contiguous" | "permuted" (memory order reversed) | "sliced" (every other element)
    slice_dim: int = -1

    @property
    def id(self) -> str:
        return f"{'x'.join(map(str, self.shape))}-{str(self.dtype)[6:]}-{self.layout}-sd{self.slice_dim}"


# 2D and 3D, odd sizes, C from 2 to 8, every dtype, three layouts. Small: the interpreter is slow.
_CASES = [
    Case((1, 5, 3, 41, 37), torch.float64, "contiguous", -1),
    Case((2, 3, 7, 6, 5), torch.float64, "permuted", 0),
    Case((2, 2, 13, 11), torch.float32, "sliced"),
    Case((3, 8, 5, 4, 9), torch.float32, "contiguous", 1),
    Case((2, 4, 19, 23), torch.float16, "permuted"),
    Case((1, 6, 2, 3, 11), torch.bfloat16, "sliced", -1),
    Case((1, 2, 17, 9, 3), torch.float16, "contiguous", -3),
    Case((2, 7, 6, 5), torch.float32, "contiguous"),
]
CASE_IDS = [c.id for c in _CASES]
#: under the interpreter these four (the two float64 cases, C=8 and a second sliced one) take two
#: thirds of this folder's time: the slow tier there; the fast tier keeps the other four (2D and
#: 3D, float32/float16/bfloat16, every layout). With a GPU all eight are fast.
_SLOW_UNDER_INTERPRETER = (0, 1, 2, 3)
#: pytest parameters of the cases (``parametrize("case", CASES, ids=CASE_IDS)``)
CASES = [pytest.param(c, marks=pytest.mark.slow) if K.INTERPRETED and i in _SLOW_UNDER_INTERPRETER else c
         for i, c in enumerate(_CASES)]


def tolerances(dtype: torch.dtype):
    """(rtol, atol relative to the reference's largest magnitude) for results in ``dtype``."""
    return {
        torch.float64: (1e-10, 1e-12),
        torch.float32: (2e-5, 2e-6),
        torch.float16: (4e-3, 2e-3),
        torch.bfloat16: (3e-2, 2e-2),
    }[dtype]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = ""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    rtol, atol = tolerances(dtype)
    scale = max(float(expected.abs().max()), 1e-30) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what}: {m}")


def with_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` in another memory layout."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "permuted":
        perm = [0] + list(range(x.dim() - 1, 0, -1))  # reversing the non-batch axes is its own inverse
        out = x.permute(perm).contiguous().permute(perm)
    elif layout == "sliced":
        big = torch.zeros(x.shape[:-1] + (2 * x.shape[-1] + 1,), dtype=x.dtype, device=x.device)
        big[..., 1::2] = x
        out = big[..., 1::2]
    else:
        raise ValueError(layout)
    assert torch.equal(out, x) and (x.dim() < 2 or not out.is_contiguous())
    return out


def make_logits(case: Case, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(case.shape, generator=g, dtype=torch.float64)).to(case.dtype)
    return with_layout(x.to(DEVICE), case.layout)


def make_target(case: Case, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B, C = case.shape[:2]
    t = torch.randint(0, C, (B, *case.shape[2:]), generator=g)
    return with_layout(t.to(DEVICE), case.layout)


def make_prob(case: Case, seed: int, dtype=None) -> torch.Tensor:
    """Teacher probabilities: softmax of random logits, some voxels made exactly one-hot (0 log 0)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(2 * torch.randn(case.shape, generator=g, dtype=torch.float64), dim=1)
    p[:, :, ..., 0] = 0.0
    p[:, 0, ..., 0] = 1.0
    return with_layout(p.to(dtype or case.dtype).to(DEVICE), case.layout)


def upstream(like: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(like.shape, generator=g, dtype=torch.float64).to(like.dtype).to(DEVICE)


def leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh float64 CPU leaf with the values of x, for the reference's autograd."""
    return x.detach().double().cpu().clone().requires_grad_()


def snapshot(*tensors):
    return [t.clone() for t in tensors]


def assert_unchanged(before, after):
    for b, a in zip(before, after):
        assert torch.equal(b, a), "a launcher wrote into one of its inputs"
