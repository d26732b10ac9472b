"""Conventions every Triton launcher of pyseg_noise shares.

- The accumulation dtype: fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 inputs.
- Float scalars (``sigma2``, ``scale``) cross the launch boundary as an fp32
  pair ``(hi, lo)`` with ``hi + lo == x`` to ~48 bits: Triton types a Python
  float argument as fp32, which would make the fp64 path only fp32-accurate.
- Whether the kernels were built for Triton's CPU interpreter. ``triton.jit``
  picks the interpreter when the decorator runs, i.e. when
  ``pyseg_noise.kernels`` is first imported, so ``TRITON_INTERPRET=1`` has to
  be set before that import (setting it before ``import triton`` is not
  needed, and setting it later has no effect).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

__all__ = ["INTERPRETED", "NUM_WARPS", "acc_dtype", "split_float", "portable_dtype", "check_device", "voxel_block"]

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)


def acc_dtype(*dtypes: torch.dtype):
    """(triton dtype, torch dtype) to accumulate in: fp64 if any of ``dtypes`` is fp64, else fp32."""
    if any(d == torch.float64 for d in dtypes):
        return tl.float64, torch.float64
    return tl.float32, torch.float32


def split_float(x: float) -> tuple[float, float]:
    """Split ``x`` into fp32-representable ``(hi, lo)``; the kernel adds them in its ACC dtype."""
    hi = float(np.float32(x))
    return hi, float(np.float32(x - hi))


def portable_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t``, or ``t.to(dtype)`` when a kernel would have to convert directly between bf16 and fp64.

    Triton 3.9's interpreter converts bf16 <-> fp64 wrongly (it treats bf16
    as raw uint16), and fp64 -> bf16 through fp32 would round twice. The pair
    only meets in odd mixes (a bf16 teacher with fp64 logits, ...), so those
    pay one torch copy and the kernels never see it.
    """
    if {t.dtype, dtype} == {torch.bfloat16, torch.float64}:
        return t.to(dtype)
    return t


def check_device(op: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` cannot be reached by the kernels as they were built.

    Raises:
        RuntimeError: a CPU tensor while the kernels were compiled for a GPU.
    """
    if tensor.device.type == "cpu" and not INTERPRETED:
        raise RuntimeError(
            f"pyseg_noise.kernels.{op}: got CPU tensors, but the Triton kernels were built for a GPU. "
            "To run them on CPU set TRITON_INTERPRET=1 before pyseg_noise.kernels is first imported."
        )


NUM_WARPS = 4  # 128 threads per program for the voxel kernels


def voxel_block(C: int) -> int:
    """Voxels per program when each holds C class rows: about 2048 values, a power of two.

    At 4 warps that is 16 values per thread and per row tuple (C = 2: 1024
    voxels, C = 3, 4: 512, C = 5..8: 256). Compiled for sm_90 with Triton
    3.9 + ptxas, every voxel kernel then stays at <= 111 registers with no
    spills for C in {2, 4, 8} (4096 values per program reached 186 at C = 2).
    Not tuned on hardware.
    """
    return max(128, 1 << ((2048 // max(C, 1)).bit_length() - 1))
