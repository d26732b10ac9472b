"""Triton kernels of TSMAN (SPEC 5-6): loss attention and attended cross-entropy.

Loss attention is computed as
  1. one pass over both streams' logits writing a compact disagreement map
     ``d = argmax a != argmax b`` as uint8 ``[B, *S]`` (contiguous);
  2. one separable 1-D Gaussian pass per smoothed axis over that map (zero
     padding; intermediate maps in the accumulation dtype), the last pass
     clamping to [0, 1] and casting to the logits' dtype.
``tsman_loss`` fuses the cross-entropy into both ends: pass 1 also writes
``ce_a + ce_b`` (so the logits are read once), and the last smoothing pass
multiplies it by the attention it has just produced and reduces.

Launchers take exactly their schema's positional arguments (see
``csrc/ops.cpp``), trust validated arguments, accept any input strides and
return new contiguous tensors in the logits' dtype.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .class_rows import argmax_rows, class_index, cross_entropy_rows, load_rows, softmax_rows, store_rows
from .launch import NUM_WARPS, acc_dtype, check_device, portable_dtype, split_float, voxel_block
from .reduction import finish_reduction
from .value_errors import error_buffer
from .voxel_layout import grid_layout, voxel_layout, voxel_tile

__all__ = [
    "loss_attention",
    "attended_cross_entropy",
    "attended_cross_entropy_backward",
    "tsman_loss",
    "tsman_loss_backward",
]

_MAP_BLOCK = 1024  # voxels per program of the smoothing passes


# --------------------------------------------------------------------------- SPEC 5


@triton.jit
def disagreement_kernel(
    a_ptr,  # [B, C, *S] stream-a logits, any strides
    b_ptr,  # [B, C, *S] stream-b logits, any strides
    target_ptr,  # [B, *S] integer labels (FUSE_CE only)
    d_ptr,  # [B, *S] contiguous uint8: argmax a != argmax b (output)
    ce_ptr,  # [B, *S] contiguous ACC: ce_a + ce_b (output, FUSE_CE only)
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    a_b_stride, a_c_stride, a_s0_stride, a_s1_stride, a_s2_stride,
    b_b_stride, b_c_stride, b_s0_stride, b_s1_stride, b_s2_stride,
    target_b_stride, target_s0_stride, target_s1_stride, target_s2_stride,
    C: tl.constexpr,
    FUSE_CE: tl.constexpr,  # also write ce_a + ce_b
    CHECK: tl.constexpr,  # record bad labels in err_ptr
    ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    bi = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    a_off = bi * a_b_stride + (i0 * a_s0_stride + i1 * a_s1_stride + i2 * a_s2_stride)
    b_off = bi * b_b_stride + (i0 * b_s0_stride + i1 * b_s1_stride + i2 * b_s2_stride)
    xa = load_rows(a_ptr, a_c_stride, a_off, vmask, C, a_ptr.dtype.element_ty, ACC)
    xb = load_rows(b_ptr, b_c_stride, b_off, vmask, C, b_ptr.dtype.element_ty, ACC)
    d = argmax_rows(xa, C) != argmax_rows(xb, C)
    tl.store(d_ptr + bi * n_voxels + v, d.to(tl.uint8), mask=vmask)
    if FUSE_CE:
        t_off = bi * target_b_stride + (i0 * target_s0_stride + i1 * target_s1_stride + i2 * target_s2_stride)
        t = class_index(tl.load(target_ptr + t_off, mask=vmask, other=0), vmask, err_ptr, C, CHECK)
        _sa, ce_a = cross_entropy_rows(xa, t, C)
        _sb, ce_b = cross_entropy_rows(xb, t, C)
        ce = ce_a + ce_b
        tl.store(ce_ptr + bi * n_voxels + v, ce, mask=vmask)


@triton.jit
def smooth_axis_kernel(
    src_ptr,  # [B * N] contiguous map: uint8 disagreement or ACC partly smoothed
    dst_ptr,  # [B * N] contiguous map: ACC (not LAST) or attention in logits dtype (LAST)
    ce_ptr,  # [B * N] ACC ce_a + ce_b (LAST and FUSE_CE only)
    loss_ptr,  # REDUCE_NONE: [B * N] loss; else [n_programs] ACC partial sums (LAST and FUSE_CE only)
    D0, D1, D2, n_t1, n_t2,  # the map as (outer, smoothed axis, inner); tiles along D1, D2
    sigma2_hi, sigma2_lo,  # Gaussian variance = hi + lo
    TAPS: tl.constexpr,  # 2 * (kernel_size // 2) + 1
    LAST: tl.constexpr,  # clamp to [0, 1], cast, and (FUSE_CE) weight the ce
    FUSE_CE: tl.constexpr, REDUCE_NONE: tl.constexpr,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 offsets (the map has >= 2**31 elements)
):
    pid = tl.program_id(0)
    # a = position along the smoothed axis, from the tile: no division per voxel
    _i0, a, _i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    sigma2 = tl.cast(sigma2_hi, ACC) + tl.cast(sigma2_lo, ACC)
    acc = tl.zeros([BLOCK], ACC)
    norm = tl.zeros([], ACC)
    for j in tl.static_range(TAPS):
        # weights exp(-x^2 / (2 sigma2)), x = -(TAPS//2)..TAPS//2, normalized by their sum below
        w = tl.exp(-((j - TAPS // 2) * (j - TAPS // 2)) / (2 * sigma2))
        norm += w
        nb = a + (j - TAPS // 2)
        ok = vmask & (nb >= 0) & (nb < D1)
        x = tl.load(src_ptr + v + (j - TAPS // 2) * D2, mask=ok, other=0)
        acc += w * x.to(ACC)
    acc = acc / norm
    if LAST:
        att = tl.minimum(tl.maximum(acc, 0.0), 1.0).to(dst_ptr.dtype.element_ty)
        tl.store(dst_ptr + v, att, mask=vmask)
        if FUSE_CE:
            # the rounded attention, as attended_cross_entropy sees the stored map
            loss = att.to(ACC) * tl.load(ce_ptr + v, mask=vmask, other=0.0)
            if REDUCE_NONE:
                tl.store(loss_ptr + v, loss.to(loss_ptr.dtype.element_ty), mask=vmask)
            else:
                tl.store(loss_ptr + pid, tl.sum(tl.where(vmask, loss, 0.0), axis=0))
    else:
        tl.store(dst_ptr + v, acc, mask=vmask)


def _smoothed_axes(n: int, spatial_dims: int, slice_dim: int) -> list[int]:
    axes = list(range(n))
    if spatial_dims == 2 and n == 3:
        axes.remove(slice_dim % n)
    return axes


def _attention(logits_a, logits_b, target, sigma2, kernel_size, spatial_dims, slice_dim, reduction):
    """Shared body of loss_attention (target None) and tsman_loss -> (attention, loss or None)."""
    B, C = logits_a.shape[:2]
    S = list(logits_a.shape[2:])
    fuse = target is not None
    tensors = [logits_a, logits_b] + ([target] if fuse else [])
    lay = voxel_layout(tensors, [True, True, False][:len(tensors)], voxel_block(C))
    t_strides = lay.strides[2] if fuse else (0, 0, 0, 0)
    ACC, acc_torch = acc_dtype(logits_a.dtype)
    dev = logits_a.device
    total = B * lay.N
    d = torch.empty(total, dtype=torch.uint8, device=dev)
    ce = torch.empty(total if fuse else 1, dtype=acc_torch, device=dev)
    err = error_buffer(dev) if fuse else None
    disagreement_kernel[(lay.n_tiles, B)](
        logits_a, logits_b, target if fuse else d, d, ce, err, lay.N, *lay.dims, *lay.strides[0],
        *lay.strides[1], *t_strides, C=C, FUSE_CE=fuse, CHECK=err is not None, ACC=ACC, **lay.tile,
        num_warps=NUM_WARPS)

    taps = 2 * (int(kernel_size) // 2) + 1
    axes = _smoothed_axes(len(S), spatial_dims, slice_dim)
    # (outer, axis_len, inner) of each 1-D pass over the contiguous map; kernel_size 1 = one copy pass
    passes = ([(math.prod(S[:ax]) * B, S[ax], math.prod(S[ax + 1:])) for ax in axes] if taps > 1 and axes
              else [(total, 1, 1)])
    taps = taps if taps > 1 and axes else 1
    layouts = [grid_layout(1, dims, [], _MAP_BLOCK, extra_extent=total) for dims in passes]
    attention = torch.empty((B, *S), dtype=logits_a.dtype, device=dev)
    none = reduction == "none"
    if not fuse:
        loss = ce
    elif none:
        loss = torch.empty((B, *S), dtype=logits_a.dtype, device=dev)
    else:
        loss = torch.empty(layouts[-1].n_tiles, dtype=acc_torch, device=dev)
    hi, lo = split_float(sigma2)
    src = d
    for k, grid in enumerate(layouts):
        last = k == len(layouts) - 1
        dst = attention if last else torch.empty(total, dtype=acc_torch, device=dev)
        smooth_axis_kernel[(grid.n_tiles,)](
            src, dst, ce, loss, *grid.dims, hi, lo, TAPS=taps, LAST=last,
            FUSE_CE=fuse, REDUCE_NONE=none, ACC=ACC, **grid.tile, num_warps=4)
        src = dst
    if not fuse:
        return attention, None
    if none:
        return attention, loss
    return attention, finish_reduction(loss, total if reduction == "mean" else 1, logits_a.dtype, ACC)


def loss_attention(logits_a, logits_b, sigma2: float, kernel_size: int, spatial_dims: int, slice_dim: int):
    """SPEC 5 / TSMAN Eq. (7): Gaussian-smoothed disagreement of the two streams' argmax.

    Args:
        logits_a, logits_b (Tensor[B, C, *S]): any strides.
        sigma2 (float): Gaussian variance. kernel_size (int): odd window size.
        spatial_dims (int): 2 = smooth within each slice (all spatial axes but slice_dim
            for 3D input, both for 2D); 3 = all three axes.
        slice_dim (int): spatial axis of the slices.

    Returns:
        Tensor[B, *S]: attention in [0, 1], contiguous, logits_a's dtype.
    """
    check_device("loss_attention", logits_a)
    attention, _ = _attention(logits_a, logits_b, None, sigma2, kernel_size, spatial_dims, slice_dim, "none")
    return attention


def tsman_loss(logits_a, logits_b, target, sigma2: float, kernel_size: int, spatial_dims: int, slice_dim: int,
               reduction: str):
    """Both streams' attended cross-entropy with one shared attention map (SPEC 6).

    Args:
        logits_a, logits_b (Tensor[B, C, *S]), target (Tensor[B, *S] integer).
        sigma2, kernel_size, spatial_dims, slice_dim: as :func:`loss_attention`.
        reduction (str): "mean" | "sum" -> 0-d; "none" -> Tensor[B, *S].

    Returns:
        (loss, attention Tensor[B, *S]) in logits_a's dtype.
    """
    check_device("tsman_loss", logits_a)
    attention, loss = _attention(logits_a, logits_b, target, sigma2, kernel_size, spatial_dims, slice_dim,
                                 reduction)
    return loss, attention


# --------------------------------------------------------------------------- SPEC 6


@triton.jit
def attended_ce_kernel(
    logits_ptr,  # [B, C, *S] any strides
    target_ptr,  # [B, *S] integer labels
    att_ptr,  # [B, *S] attention, any float dtype and strides
    out_ptr,  # REDUCE_NONE: [B, *S] contiguous loss; else [B * n_blocks] ACC partial sums
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    logits_b_stride, logits_c_stride, logits_s0_stride, logits_s1_stride, logits_s2_stride,
    target_b_stride, target_s0_stride, target_s1_stride, target_s2_stride,
    att_b_stride, att_s0_stride, att_s1_stride, att_s2_stride,
    C: tl.constexpr, REDUCE_NONE: tl.constexpr, CHECK: tl.constexpr,  # record bad labels in err_ptr
    ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    pid_v = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    l_off = b * logits_b_stride + (i0 * logits_s0_stride + i1 * logits_s1_stride + i2 * logits_s2_stride)
    t_off = b * target_b_stride + (i0 * target_s0_stride + i1 * target_s1_stride + i2 * target_s2_stride)
    w_off = b * att_b_stride + (i0 * att_s0_stride + i1 * att_s1_stride + i2 * att_s2_stride)
    DT: tl.constexpr = logits_ptr.dtype.element_ty
    x = load_rows(logits_ptr, logits_c_stride, l_off, vmask, C, DT, ACC)
    t = class_index(tl.load(target_ptr + t_off, mask=vmask, other=0), vmask, err_ptr, C, CHECK)
    att = tl.load(att_ptr + w_off, mask=vmask, other=0.0).to(DT).to(ACC)  # as the reference: rounded first
    _s, ce = cross_entropy_rows(x, t, C)
    loss = att * ce
    if REDUCE_NONE:
        tl.store(out_ptr + b * n_voxels + v, loss.to(out_ptr.dtype.element_ty), mask=vmask)
    else:
        pid = tl.program_id(1) * tl.num_programs(0) + pid_v
        tl.store(out_ptr + pid, tl.sum(tl.where(vmask, loss, 0.0), axis=0))


def attended_cross_entropy(logits, target, attention, reduction: str):
    """SPEC 6 / TSMAN Eq. (3)-(6): ``attention_v * ce_v`` (attention a constant).

    Args:
        logits (Tensor[B, C, *S]), target (Tensor[B, *S] integer), attention (Tensor[B, *S]).
        reduction (str): "mean" | "sum" -> 0-d; "none" -> Tensor[B, *S].
    """
    check_device("attended_cross_entropy", logits)
    attention = portable_dtype(attention, logits.dtype)
    B, C = logits.shape[:2]
    lay = voxel_layout([logits, target, attention], [True, False, False], voxel_block(C))
    ACC, acc_torch = acc_dtype(logits.dtype)
    n_blocks = lay.n_tiles
    none = reduction == "none"
    if none:
        out = torch.empty((B, *logits.shape[2:]), dtype=logits.dtype, device=logits.device)
    else:
        out = torch.empty(B * n_blocks, dtype=acc_torch, device=logits.device)
    err = error_buffer(logits.device)
    attended_ce_kernel[(n_blocks, B)](
        logits, target, attention, out, err, lay.N, *lay.dims, *lay.strides[0], *lay.strides[1],
        *lay.strides[2], C=C, REDUCE_NONE=none, CHECK=err is not None, ACC=ACC, **lay.tile,
        num_warps=NUM_WARPS)
    if none:
        return out
    return finish_reduction(out, B * lay.N if reduction == "mean" else 1, logits.dtype, ACC)


@triton.jit
def ce_grad_rows(coef, s, t, C: tl.constexpr):
    """Rows coef * (s_k - [k = t]): the cross-entropy gradient scaled per voxel."""
    rows = ()
    for c in tl.static_range(C):
        rows = rows + (coef * (s[c] - (t == c).to(coef.dtype)),)
    return rows


@triton.jit
def attended_ce_backward_kernel(
    grad_ptr,  # REDUCE_NONE: [B, *S] any strides; else [] upstream gradient
    a_ptr,  # [B, C, *S] logits (stream a), any strides
    b_ptr,  # [B, C, *S] stream-b logits (TWO only)
    target_ptr,  # [B, *S] integer labels
    att_ptr,  # [B, *S] attention
    out_a_ptr,  # [B, C, *S] contiguous gradient w.r.t. a (output)
    out_b_ptr,  # [B, C, *S] contiguous gradient w.r.t. b (output, TWO only)
    err_ptr,  # [2] int64 error buffer (value_errors.py), CHECK only
    n_voxels,  # N = prod(S)
    D0, D1, D2, n_t1, n_t2,  # merged spatial sizes; tiles along D1 and D2 (voxel_layout.py)
    divisor,  # int: B * N for "mean", 1 for "sum"
    a_b_stride, a_c_stride, a_s0_stride, a_s1_stride, a_s2_stride,
    b_b_stride, b_c_stride, b_s0_stride, b_s1_stride, b_s2_stride,
    target_b_stride, target_s0_stride, target_s1_stride, target_s2_stride,
    att_b_stride, att_s0_stride, att_s1_stride, att_s2_stride,
    grad_b_stride, grad_s0_stride, grad_s1_stride, grad_s2_stride,
    C: tl.constexpr,
    TWO: tl.constexpr,  # both streams (tsman_loss_backward) in the same pass
    REDUCE_NONE: tl.constexpr, CHECK: tl.constexpr,  # record bad labels in err_ptr
    ACC: tl.constexpr, BLOCK: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,  # the tile: BLOCK = T0 * T1 * T2
    WIDE: tl.constexpr,  # int64 in-item offsets (an item spans >= 2**31 elements)
   
):
    bi = tl.program_id(1).to(tl.int64)
    i0, i1, i2, v, vmask = voxel_tile(D0, D1, D2, n_t1, n_t2, T0, T1, T2, WIDE)
    a_off = bi * a_b_stride + (i0 * a_s0_stride + i1 * a_s1_stride + i2 * a_s2_stride)
    t_off = bi * target_b_stride + (i0 * target_s0_stride + i1 * target_s1_stride + i2 * target_s2_stride)
    w_off = bi * att_b_stride + (i0 * att_s0_stride + i1 * att_s1_stride + i2 * att_s2_stride)
    if REDUCE_NONE:
        g_off = bi * grad_b_stride + (i0 * grad_s0_stride + i1 * grad_s1_stride + i2 * grad_s2_stride)
        g = tl.load(grad_ptr + g_off, mask=vmask, other=0.0).to(ACC)
    else:
        g = tl.zeros([BLOCK], ACC) + tl.load(grad_ptr).to(ACC) / divisor
    att = tl.load(att_ptr + w_off, mask=vmask, other=0.0).to(a_ptr.dtype.element_ty).to(ACC)
    t = class_index(tl.load(target_ptr + t_off, mask=vmask, other=0), vmask, err_ptr, C, CHECK)
    coef = tl.where(t < 0, float("nan"), g * att)  # a bad label's voxel: NaN gradient, never a clamp
    out_off = bi * C * n_voxels + v
    sa, _lse_a = softmax_rows(load_rows(a_ptr, a_c_stride, a_off, vmask, C, a_ptr.dtype.element_ty, ACC), C)
    store_rows(out_a_ptr, n_voxels, out_off, vmask, ce_grad_rows(coef, sa, t, C), C)
    if TWO:
        b_off = bi * b_b_stride + (i0 * b_s0_stride + i1 * b_s1_stride + i2 * b_s2_stride)
        sb, _lse_b = softmax_rows(load_rows(b_ptr, b_c_stride, b_off, vmask, C, b_ptr.dtype.element_ty, ACC), C)
        store_rows(out_b_ptr, n_voxels, out_off, vmask, ce_grad_rows(coef, sb, t, C), C)


def _attended_backward(grad, logits_a, logits_b, target, attention, reduction):
    two = logits_b is not None
    none = reduction == "none"
    attention = portable_dtype(attention, logits_a.dtype)
    grad = portable_dtype(grad, acc_dtype(logits_a.dtype)[1])
    B, C = logits_a.shape[:2]
    tensors = [logits_a, logits_b if two else logits_a, target, attention] + ([grad] if none else [])
    lay = voxel_layout(tensors, [True, True, False, False, False][:len(tensors)], voxel_block(C))
    g_strides = lay.strides[4] if none else (0, 0, 0, 0)
    ACC, _ = acc_dtype(logits_a.dtype)
    grad_a = torch.empty(logits_a.shape, dtype=logits_a.dtype, device=logits_a.device)
    grad_b = torch.empty(logits_b.shape, dtype=logits_b.dtype, device=logits_b.device) if two else grad_a
    err = error_buffer(logits_a.device)
    attended_ce_backward_kernel[(lay.n_tiles, B)](
        grad, logits_a, logits_b if two else logits_a, target, attention, grad_a, grad_b, err, lay.N, *lay.dims,
        B * lay.N if reduction == "mean" else 1, *lay.strides[0], *lay.strides[1], *lay.strides[2],
        *lay.strides[3], *g_strides, C=C, TWO=two, REDUCE_NONE=none, CHECK=err is not None, ACC=ACC, **lay.tile,
        num_warps=NUM_WARPS)
    return grad_a, grad_b


def attended_cross_entropy_backward(grad, logits, target, attention, reduction: str):
    """Gradient of :func:`attended_cross_entropy` w.r.t. logits: ``g_v * attention_v * (s - onehot(t))``.

    Args:
        grad (Tensor[] or Tensor[B, *S] for "none"): upstream gradient.
        logits, target, attention, reduction: as the forward.

    Returns:
        Tensor[B, C, *S]: contiguous, logits' dtype.
    """
    check_device("attended_cross_entropy_backward", logits)
    return _attended_backward(grad, logits, None, target, attention, reduction)[0]


def tsman_loss_backward(grad, logits_a, logits_b, target, attention, reduction: str):
    """Gradients of :func:`tsman_loss` w.r.t. both streams, in one pass over the voxels.

    Args:
        grad (Tensor[] or Tensor[B, *S] for "none"): upstream gradient of the summed loss.
        logits_a, logits_b, target: as the forward. attention (Tensor[B, *S]): its second output.

    Returns:
        (grad_a, grad_b) Tensor[B, C, *S]: contiguous, the logits' dtype.
    """
    check_device("tsman_loss_backward", logits_a)
    return _attended_backward(grad, logits_a, logits_b, target, attention, reduction)
