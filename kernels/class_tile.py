"""Per-voxel class math on a ``[C_PAD, BLOCK]`` tile (classes x voxels).

``C`` is small (2-8) and never the last axis of ``[B, C, *S]``, so a program
holds all classes of ``BLOCK`` voxels in registers: ``C_PAD`` (``C`` rounded up
to a power of two, a compile-time constant) rows, each row a strided load
along the voxel axis. Reductions over classes are ``axis=0`` reductions that
stay inside a thread. Rows ``>= C`` are padding: loaded as nothing (masked)
and neutralised here (``-inf`` logits, zero probabilities).
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["load_tile", "softmax_tile", "first_argmax", "entropy_tile", "one_hot_tile"]


@triton.jit
def load_tile(ptr, c_stride, voxel_off, vmask, C: tl.constexpr, C_PAD: tl.constexpr):
    """[C_PAD, BLOCK] tile of ptr[c * c_stride + voxel_off] in ptr's dtype; padding and masked voxels are 0."""
    cls = tl.arange(0, C_PAD)
    mask = (cls < C)[:, None] & vmask[None, :]
    return tl.load(ptr + cls.to(tl.int64)[:, None] * c_stride + voxel_off[None, :], mask=mask, other=0.0)


@triton.jit
def softmax_tile(x, C: tl.constexpr, C_PAD: tl.constexpr):
    """(softmax over classes [C_PAD, BLOCK], logsumexp [BLOCK]) of logits x; padded rows get 0."""
    cls = tl.arange(0, C_PAD)
    x = tl.where((cls < C)[:, None], x, float("-inf"))
    m = tl.max(x, axis=0)
    e = tl.exp(x - m[None, :])
    se = tl.sum(e, axis=0)
    return e / se[None, :], m + tl.log(se)


@triton.jit
def first_argmax(x, C: tl.constexpr, C_PAD: tl.constexpr):
    """[BLOCK] int32 argmax over classes; ties go to the lowest class index (as torch.argmax)."""
    cls = tl.arange(0, C_PAD)
    x = tl.where((cls < C)[:, None], x, float("-inf"))
    m = tl.max(x, axis=0)
    return tl.min(tl.where(x == m[None, :], cls[:, None], C_PAD), axis=0)


@triton.jit
def entropy_tile(p):
    """[BLOCK] entropy -sum_c p_c log p_c of probabilities p [C_PAD, BLOCK], with 0 log 0 = 0."""
    pos = p > 0
    return -tl.sum(tl.where(pos, p * tl.log(tl.where(pos, p, 1.0)), 0.0), axis=0)


@triton.jit
def one_hot_tile(t, C: tl.constexpr, C_PAD: tl.constexpr):
    """[C_PAD, BLOCK] bool one-hot of class indices t [BLOCK], clamped into [0, C).

    The launchers trust validated targets; the clamp only guarantees a defined
    result (never an out-of-bounds access: nothing is gathered from memory).
    """
    t = tl.minimum(tl.maximum(t.to(tl.int32), 0), C - 1)
    return tl.arange(0, C_PAD)[:, None] == t[None, :]
