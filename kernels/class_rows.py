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
    "class_index", "check_nan_rows",
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
    """(softmax rows, cross-entropy logsumexp(x) - x[t] [BLOCK]) for class indices t (int32; -1 gives NaN).

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
def class_index(t, vmask, err_ptr, C: tl.constexpr, CHECK: tl.constexpr):
    """[BLOCK] int32 class indices of labels t (any integer dtype); -1 where a label is outside [0, C).

    There is no clamp: the -1 makes the voxel's cross-entropy, loss and gradient NaN
    (:func:`pick_row`), so a bad label that is not reported is at least never a silent
    wrong number. With CHECK, the program also records one offending label (the largest
    >= C, else the most negative) in ``err_ptr[0]`` (int64, 0 = none: 0 is always a valid
    label) — one reduction over the block in registers and, only on an error, one store;
    concurrent programs may overwrite each other, each with an offending value.
    Compared in t's own dtype: an int64 label of 2**32 + 1 is out of range, not 1.
    """
    bad = vmask & ((t < 0) | (t >= C))
    if CHECK:
        hi = tl.max(tl.where(bad, t, 0), axis=0)
        lo = tl.min(tl.where(bad, t, 0), axis=0)
        worst = tl.where(hi != 0, hi, lo).to(tl.int64)
        tl.store(err_ptr, worst, mask=worst != 0)
    return tl.where(bad, -1, t.to(tl.int32))


@triton.jit
def check_nan_rows(rows, vmask, err_ptr, C: tl.constexpr, CHECK: tl.constexpr):
    """With CHECK, set ``err_ptr[1] = 1`` when a row holds a NaN at a voxel of vmask (no extra load)."""
    if CHECK:
        nan = rows[0] != rows[0]
        for c in tl.static_range(1, C):
            nan = nan | (rows[c] != rows[c])
        found = tl.max((nan & vmask).to(tl.int32), axis=0)
        tl.store(err_ptr + 1, found.to(tl.int64), mask=found != 0)


@triton.jit
def pick_row(xs, t, C: tl.constexpr):
    """[BLOCK] xs[t_v][v] for class indices t (int32); NaN where t is -1 (a label out of range)."""
    out = tl.full(xs[0].shape, float("nan"), xs[0].dtype)
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
