"""Triton kernels of PINT (SPEC 1-4): teacher uncertainty and the uncertainty-weighted losses.

Every launcher takes exactly the positional arguments of its schema in
``csrc/ops.cpp`` and trusts them to be validated by ``pyseg_noise.ops``.
Inputs may have any strides (passed to the kernels, never copied); outputs
are new contiguous tensors in the logits' dtype (``slice_alpha``: fp32, or
fp64 for fp64 logits). Arithmetic is fp32 (fp64 for fp64 inputs).
``teacher_prob`` is rounded to the logits' dtype before use, as the CPU
kernels do. "mean"/"sum" reductions are two-stage and deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .class_rows import (
    argmax_rows, check_nan_rows, class_index, cross_entropy_rows, entropy_rows, load_rows, one_hot_rows, softmax_rows, store_rows,
)
from .launch import NUM_WARPS, acc_dtype, check_device, portable_dtype, split_float, voxel_block
from .reduction import finish_reduction
from .value_errors import error_buffer
from .voxel_layout import slice_layout, slice_tile, sum_per_slice, voxel_layout, voxel_tile

__all__ = [
    "teacher_uncertainty",
    "softmax_accumulate_",
    "prob_entropy",
    "slice_uncertainty",
    "pint_pixel_loss",
    "pint_pixel_loss_backward",
    "pint_image_loss",
    "pint_image_loss_backward",
]

_ROWS_BLOCK = 256  # slices per program in the per-slice second stage


# --------------------------------------------------------------------------- SPEC 1


@triton.jit
def teacher_uncertainty_kernel(
    logits_ptr,  # [M, B, C, *S] teacher logits, any strides
    prob_ptr,  # [B, C, *S] contiguous, logits dtype (output)
    entropy_ptr,  # [B, *S] contiguous, logits dtype (output)
    M,  # number of teacher passes
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    logits_m_stride, logits_b_stride, logits_c_stride,  # strides of M, B, C
    logits_s0_stride, logits_s1_stride, logits_s2_stride,  # merged spatial strides
    C: tl.constexpr,  # classes
    ACC: tl.constexpr,  # tl.float32 | tl.float64
    BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
     # voxels per program
):
    b = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    off = b * logits_b_stride + (i0 * logits_s0_stride + i1 * logits_s1_stride + i2 * logits_s2_stride)
    DT: tl.constexpr = logits_ptr.dtype.element_ty
    acc = ()
    for c in tl.static_range(C):
        acc = acc + (tl.zeros([BLOCK], ACC),)
    pass_ptr = logits_ptr
    for _ in range(M):
        s, _lse = softmax_rows(load_rows(pass_ptr, logits_c_stride, off, vmask, C, DT, ACC), C)
        new_acc = ()
        for c in tl.static_range(C):
            new_acc = new_acc + (acc[c] + s[c],)
        acc = new_acc
        pass_ptr += logits_m_stride
    # round to the output dtype first: the entropy is that of the prob that is returned
    p = ()
    for c in tl.static_range(C):
        p = p + ((acc[c] / M).to(prob_ptr.dtype.element_ty).to(ACC),)
    store_rows(prob_ptr + b * C * n_voxels, n_voxels, v, vmask, p, C)
    tl.store(entropy_ptr + b * n_voxels + v, entropy_rows(p, C).to(entropy_ptr.dtype.element_ty), mask=vmask)


def teacher_uncertainty(teacher_logits: torch.Tensor):
    """SPEC 1 / PINT Eq. (1): mean softmax of M teacher passes and its entropy.

    Args:
        teacher_logits (Tensor[M, B, C, *S]): any strides.

    Returns:
        (prob Tensor[B, C, *S], entropy Tensor[B, *S]), contiguous, teacher_logits' dtype.
    """
    check_device("teacher_uncertainty", teacher_logits)
    M, B, C = teacher_logits.shape[:3]
    S = teacher_logits.shape[3:]
    lay = voxel_layout([teacher_logits[0]], [True], voxel_block(C))
    ACC, _ = acc_dtype(teacher_logits.dtype)
    prob = torch.empty((B, C, *S), dtype=teacher_logits.dtype, device=teacher_logits.device)
    entropy = torch.empty((B, *S), dtype=teacher_logits.dtype, device=teacher_logits.device)
    grid = (lay.n_tiles, B)
    teacher_uncertainty_kernel[grid](
        teacher_logits, prob, entropy, M, lay.N, *lay.dims, teacher_logits.stride(0), *lay.strides[0],
        C=C, ACC=ACC, **lay.tile, num_warps=NUM_WARPS)
    return prob, entropy


@triton.jit
def softmax_accumulate_kernel(
    prob_sum_ptr,  # [B, C, *S] accumulator, any strides, updated in place
    logits_ptr,  # [B, C, *S] one teacher pass, any strides
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    prob_sum_b_stride, prob_sum_c_stride, prob_sum_s0_stride, prob_sum_s1_stride, prob_sum_s2_stride,
    logits_b_stride, logits_c_stride, logits_s0_stride, logits_s1_stride, logits_s2_stride,
    C: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    b = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    l_off = b * logits_b_stride + (i0 * logits_s0_stride + i1 * logits_s1_stride + i2 * logits_s2_stride)
    p_off = b * prob_sum_b_stride + (i0 * prob_sum_s0_stride + i1 * prob_sum_s1_stride + i2 * prob_sum_s2_stride)
    s, _lse = softmax_rows(load_rows(logits_ptr, logits_c_stride, l_off, vmask, C, logits_ptr.dtype.element_ty,
                                     ACC), C)
    # one accumulator row live at a time: loading all C first spilled at C = 8 on sm_90
    row_ptr = prob_sum_ptr + p_off
    for c in tl.static_range(C):
        acc = tl.load(row_ptr, mask=vmask, other=0.0).to(ACC)
        tl.store(row_ptr, (acc + s[c]).to(prob_sum_ptr.dtype.element_ty), mask=vmask)
        row_ptr += prob_sum_c_stride


def softmax_accumulate_(prob_sum: torch.Tensor, logits: torch.Tensor) -> None:
    """Streaming SPEC 1: ``prob_sum += softmax_C(logits)`` in place.

    Args:
        prob_sum (Tensor[B, C, *S]): accumulator, any float dtype and strides (no overlap).
        logits (Tensor[B, C, *S]): one teacher pass, any strides.
    """
    check_device("softmax_accumulate_", logits)
    B, C = logits.shape[:2]
    # the accumulator's dtype decides the arithmetic (fp64 sums stay fp64-accurate)
    ACC, acc_torch = acc_dtype(prob_sum.dtype)
    logits = portable_dtype(logits, acc_torch)
    lay = voxel_layout([prob_sum, logits], [True, True], voxel_block(C))
    softmax_accumulate_kernel[(lay.n_tiles, B)](
        prob_sum, logits, lay.N, *lay.dims, *lay.strides[0], *lay.strides[1],
        C=C, ACC=ACC, **lay.tile, num_warps=NUM_WARPS)


@triton.jit
def prob_entropy_kernel(
    prob_sum_ptr,  # [B, C, *S] accumulated probabilities, any strides
    prob_ptr,  # [B, C, *S] contiguous (output)
    entropy_ptr,  # [B, *S] contiguous (output)
    scale_hi, scale_lo,  # float scale = hi + lo (fp64-exact split)
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    prob_sum_b_stride, prob_sum_c_stride, prob_sum_s0_stride, prob_sum_s1_stride, prob_sum_s2_stride,
    C: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    b = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    off = b * prob_sum_b_stride + (i0 * prob_sum_s0_stride + i1 * prob_sum_s1_stride + i2 * prob_sum_s2_stride)
    scale = tl.cast(scale_hi, ACC) + tl.cast(scale_lo, ACC)
    rows = load_rows(prob_sum_ptr, prob_sum_c_stride, off, vmask, C, prob_sum_ptr.dtype.element_ty, ACC)
    p = ()
    for c in tl.static_range(C):
        p = p + ((rows[c] * scale).to(prob_ptr.dtype.element_ty).to(ACC),)
    store_rows(prob_ptr + b * C * n_voxels, n_voxels, v, vmask, p, C)
    tl.store(entropy_ptr + b * n_voxels + v, entropy_rows(p, C).to(entropy_ptr.dtype.element_ty), mask=vmask)


def prob_entropy(prob_sum: torch.Tensor, scale: float):
    """Finish the streaming SPEC 1: ``prob = prob_sum * scale`` and its entropy.

    Args:
        prob_sum (Tensor[B, C, *S]): any strides.
        scale (float): usually ``1 / M``.

    Returns:
        (prob Tensor[B, C, *S], entropy Tensor[B, *S]), contiguous, prob_sum's dtype.
    """
    check_device("prob_entropy", prob_sum)
    B, C = prob_sum.shape[:2]
    lay = voxel_layout([prob_sum], [True], voxel_block(C))
    ACC, _ = acc_dtype(prob_sum.dtype)
    prob = torch.empty(prob_sum.shape, dtype=prob_sum.dtype, device=prob_sum.device)
    entropy = torch.empty((B, *prob_sum.shape[2:]), dtype=prob_sum.dtype, device=prob_sum.device)
    prob_entropy_kernel[(lay.n_tiles, B)](
        prob_sum, prob, entropy, *split_float(scale), lay.N, *lay.dims, *lay.strides[0],
        C=C, ACC=ACC, **lay.tile, num_warps=NUM_WARPS)
    return prob, entropy


# --------------------------------------------------------------------------- SPEC 2


@triton.jit
def pint_voxel_terms(x, t, q, C: tl.constexpr, HARD: tl.constexpr, NORMALIZE: tl.constexpr):
    """Per-voxel terms of SPEC 2 from logit rows x, class indices t (-1: bad label, NaN ce) and teacher-prob rows q (ACC).

    Returns (s = softmax rows, pseudo-label rows y_hat, ce [BLOCK], mse [BLOCK],
    u [BLOCK] teacher entropy, divided by log C if NORMALIZE).
    """
    s, ce = cross_entropy_rows(x, t, C)
    u = entropy_rows(q, C)
    if NORMALIZE:
        u = u / tl.log(tl.full([], C, u.dtype))
    if HARD:
        y_hat = one_hot_rows(argmax_rows(q, C), C, u.dtype)
    else:
        y_hat = q
    sq = tl.zeros_like(u)
    for c in tl.static_range(C):
        sq += (s[c] - y_hat[c]) * (s[c] - y_hat[c])
    return s, y_hat, ce, sq / C, u


@triton.jit
def pint_grad_rows(g, alpha, s, y_hat, t, C: tl.constexpr):
    """Gradient rows g * [alpha (s_k - [k = t]) + (1 - alpha) (2/C) s_k ((s_k - y_k) - sum_c (s_c - y_c) s_c)]."""
    dot = tl.zeros_like(g)
    for c in tl.static_range(C):
        dot += (s[c] - y_hat[c]) * s[c]
    ga = g * alpha
    gm = g * (1 - alpha) * 2 / C
    rows = ()
    for c in tl.static_range(C):
        rows = rows + (ga * (s[c] - (t == c).to(g.dtype)) + gm * s[c] * ((s[c] - y_hat[c]) - dot),)
    return rows


@triton.jit
def pint_pixel_loss_kernel(
    logits_ptr,  # [B, C, *S] any strides
    target_ptr,  # [B, *S] any integer dtype, any strides
    teacher_ptr,  # [B, C, *S] teacher prob, any strides
    out_ptr,  # REDUCE_NONE: [B, *S] contiguous loss; else [B * n_blocks] ACC partial sums
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    logits_b_stride, logits_c_stride, logits_s0_stride, logits_s1_stride, logits_s2_stride,
    target_b_stride, target_s0_stride, target_s1_stride, target_s2_stride,
    teacher_b_stride, teacher_c_stride, teacher_s0_stride, teacher_s1_stride, teacher_s2_stride,
    C: tl.constexpr,
    HARD: tl.constexpr,  # one-hot argmax pseudo label
    NORMALIZE: tl.constexpr,  # u / log C
    REDUCE_NONE: tl.constexpr,  # per-voxel map instead of partial sums
    CHECK: tl.constexpr,  # record bad labels / NaN teacher probs in err_ptr
    ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    pid_v = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    l_off = b * logits_b_stride + (i0 * logits_s0_stride + i1 * logits_s1_stride + i2 * logits_s2_stride)
    t_off = b * target_b_stride + (i0 * target_s0_stride + i1 * target_s1_stride + i2 * target_s2_stride)
    q_off = b * teacher_b_stride + (i0 * teacher_s0_stride + i1 * teacher_s1_stride + i2 * teacher_s2_stride)
    DT: tl.constexpr = logits_ptr.dtype.element_ty
    x = load_rows(logits_ptr, logits_c_stride, l_off, vmask, C, DT, ACC)
    t = class_index(tl.load(target_ptr + t_off, mask=vmask, other=0), vmask, err_ptr, C, CHECK)
    q = load_rows(teacher_ptr, teacher_c_stride, q_off, vmask, C, DT, ACC)  # rounded to the logits' dtype
    check_nan_rows(q, vmask, err_ptr, C, CHECK)
    s, y_hat, ce, mse, u = pint_voxel_terms(x, t, q, C, HARD, NORMALIZE)
    alpha = tl.exp(-u)
    loss = alpha * ce + (1 - alpha) * mse
    if REDUCE_NONE:
        tl.store(out_ptr + b * n_voxels + v, loss.to(out_ptr.dtype.element_ty), mask=vmask)
    else:
        pid = tl.program_id(1) * tl.num_programs(0) + pid_v
        tl.store(out_ptr + pid, tl.sum(tl.where(vmask, loss, 0.0), axis=0))


def _pixel_setup(logits, target, teacher_prob, extra=()):
    teacher_prob = portable_dtype(teacher_prob, logits.dtype)
    B, C = logits.shape[:2]
    lay = voxel_layout([logits, target, teacher_prob, *extra], [True, False, True] + [False] * len(extra), voxel_block(C))
    ACC, acc_torch = acc_dtype(logits.dtype)
    return B, C, lay, ACC, acc_torch, voxel_block(C), teacher_prob


def pint_pixel_loss(logits, target, teacher_prob, hard: bool, normalize_entropy: bool, reduction: str):
    """SPEC 2 / PINT Eq. (2)-(3): ``alpha_v * ce_v + (1 - alpha_v) * mse_v``, alpha_v = exp(-u_v).

    Args:
        logits (Tensor[B, C, *S]), target (Tensor[B, *S], integer), teacher_prob (Tensor[B, C, *S]).
        hard (bool): one-hot argmax pseudo label (ties -> lowest class) instead of teacher_prob.
        normalize_entropy (bool): divide u by log C.
        reduction (str): "mean" | "sum" -> 0-d; "none" -> Tensor[B, *S].
    """
    check_device("pint_pixel_loss", logits)
    B, C, lay, ACC, acc_torch, BLOCK, teacher_prob = _pixel_setup(logits, target, teacher_prob)
    n_blocks = lay.n_tiles
    none = reduction == "none"
    if none:
        out = torch.empty((B, *logits.shape[2:]), dtype=logits.dtype, device=logits.device)
    else:
        out = torch.empty(B * n_blocks, dtype=acc_torch, device=logits.device)
    err = error_buffer(logits.device)
    pint_pixel_loss_kernel[(n_blocks, B)](
        logits, target, teacher_prob, out, err, lay.N, *lay.dims, *lay.strides[0], *lay.strides[1],
        *lay.strides[2], C=C, HARD=bool(hard), NORMALIZE=bool(normalize_entropy),
        REDUCE_NONE=none, CHECK=err is not None, ACC=ACC, **lay.tile, num_warps=NUM_WARPS)
    if none:
        return out
    return finish_reduction(out, B * lay.N if reduction == "mean" else 1, logits.dtype, ACC)


@triton.jit
def pint_pixel_loss_backward_kernel(
    grad_ptr,  # REDUCE_NONE: [B, *S] any strides; else [] upstream gradient
    logits_ptr,  # [B, C, *S] any strides
    target_ptr,  # [B, *S] any integer dtype
    teacher_ptr,  # [B, C, *S]
    out_ptr,  # [B, C, *S] contiguous, logits dtype (output)
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    divisor,  # int: B * N for "mean", 1 for "sum" (unused for "none")
    logits_b_stride, logits_c_stride, logits_s0_stride, logits_s1_stride, logits_s2_stride,
    target_b_stride, target_s0_stride, target_s1_stride, target_s2_stride,
    teacher_b_stride, teacher_c_stride, teacher_s0_stride, teacher_s1_stride, teacher_s2_stride,
    grad_b_stride, grad_s0_stride, grad_s1_stride, grad_s2_stride,
    C: tl.constexpr, HARD: tl.constexpr, NORMALIZE: tl.constexpr,
    REDUCE_NONE: tl.constexpr, CHECK: tl.constexpr,  # record bad labels / NaN teacher probs in err_ptr
    ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    b = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    l_off = b * logits_b_stride + (i0 * logits_s0_stride + i1 * logits_s1_stride + i2 * logits_s2_stride)
    t_off = b * target_b_stride + (i0 * target_s0_stride + i1 * target_s1_stride + i2 * target_s2_stride)
    q_off = b * teacher_b_stride + (i0 * teacher_s0_stride + i1 * teacher_s1_stride + i2 * teacher_s2_stride)
    if REDUCE_NONE:
        g_off = b * grad_b_stride + (i0 * grad_s0_stride + i1 * grad_s1_stride + i2 * grad_s2_stride)
        g = tl.load(grad_ptr + g_off, mask=vmask, other=0.0).to(ACC)
    else:
        g = tl.zeros([BLOCK], ACC) + tl.load(grad_ptr).to(ACC) / divisor
    DT: tl.constexpr = logits_ptr.dtype.element_ty
    x = load_rows(logits_ptr, logits_c_stride, l_off, vmask, C, DT, ACC)
    t = class_index(tl.load(target_ptr + t_off, mask=vmask, other=0), vmask, err_ptr, C, CHECK)
    q = load_rows(teacher_ptr, teacher_c_stride, q_off, vmask, C, DT, ACC)
    check_nan_rows(q, vmask, err_ptr, C, CHECK)
    s, y_hat, ce, mse, u = pint_voxel_terms(x, t, q, C, HARD, NORMALIZE)
    g = tl.where(t < 0, float("nan"), g)  # a bad label's voxel: NaN gradient, never a clamp
    grad = pint_grad_rows(g, tl.exp(-u), s, y_hat, t, C)
    store_rows(out_ptr + b * C * n_voxels, n_voxels, v, vmask, grad, C)


def pint_pixel_loss_backward(grad, logits, target, teacher_prob, hard: bool, normalize_entropy: bool,
                             reduction: str):
    """Gradient of :func:`pint_pixel_loss` w.r.t. logits.

    Args:
        grad (Tensor[] or Tensor[B, *S] for "none"): upstream gradient, any strides.
        logits, target, teacher_prob, hard, normalize_entropy, reduction: as the forward.

    Returns:
        Tensor[B, C, *S]: contiguous, logits' dtype.
    """
    check_device("pint_pixel_loss_backward", logits)
    none = reduction == "none"
    grad = portable_dtype(grad, acc_dtype(logits.dtype)[1])
    B, C, lay, ACC, _, BLOCK, teacher_prob = _pixel_setup(logits, target, teacher_prob,
                                                                 (grad,) if none else ())
    g_strides = lay.strides[3] if none else (0, 0, 0, 0)
    out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    err = error_buffer(logits.device)
    pint_pixel_loss_backward_kernel[(lay.n_tiles, B)](
        grad, logits, target, teacher_prob, out, err, lay.N, *lay.dims,
        B * lay.N if reduction == "mean" else 1, *lay.strides[0], *lay.strides[1], *lay.strides[2], *g_strides,
        C=C, HARD=bool(hard), NORMALIZE=bool(normalize_entropy), REDUCE_NONE=none, CHECK=err is not None,
        ACC=ACC, **lay.tile, num_warps=NUM_WARPS)
    return out


def pint_pixel_loss_with_grad(logits, target, teacher_prob, hard: bool, normalize_entropy: bool, reduction: str):
    """The loss and its gradient for a unit upstream gradient (the op's contract, SPEC 2).

    On the GPU this is the forward kernel then the backward kernel (two passes; the
    C++ kernel fuses them). ``pyseg_noise.ops.pint_pixel_loss`` uses this op only on the
    C++ backend; the Triton path keeps its separate backward.
    """
    loss = pint_pixel_loss(logits, target, teacher_prob, hard, normalize_entropy, reduction)
    grad = pint_pixel_loss_backward(torch.ones_like(loss), logits, target, teacher_prob, hard, normalize_entropy,
                                    reduction)
    return loss, grad


# --------------------------------------------------------------------------- SPEC 3


@triton.jit
def slice_partials_kernel(
    x_ptr,  # [B, *S] per-voxel values (entropy), any strides
    partials_ptr,  # [B, R, n_wblocks] ACC per-slice partial sums (output)
    R, W, P, Q, n_qblocks,  # slices, voxels per slice (= P * Q merged in-slice sizes), tiles along Q
    x_b_stride, x_r_stride, x_p_stride, x_q_stride,
    SLICE_INNER: tl.constexpr,  # tile along slices fastest
    ACC: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,  # in-slice tile: BLOCK_W = BLOCK_P * BLOCK_Q
    WIDE: tl.constexpr,  # int64 in-item offsets
):
    pid_w = tl.program_id(0)
    pid_r = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r, p, qi, mask = slice_tile(pid_r, pid_w, R, P, Q, n_qblocks, SLICE_INNER, BLOCK_R, BLOCK_P, BLOCK_Q, WIDE)
    off = b * x_b_stride + (r * x_r_stride + p * x_p_stride + qi * x_q_stride)
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(ACC)
    part = sum_per_slice(x, SLICE_INNER, BLOCK_R, BLOCK_P * BLOCK_Q)
    rows = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    tl.store(partials_ptr + (b * R + rows) * tl.num_programs(0) + pid_w, part, mask=rows < R)


@triton.jit
def slice_mean_kernel(
    partials_ptr,  # [n_rows, n_wblocks] ACC
    out_ptr,  # [n_rows] output dtype
    n_rows, n_wblocks, W,  # rows = B * R; W voxels per slice
    BLOCK_ROWS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rmask = rows < n_rows
    acc = tl.load(partials_ptr + rows * n_wblocks, mask=rmask, other=0.0)
    for j in range(1, n_wblocks):
        acc += tl.load(partials_ptr + rows * n_wblocks + j, mask=rmask, other=0.0)
    tl.store(out_ptr + rows, (acc / W).to(out_ptr.dtype.element_ty), mask=rmask)


def slice_uncertainty(entropy: torch.Tensor, slice_dim: int) -> torch.Tensor:
    """SPEC 3: U_i = mean entropy over slice i.

    Args:
        entropy (Tensor[B, *S]): any strides; 2D input is one slice per item.
        slice_dim (int): spatial axis of the slices (negative counts from the end).

    Returns:
        Tensor[B, n_slices]: contiguous, entropy's dtype.
    """
    check_device("slice_uncertainty", entropy)
    lay = slice_layout([entropy], [False], slice_dim, 4096)
    ACC, acc_torch = acc_dtype(entropy.dtype)
    partials = torch.empty(lay.B * lay.R * lay.n_wblocks, dtype=acc_torch, device=entropy.device)
    slice_partials_kernel[(lay.n_wblocks, lay.n_rblocks, lay.B)](
        entropy, partials, *lay.dims, *lay.strides[0], 
        ACC=ACC, **lay.tile, num_warps=NUM_WARPS)
    out = torch.empty((lay.B, lay.R), dtype=entropy.dtype, device=entropy.device)
    n_rows = lay.B * lay.R
    slice_mean_kernel[(triton.cdiv(n_rows, _ROWS_BLOCK),)](
        partials, out, n_rows, lay.n_wblocks, lay.W, BLOCK_ROWS=_ROWS_BLOCK, num_warps=4)
    return out


# --------------------------------------------------------------------------- SPEC 4


@triton.jit
def pint_image_partials_kernel(
    logits_ptr,  # [B, C, *S] any strides
    target_ptr,  # [B, *S] any integer dtype
    teacher_ptr,  # [B, C, *S]
    partials_ptr,  # [3, B, R, n_wblocks] ACC per-slice partial sums of (u, ce, mse) (output)
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    R, W, P, Q, n_qblocks,  # slices, voxels per slice (= P * Q merged in-slice sizes), tiles along Q
    logits_b_stride, logits_c_stride, logits_r_stride, logits_p_stride, logits_q_stride,
    target_b_stride, target_r_stride, target_p_stride, target_q_stride,
    teacher_b_stride, teacher_c_stride, teacher_r_stride, teacher_p_stride, teacher_q_stride,
    C: tl.constexpr, HARD: tl.constexpr, NORMALIZE: tl.constexpr,
    SLICE_INNER: tl.constexpr, CHECK: tl.constexpr,  # record bad labels / NaN teacher probs in err_ptr
    ACC: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,  # in-slice tile: BLOCK_W = BLOCK_P * BLOCK_Q
    WIDE: tl.constexpr,  # int64 in-item offsets
):
    pid_w = tl.program_id(0)
    pid_r = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r, p, qi, mask = slice_tile(pid_r, pid_w, R, P, Q, n_qblocks, SLICE_INNER, BLOCK_R, BLOCK_P, BLOCK_Q, WIDE)
    l_off = b * logits_b_stride + (r * logits_r_stride + p * logits_p_stride + qi * logits_q_stride)
    t_off = b * target_b_stride + (r * target_r_stride + p * target_p_stride + qi * target_q_stride)
    q_off = b * teacher_b_stride + (r * teacher_r_stride + p * teacher_p_stride + qi * teacher_q_stride)
    DT: tl.constexpr = logits_ptr.dtype.element_ty
    x = load_rows(logits_ptr, logits_c_stride, l_off, mask, C, DT, ACC)
    t = class_index(tl.load(target_ptr + t_off, mask=mask, other=0), mask, err_ptr, C, CHECK)
    q = load_rows(teacher_ptr, teacher_c_stride, q_off, mask, C, DT, ACC)
    check_nan_rows(q, mask, err_ptr, C, CHECK)
    s, y_hat, ce, mse, u = pint_voxel_terms(x, t, q, C, HARD, NORMALIZE)
    rows = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    plane = tl.num_programs(2).to(tl.int64) * R * tl.num_programs(0)
    base = (b * R + rows) * tl.num_programs(0) + pid_w
    tl.store(partials_ptr + base, sum_per_slice(tl.where(mask, u, 0.0), SLICE_INNER, BLOCK_R, BLOCK_P * BLOCK_Q),
             mask=rmask)
    tl.store(partials_ptr + plane + base,
             sum_per_slice(tl.where(mask, ce, 0.0), SLICE_INNER, BLOCK_R, BLOCK_P * BLOCK_Q), mask=rmask)
    tl.store(partials_ptr + 2 * plane + base,
             sum_per_slice(tl.where(mask, mse, 0.0), SLICE_INNER, BLOCK_R, BLOCK_P * BLOCK_Q), mask=rmask)


@triton.jit
def pint_image_finalize_kernel(
    partials_ptr,  # [3, n_rows, n_wblocks] ACC
    loss_ptr,  # "none": [n_rows] loss; SINGLE: [] loss; else [n_programs] ACC partial sums
    alpha_ptr,  # [n_rows] ACC slice_alpha (output)
    n_rows, n_wblocks, W,  # rows = B * R; W voxels per slice
    divisor,  # int: B * R for "mean", 1 for "sum"
    REDUCE_NONE: tl.constexpr,
    SINGLE: tl.constexpr,  # one program: write the reduced loss directly
    ACC: tl.constexpr, BLOCK_ROWS: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rmask = rows < n_rows
    plane = n_rows * n_wblocks
    su = tl.zeros([BLOCK_ROWS], ACC)
    sce = tl.zeros([BLOCK_ROWS], ACC)
    smse = tl.zeros([BLOCK_ROWS], ACC)
    for j in range(n_wblocks):
        base = rows * n_wblocks + j
        su += tl.load(partials_ptr + base, mask=rmask, other=0.0)
        sce += tl.load(partials_ptr + plane + base, mask=rmask, other=0.0)
        smse += tl.load(partials_ptr + 2 * plane + base, mask=rmask, other=0.0)
    alpha = tl.exp(-(su / W))
    loss = alpha * (sce / W) + (1 - alpha) * (smse / W)
    tl.store(alpha_ptr + rows, alpha, mask=rmask)
    if REDUCE_NONE:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=rmask)
    else:
        total = tl.sum(tl.where(rmask, loss, 0.0), axis=0)
        if SINGLE:
            tl.store(loss_ptr, (total / divisor).to(loss_ptr.dtype.element_ty))
        else:
            tl.store(loss_ptr + pid, total)


def pint_image_loss(logits, target, teacher_prob, hard: bool, normalize_entropy: bool, slice_dim: int,
                    reduction: str):
    """SPEC 4 / PINT Eq. (4)-(5): per slice ``alpha_i * ce_i + (1 - alpha_i) * mse_i``, alpha_i = exp(-U_i).

    Args:
        logits (Tensor[B, C, *S]), target (Tensor[B, *S]), teacher_prob (Tensor[B, C, *S]).
        hard, normalize_entropy: as :func:`pint_pixel_loss`.
        slice_dim (int): spatial axis of the slices; 2D input is one slice per item.
        reduction (str): "mean" | "sum" -> 0-d; "none" -> Tensor[B, n_slices].

    Returns:
        (loss, slice_alpha Tensor[B, n_slices] fp32 (fp64 for fp64 logits)).
    """
    check_device("pint_image_loss", logits)
    teacher_prob = portable_dtype(teacher_prob, logits.dtype)
    B, C = logits.shape[:2]
    lay = slice_layout([logits, target, teacher_prob], [True, False, True], slice_dim, voxel_block(C))
    ACC, acc_torch = acc_dtype(logits.dtype)
    dev = logits.device
    partials = torch.empty(3 * B * lay.R * lay.n_wblocks, dtype=acc_torch, device=dev)
    err = error_buffer(dev)
    pint_image_partials_kernel[(lay.n_wblocks, lay.n_rblocks, B)](
        logits, target, teacher_prob, partials, err, *lay.dims, *lay.strides[0], *lay.strides[1],
        *lay.strides[2], C=C, HARD=bool(hard), NORMALIZE=bool(normalize_entropy),
        CHECK=err is not None, ACC=ACC, **lay.tile,
        num_warps=NUM_WARPS)
    n_rows = B * lay.R
    n_prog = triton.cdiv(n_rows, _ROWS_BLOCK)
    alpha = torch.empty((B, lay.R), dtype=acc_torch, device=dev)
    none = reduction == "none"
    divisor = n_rows if reduction == "mean" else 1
    if none:
        loss = torch.empty((B, lay.R), dtype=logits.dtype, device=dev)
    elif n_prog == 1:
        loss = torch.empty((), dtype=logits.dtype, device=dev)
    else:
        loss = torch.empty(n_prog, dtype=acc_torch, device=dev)
    pint_image_finalize_kernel[(n_prog,)](
        partials, loss, alpha, n_rows, lay.n_wblocks, lay.W, divisor, REDUCE_NONE=none, SINGLE=n_prog == 1,
        ACC=ACC, BLOCK_ROWS=_ROWS_BLOCK, num_warps=4)
    if not none and n_prog > 1:
        loss = finish_reduction(loss, divisor, logits.dtype, ACC)
    return loss, alpha


@triton.jit
def pint_image_loss_backward_kernel(
    grad_ptr,  # REDUCE_NONE: [B, R] any strides; else [] upstream gradient
    logits_ptr,  # [B, C, *S] any strides
    target_ptr,  # [B, *S] any integer dtype
    teacher_ptr,  # [B, C, *S]
    alpha_ptr,  # [B, R] slice_alpha from the forward
    out_ptr,  # [B, C, *S] contiguous, logits dtype (output; strides below in slice order)
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    R, W, P, Q, n_qblocks,  # slices, voxels per slice (= P * Q merged in-slice sizes), tiles along Q
    divisor,  # int: B * R for "mean", 1 for "sum"
    grad_b_stride, grad_r_stride, alpha_b_stride, alpha_r_stride,
    logits_b_stride, logits_c_stride, logits_r_stride, logits_p_stride, logits_q_stride,
    target_b_stride, target_r_stride, target_p_stride, target_q_stride,
    teacher_b_stride, teacher_c_stride, teacher_r_stride, teacher_p_stride, teacher_q_stride,
    out_b_stride, out_c_stride, out_r_stride, out_p_stride, out_q_stride,
    C: tl.constexpr, HARD: tl.constexpr, REDUCE_NONE: tl.constexpr,
    SLICE_INNER: tl.constexpr, CHECK: tl.constexpr,  # record bad labels / NaN teacher probs in err_ptr
    ACC: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,  # in-slice tile: BLOCK_W = BLOCK_P * BLOCK_Q
    WIDE: tl.constexpr,  # int64 in-item offsets
):
    pid_w = tl.program_id(0)
    pid_r = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r, p, qi, mask = slice_tile(pid_r, pid_w, R, P, Q, n_qblocks, SLICE_INNER, BLOCK_R, BLOCK_P, BLOCK_Q, WIDE)
    l_off = b * logits_b_stride + (r * logits_r_stride + p * logits_p_stride + qi * logits_q_stride)
    t_off = b * target_b_stride + (r * target_r_stride + p * target_p_stride + qi * target_q_stride)
    q_off = b * teacher_b_stride + (r * teacher_r_stride + p * teacher_p_stride + qi * teacher_q_stride)
    o_off = b * out_b_stride + (r * out_r_stride + p * out_p_stride + qi * out_q_stride)
    if REDUCE_NONE:
        g = tl.load(grad_ptr + b * grad_b_stride + r * grad_r_stride, mask=mask, other=0.0).to(ACC)
    else:
        g = tl.zeros([BLOCK_R * BLOCK_P * BLOCK_Q], ACC) + tl.load(grad_ptr).to(ACC) / divisor
    g = g / W
    alpha = tl.load(alpha_ptr + b * alpha_b_stride + r * alpha_r_stride, mask=mask, other=0.0).to(ACC)
    DT: tl.constexpr = logits_ptr.dtype.element_ty
    x = load_rows(logits_ptr, logits_c_stride, l_off, mask, C, DT, ACC)
    t = class_index(tl.load(target_ptr + t_off, mask=mask, other=0), mask, err_ptr, C, CHECK)
    q = load_rows(teacher_ptr, teacher_c_stride, q_off, mask, C, DT, ACC)
    check_nan_rows(q, mask, err_ptr, C, CHECK)
    s, y_hat, ce, mse, u = pint_voxel_terms(x, t, q, C, HARD, False)
    g = tl.where(t < 0, float("nan"), g)  # a bad label's voxel: NaN gradient, never a clamp
    store_rows(out_ptr, out_c_stride, o_off, mask, pint_grad_rows(g, alpha, s, y_hat, t, C), C)


def pint_image_loss_backward(grad, logits, target, teacher_prob, slice_alpha, hard: bool, slice_dim: int,
                             reduction: str):
    """Gradient of :func:`pint_image_loss` w.r.t. logits.

    At voxel v of slice i: ``g_i / N_i * (alpha_i * dce + (1 - alpha_i) * dmse)``.

    Args:
        grad (Tensor[] or Tensor[B, n_slices] for "none"): upstream gradient.
        slice_alpha (Tensor[B, n_slices]): from the forward.
        logits, target, teacher_prob, hard, slice_dim, reduction: as the forward.

    Returns:
        Tensor[B, C, *S]: contiguous, logits' dtype.
    """
    check_device("pint_image_loss_backward", logits)
    acc_torch = acc_dtype(logits.dtype)[1]
    teacher_prob = portable_dtype(teacher_prob, logits.dtype)
    grad = portable_dtype(grad, acc_torch)
    slice_alpha = portable_dtype(slice_alpha, acc_torch)
    B, C = logits.shape[:2]
    out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    lay = slice_layout([logits, target, teacher_prob, out], [True, False, True, True], slice_dim, voxel_block(C))
    ACC, _ = acc_dtype(logits.dtype)
    none = reduction == "none"
    g_strides = (grad.stride(0), grad.stride(1)) if none else (0, 0)
    err = error_buffer(logits.device)
    pint_image_loss_backward_kernel[(lay.n_wblocks, lay.n_rblocks, B)](
        grad, logits, target, teacher_prob, slice_alpha, out, err, *lay.dims,
        B * lay.R if reduction == "mean" else 1, *g_strides, slice_alpha.stride(0), slice_alpha.stride(1),
        *lay.strides[0], *lay.strides[1], *lay.strides[2], *lay.strides[3],
        C=C, HARD=bool(hard), REDUCE_NONE=none, CHECK=err is not None, ACC=ACC, **lay.tile, num_warps=NUM_WARPS)
    return out
