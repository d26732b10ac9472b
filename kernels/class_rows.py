"""Per-voxel class math on ``C`` rows of ``BLOCK`` voxels, the class loop unrolled.

``C`` is small (2-8) and never the last axis of ``[B, C, *S]``. A program
holds, for each class, one ``[BLOCK]`` vector of its voxels (a strided load
along the voxel axis), gathered in a tuple built by ``tl.static_range(C)``
with ``C: tl.constexpr``. Every reduction over classes is then an
element-wise max/add between vectors of the same layout: it never leaves the
thread. (A ``[C_PAD, BLOCK]`` 2-D tile was tried first: at C = 8 Triton split
the class axis across warps and routed each softmax through shared memory,
and C = 3, 5, 6, 7 wasted padded rows.)
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "load_rows", "store_rows", "softmax_rows", "cross_entropy_rows", "argmax_rows", "entropy_rows", "pick_row", "one_hot_rows",
    "clamp_class",
]


@triton.jit
def load_rows(ptr, c_stride, voxel_off, vmask, C: tl.constexpr, VIA: tl.constexpr, ACC: tl.constexpr):
    """C [BLOCK] vectors ptr[c * c_stride + voxel_off], rounded to VIA then held in ACC; masked voxels 0."""
    rows = ()
    row_ptr = ptr  # stepping the pointer keeps c * c_stride out of 32-bit arithmetic
    for c in tl.static_range(C):
        x = tl.load(row_ptr + voxel_off, mask=vmask, other=0.0)
        rows = rows + (x.to(VIA).to(ACC),)
        row_ptr += c_stride
    return rows


@triton.jit
def store_rows(ptr, c_stride, voxel_off, vmask, rows, C: tl.constexpr):
    """ptr[c * c_stride + voxel_off] = rows[c] in ptr's element type."""
    row_ptr = ptr
    for c in tl.static_range(C):
        tl.store(row_ptr + voxel_off, rows[c].to(ptr.dtype.element_ty), mask=vmask)
        row_ptr += c_stride


@triton.jit
def _softmax_parts(xs, C: tl.constexpr):
    """(softmax rows, m = max over classes, log sum_c exp(x_c - m)) of logit rows xs."""
    m = xs[0]
    for c in tl.static_range(1, C):
        m = tl.maximum(m, xs[c])
    es = ()
    se = tl.zeros_like(m)
    for c in tl.static_range(C):
        e = tl.exp(xs[c] - m)
        es = es + (e,)
        se += e
    inv = 1.0 / se
    s = ()
    for c in tl.static_range(C):
        s = s + (es[c] * inv,)
    return s, m, tl.log(se)


@triton.jit
def softmax_rows(xs, C: tl.constexpr):
    """(softmax over classes as C rows, logsumexp [BLOCK]) of logit rows xs."""
    s, m, log_se = _softmax_parts(xs, C)
    return s, m + log_se


@triton.jit
def cross_entropy_rows(xs, t, C: tl.constexpr):
    """(softmax rows, cross-entropy logsumexp(x) - x[t] [BLOCK]) for class indices t (int32, in range).

    Formed as (max - x[t]) + log sum exp(x - max): the difference of two logits is exact where
    logsumexp - x[t] would lose the small result to rounding once |logits| is large (~1e4 in fp32).
    """
    s, m, log_se = _softmax_parts(xs, C)
    return s, (m - pick_row(xs, t, C)) + log_se


@triton.jit
def argmax_rows(xs, C: tl.constexpr):
    """[BLOCK] int32 argmax over classes; ties go to the lowest class index (as torch.argmax)."""
    best = xs[0]
    idx = tl.zeros(xs[0].shape, tl.int32)
    for c in tl.static_range(1, C):
        better = xs[c] > best  # strict: an equal later class never wins
        idx = tl.where(better, c, idx)
        best = tl.where(better, xs[c], best)
    return idx


@triton.jit
def entropy_rows(ps, C: tl.constexpr):
    """[BLOCK] entropy -sum_c p_c log p_c of probability rows, with 0 log 0 = 0; NaN propagates."""
    h = tl.zeros_like(ps[0])
    for c in tl.static_range(C):
        p = ps[c]
        # log(1) for p == 0 only: a NaN (or negative) p keeps its NaN, as in the C++ kernels
        h -= p * tl.log(tl.where(p == 0, 1.0, p))
    return h


@triton.jit
def clamp_class(t, C: tl.constexpr):
    """Class indices as int32 clamped into [0, C).

    The launchers trust validated targets; the clamp only guarantees a defined
    result (never an out-of-bounds access: nothing is gathered from memory).
    """
    return tl.minimum(tl.maximum(t.to(tl.int32), 0), C - 1)


@triton.jit
def pick_row(xs, t, C: tl.constexpr):
    """[BLOCK] xs[t_v][v] for class indices t (int32, in range)."""
    out = tl.zeros_like(xs[0])
    for c in tl.static_range(C):
        out = tl.where(t == c, xs[c], out)
    return out


@triton.jit
def one_hot_rows(t, C: tl.constexpr, ACC: tl.constexpr):
    """C rows of the one-hot encoding of class indices t (int32, in range), in ACC."""
    rows = ()
    for c in tl.static_range(C):
        rows = rows + ((t == c).to(ACC),)
    return rows
