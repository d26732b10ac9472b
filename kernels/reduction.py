"""Deterministic second stage of every ``"mean"``/``"sum"`` reduction.

Stage one: each program of a loss kernel writes its own partial sum (in the
accumulation dtype) to ``partials[pid]``. Stage two, here: one program sums
the partials in a fixed order and divides by the element count. No float
atomics, so the result is bitwise reproducible run to run.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["sum_partials_kernel", "finish_reduction", "REDUCE_BLOCK"]

REDUCE_BLOCK = 1024


@triton.jit
def sum_partials_kernel(
    partials_ptr,  # [n_partials] ACC
    out_ptr,  # [] output dtype
    n_partials,  # int
    divisor,  # int: element count for "mean", 1 for "sum"
    ACC: tl.constexpr,  # tl.float32 | tl.float64
    BLOCK: tl.constexpr,
):
    acc = tl.zeros([BLOCK], ACC)
    for start in range(0, n_partials, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partials_ptr + offs, mask=offs < n_partials, other=0.0)
    # no .to() on int arguments: a value of 1 arrives as a compile-time constant
    total = tl.sum(acc, axis=0) / divisor
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


def finish_reduction(partials: torch.Tensor, divisor: int, out_dtype: torch.dtype, acc) -> torch.Tensor:
    """0-d ``out_dtype`` tensor: ``sum(partials) / divisor``, summed in a fixed order."""
    out = torch.empty((), dtype=out_dtype, device=partials.device)
    sum_partials_kernel[(1,)](partials, out, partials.numel(), divisor, ACC=acc, BLOCK=REDUCE_BLOCK, num_warps=4)
    return out
