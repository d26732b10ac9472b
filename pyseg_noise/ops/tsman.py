"""TSMAN's ops (SPEC 5-6): the loss attention of two streams, the attended
cross-entropy, and the fused two-stream TSMAN loss.

Shapes and gradients are registered here once for every backend: fake
functions for ``torch.compile``, and autograd formulas whose backward is its
own op (``*_backward``), so it too dispatches by device.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from pyseg_noise.ops import checks, reference
from pyseg_noise.ops.dispatch import op_runner, ops_of, resolve_backend

__all__ = ["loss_attention", "attended_cross_entropy", "tsman_loss"]


# --------------------------------------------------------------------------
# Shapes (fake tensors) and gradients, shared by the C++ and Triton kernels
# --------------------------------------------------------------------------


def _spatial_map_like(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0],) + tuple(x.shape[2:]))


def _attention_setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(output)


def _attention_backward(ctx, _grad):
    # The attention is a selector, not a function to train through (SPEC 5).
    return None, None, None, None, None, None


def _ce_setup_context(ctx, inputs, output):
    logits, target, attention, reduction = inputs
    ctx.save_for_backward(logits, target, attention)
    ctx.reduction = reduction


def _ce_backward(ctx, grad):
    logits, target, attention = ctx.saved_tensors
    grad_logits = ops_of(ctx).attended_cross_entropy_backward(grad, logits, target, attention, ctx.reduction)
    # attention is a constant (SPEC 6): no gradient flows into it.
    return grad_logits, None, None, None


def _tsman_setup_context(ctx, inputs, output):
    logits_a, logits_b, target, *_, reduction = inputs
    attention = output[1]
    ctx.save_for_backward(logits_a, logits_b, target, attention)
    ctx.mark_non_differentiable(attention)
    ctx.reduction = reduction


def _tsman_backward(ctx, grad, _grad_attention):
    logits_a, logits_b, target, attention = ctx.saved_tensors
    grad_a, grad_b = ops_of(ctx).tsman_loss_backward(grad, logits_a, logits_b, target, attention, ctx.reduction)
    return grad_a, grad_b, None, None, None, None, None, None


# The schemas exist with or without pyseg_noise._C (pyseg_noise.ops.schema defines them then).
@torch.library.register_fake("pyseg_noise::loss_attention")
def _(logits_a, logits_b, sigma2, kernel_size, spatial_dims, slice_dim):
    return _spatial_map_like(logits_a)

@torch.library.register_fake("pyseg_noise::attended_cross_entropy")
def _(logits, target, attention, reduction):
    return _spatial_map_like(logits) if reduction == "none" else logits.new_empty(())

@torch.library.register_fake("pyseg_noise::attended_cross_entropy_backward")
def _(grad, logits, target, attention, reduction):
    return logits.new_empty(logits.shape)

@torch.library.register_fake("pyseg_noise::tsman_loss")
def _(logits_a, logits_b, target, sigma2, kernel_size, spatial_dims, slice_dim, reduction):
    loss = _spatial_map_like(logits_a) if reduction == "none" else logits_a.new_empty(())
    return loss, _spatial_map_like(logits_a)

@torch.library.register_fake("pyseg_noise::tsman_loss_backward")
def _(grad, logits_a, logits_b, target, attention, reduction):
    return logits_a.new_empty(logits_a.shape), logits_b.new_empty(logits_b.shape)

torch.library.register_autograd(
    "pyseg_noise::loss_attention", _attention_backward, setup_context=_attention_setup_context
)
torch.library.register_autograd(
    "pyseg_noise::attended_cross_entropy", _ce_backward, setup_context=_ce_setup_context
)
torch.library.register_autograd("pyseg_noise::tsman_loss", _tsman_backward, setup_context=_tsman_setup_context)


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _check_streams(op: str, logits_a, logits_b) -> None:
    checks.check_logits(op, "logits_a", logits_a)
    checks.check_logits(op, "logits_b", logits_b)
    if logits_a.dim() not in (4, 5):
        raise ValueError(
            f"{op}: logits_a must be [B, C, H, W] or [B, C, X, Y, Z], got shape {tuple(logits_a.shape)}"
        )
    if logits_b.shape != logits_a.shape:
        raise ValueError(
            f"{op}: logits_b must have the shape of logits_a {tuple(logits_a.shape)}, got {tuple(logits_b.shape)}"
        )
    if logits_b.dtype != logits_a.dtype:
        raise TypeError(f"{op}: logits_b must have the dtype of logits_a ({logits_a.dtype}), got {logits_b.dtype}")


def _check_values(op: str, which: str, target: Tensor, n_classes: int) -> None:
    if which == "reference":  # the C++ and Triton kernels check inside their own pass
        checks.check_target_values(op, target, n_classes)


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def loss_attention(
    logits_a: Tensor,
    logits_b: Tensor,
    *,
    sigma2: float = 0.5,
    kernel_size: int = 3,
    spatial_dims: int = 2,
    slice_dim: int = -1,
    backend: Optional[str] = None,
) -> Tensor:
    """TSMAN's loss attention (SPEC 5, TSMAN Eq. (7)): where the two streams disagree, smoothed.

    ``d_v = [argmax_C logits_a_v != argmax_C logits_b_v]`` (ties go to the lowest class), then
    ``attention = w * d`` with ``w`` a normalized Gaussian (1-D weights ``exp(-x^2 / (2 sigma2))``,
    ``x = -(k//2)..k//2``, summing to 1), separable, zero padding outside the volume. With the
    defaults a single disagreeing voxel spreads into a 3x3 in-plane spot whose centre is 0.332.

    Args:
        logits_a (Tensor[B, C, *S]): logits of the first stream, S = (H, W) or (X, Y, Z).
        logits_b (Tensor[B, C, *S]): logits of the second stream, same shape and dtype.
        sigma2: variance of the Gaussian, > 0.
        kernel_size: odd kernel size >= 1 (1: no smoothing, the attention is the binary XOR).
        spatial_dims: 2 smooths within each slice (every spatial axis except ``slice_dim``; both
            axes of 2D input), as the paper's 3x3 kernel; 3 smooths over the volume (3D input only).
        slice_dim: the spatial axis that indexes the slices of 3D input (-1: the last).
        backend: None (by device), "reference", "cpu" or "triton".

    Returns:
        attention (Tensor[B, *S]) in [0, 1], dtype of ``logits_a``; it carries no gradient.

    Raises:
        TypeError, ValueError: wrong dtype, rank, shapes or devices that differ, an empty tensor,
            an even ``kernel_size``, ``sigma2 <= 0``, ``spatial_dims`` not 2 or 3, a bad ``slice_dim``.
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> att = loss_attention(logits_a, logits_b)  # Tensor[B, X, Y, Z]
    """
    op = "loss_attention"
    _check_streams(op, logits_a, logits_b)
    checks.check_same_device(op, logits_a=logits_a, logits_b=logits_b)
    slice_dim = checks.check_smoothing(op, sigma2, kernel_size, spatial_dims, slice_dim, logits_a.dim() - 2)
    logits_a, logits_b = logits_a.detach(), logits_b.detach()
    which = resolve_backend(op, [logits_a, logits_b], backend)
    if which == "reference":
        return reference.loss_attention(
            logits_a, logits_b, sigma2=sigma2, kernel_size=kernel_size, spatial_dims=spatial_dims, slice_dim=slice_dim
        )
    run = op_runner(op, which)
    return run(logits_a, logits_b, float(sigma2), kernel_size, spatial_dims, slice_dim)


def attended_cross_entropy(
    logits: Tensor,
    target: Tensor,
    attention: Tensor,
    *,
    reduction: str = "mean",
    backend: Optional[str] = None,
) -> Tensor:
    """Cross-entropy weighted per voxel by a constant attention map (SPEC 6, TSMAN Eq. (3)-(6)).

    ``loss_v = attention_v * (-log softmax_C(logits_v)[target_v])``; the attention is treated as a
    constant, so ``d loss / d logits = attention * d ce / d logits`` and ``attention`` gets no gradient.

    Args:
        logits (Tensor[B, C, *S]): float16/bfloat16/float32/float64, any strides, 1-3 spatial axes.
        target (Tensor[B, *S]): labels, integer dtype, values in [0, C).
        attention (Tensor[B, *S]): per-voxel weights (e.g. from :func:`loss_attention`), floating;
            cast to the dtype of ``logits``.
        reduction: "mean" (over all voxels of all items), "sum" or "none" (Tensor[B, *S]).
        backend: None (by device), "reference", "cpu" or "triton".

    Raises:
        TypeError, ValueError: wrong dtype, shape, device, label out of range.
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> loss = attended_cross_entropy(logits, target, loss_attention(logits, other_logits))
        >>> loss.backward()
    """
    op = "attended_cross_entropy"
    checks.check_logits(op, "logits", logits)
    checks.check_target(op, target, logits)
    checks.check_float(op, "attention", attention)
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(attention.shape) != expected:
        raise ValueError(
            f"{op}: attention must be [B, *S] = {expected} to match logits {tuple(logits.shape)}, "
            f"got {tuple(attention.shape)}"
        )
    checks.check_same_device(op, logits=logits, target=target, attention=attention)
    checks.check_reduction(op, reduction)
    attention = attention.detach()
    which = resolve_backend(op, [logits, target, attention], backend)
    _check_values(op, which, target, logits.shape[1])
    if which == "reference":
        return reference.attended_cross_entropy(logits, target, attention, reduction=reduction)
    run = op_runner(op, which, _ce_setup_context, _ce_backward)
    return checks.run_checked(op, which, logits.shape[1], run, logits, target, attention, reduction)


def tsman_loss(
    logits_a: Tensor,
    logits_b: Tensor,
    target: Tensor,
    *,
    sigma2: float = 0.5,
    kernel_size: int = 3,
    spatial_dims: int = 2,
    slice_dim: int = -1,
    reduction: str = "mean",
    return_attention: bool = False,
    backend: Optional[str] = None,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """TSMAN's two-stream loss (SPEC 6, TSMAN Eq. (6)) with one shared loss attention (Eq. (7)).

    ``att = loss_attention(logits_a, logits_b)``, then
    ``attended_cross_entropy(logits_a, target, att) + attended_cross_entropy(logits_b, target, att)``.
    Fused: after the attention map, one pass over the voxels computes both streams' attended CE,
    and the backward writes both gradients in one pass.

    Args:
        logits_a (Tensor[B, C, *S]), logits_b (Tensor[B, C, *S]): the two sub-networks' logits, same
            shape and dtype, S = (H, W) or (X, Y, Z). Both receive gradients.
        target (Tensor[B, *S]): noisy labels, integer dtype, values in [0, C).
        sigma2, kernel_size, spatial_dims, slice_dim: the Gaussian of :func:`loss_attention`.
        reduction: "mean" (each stream's mean over all voxels, summed), "sum" or "none" (Tensor[B, *S]).
        return_attention: also return the attention map (for logging).
        backend: None (by device), "reference", "cpu" or "triton".

    Returns:
        loss, or (loss, attention (Tensor[B, *S])) with ``return_attention=True``.

    Raises:
        TypeError, ValueError: as :func:`loss_attention` and :func:`attended_cross_entropy`.
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> loss, att = tsman_loss(logits_a, logits_b, noisy_label, return_attention=True)
        >>> loss.backward()
    """
    op = "tsman_loss"
    _check_streams(op, logits_a, logits_b)
    checks.check_target(op, target, logits_a)
    checks.check_same_device(op, logits_a=logits_a, logits_b=logits_b, target=target)
    checks.check_reduction(op, reduction)
    slice_dim = checks.check_smoothing(op, sigma2, kernel_size, spatial_dims, slice_dim, logits_a.dim() - 2)
    which = resolve_backend(op, [logits_a, logits_b, target], backend)
    _check_values(op, which, target, logits_a.shape[1])
    if which == "reference":
        loss, attention = reference.tsman_loss(
            logits_a, logits_b, target, sigma2=sigma2, kernel_size=kernel_size, spatial_dims=spatial_dims,
            slice_dim=slice_dim, reduction=reduction,
        )
    else:
        run = op_runner(op, which, _tsman_setup_context, _tsman_backward)
        loss, attention = checks.run_checked(
            op, which, logits_a.shape[1], run,
            logits_a, logits_b, target, float(sigma2), kernel_size, spatial_dims, slice_dim, reduction,
        )
    return (loss, attention) if return_attention else loss
