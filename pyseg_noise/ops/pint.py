"""PINT's ops (SPEC 1-4): teacher uncertainty, the pixel-wise and image-wise
uncertainty-weighted CE+MSE losses, and the per-slice uncertainty.

Shapes and gradients are registered here once for every backend: fake
functions for ``torch.compile``, and autograd formulas whose backward is its
own op (``*_backward``), so it too dispatches by device.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from pyseg_noise.ops import checks, reference
from pyseg_noise.ops.dispatch import op_runner, ops_of, resolve_backend

__all__ = [
    "teacher_uncertainty",
    "TeacherUncertaintyAccumulator",
    "pint_pixel_loss",
    "slice_uncertainty",
    "pint_image_loss",
]

_PSEUDO_LABELS = ("soft", "hard")


# --------------------------------------------------------------------------
# Shapes (fake tensors) and gradients, shared by the C++ and Triton kernels
# --------------------------------------------------------------------------


def _spatial_map_like(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0],) + tuple(x.shape[2:]))


def _n_slices(shape, slice_dim: int) -> int:
    spatial = tuple(shape[2:])
    return 1 if len(spatial) <= 2 else spatial[slice_dim]


def _pixel_setup_context(ctx, inputs, output):
    logits, target, teacher_prob, hard, normalize_entropy, reduction = inputs
    ctx.save_for_backward(logits, target, teacher_prob)
    ctx.args = (hard, normalize_entropy, reduction)


def _pixel_backward(ctx, grad):
    logits, target, teacher_prob = ctx.saved_tensors
    grad_logits = ops_of(ctx).pint_pixel_loss_backward(grad, logits, target, teacher_prob, *ctx.args)
    return grad_logits, None, None, None, None, None


class _PixelLossGradInForward(torch.autograd.Function):
    """``pint_pixel_loss`` for training on the C++ backend: the forward computes the
    gradient in the same pass as the loss (for a unit upstream gradient), so the
    backward only scales it — in place, and not at all for the usual upstream
    gradient of 1. One pass over the inputs per step instead of two, and the only
    voxel-sized memory held between forward and backward is the gradient the
    backward returns anyway.

    A second backward through a retained graph recomputes the gradient with the
    backward op (the first one consumed the precomputed buffer).
    """

    @staticmethod
    def forward(logits, target, teacher_prob, hard, normalize_entropy, reduction):
        return torch.ops.pyseg_noise.pint_pixel_loss_with_grad(
            logits, target, teacher_prob, hard, normalize_entropy, reduction
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target, teacher_prob, hard, normalize_entropy, reduction = inputs
        ctx.save_for_backward(logits, target, teacher_prob)
        ctx.args = (hard, normalize_entropy, reduction)
        ctx.mark_non_differentiable(output[1])
        ctx.grad_logits = output[1]
        # Otherwise autograd hands the backward a zero-filled gradient-sized
        # tensor for the non-differentiable second output.
        ctx.set_materialize_grads(False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _grad_of_grad_output):
        hard, normalize_entropy, reduction = ctx.args
        grad_logits = ctx.grad_logits
        ctx.grad_logits = None
        if grad is None:  # the loss was not used
            return None, None, None, None, None, None
        if grad_logits is None:
            logits, target, teacher_prob = ctx.saved_tensors
            grad_logits = torch.ops.pyseg_noise.pint_pixel_loss_backward(
                grad, logits, target, teacher_prob, hard, normalize_entropy, reduction
            )
        elif reduction == "none":
            grad_logits.mul_(grad.unsqueeze(1))
        elif grad.item() != 1.0:
            grad_logits.mul_(grad)
        return grad_logits, None, None, None, None, None


def _image_setup_context(ctx, inputs, output):
    logits, target, teacher_prob, hard, normalize_entropy, slice_dim, reduction = inputs
    ctx.save_for_backward(logits, target, teacher_prob, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.args = (hard, slice_dim, reduction)


def _image_backward(ctx, grad, _grad_alpha):
    logits, target, teacher_prob, slice_alpha = ctx.saved_tensors
    hard, slice_dim, reduction = ctx.args
    grad_logits = ops_of(ctx).pint_image_loss_backward(
        grad, logits, target, teacher_prob, slice_alpha, hard, slice_dim, reduction
    )
    return grad_logits, None, None, None, None, None, None


# The schemas exist with or without pyseg_noise._C (pyseg_noise.ops.schema defines them then).
@torch.library.register_fake("pyseg_noise::teacher_uncertainty")
def _(teacher_logits):
    first = teacher_logits[0]
    return first.new_empty(first.shape), _spatial_map_like(first)

@torch.library.register_fake("pyseg_noise::softmax_accumulate_")
def _(prob_sum, logits):
    return None

@torch.library.register_fake("pyseg_noise::prob_entropy")
def _(prob_sum, scale):
    return prob_sum.new_empty(prob_sum.shape), _spatial_map_like(prob_sum)

@torch.library.register_fake("pyseg_noise::pint_pixel_loss")
def _(logits, target, teacher_prob, hard, normalize_entropy, reduction):
    return _spatial_map_like(logits) if reduction == "none" else logits.new_empty(())

@torch.library.register_fake("pyseg_noise::pint_pixel_loss_backward")
def _(grad, logits, target, teacher_prob, hard, normalize_entropy, reduction):
    return logits.new_empty(logits.shape)

@torch.library.register_fake("pyseg_noise::pint_pixel_loss_with_grad")
def _(logits, target, teacher_prob, hard, normalize_entropy, reduction):
    loss = _spatial_map_like(logits) if reduction == "none" else logits.new_empty(())
    return loss, logits.new_empty(logits.shape)

@torch.library.register_fake("pyseg_noise::slice_uncertainty")
def _(entropy, slice_dim):
    n = 1 if entropy.dim() <= 3 else entropy.shape[1:][slice_dim]
    return entropy.new_empty((entropy.shape[0], n))

@torch.library.register_fake("pyseg_noise::pint_image_loss")
def _(logits, target, teacher_prob, hard, normalize_entropy, slice_dim, reduction):
    n = _n_slices(logits.shape, slice_dim)
    alpha_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss = logits.new_empty((logits.shape[0], n)) if reduction == "none" else logits.new_empty(())
    return loss, logits.new_empty((logits.shape[0], n), dtype=alpha_dtype)

@torch.library.register_fake("pyseg_noise::pint_image_loss_backward")
def _(grad, logits, target, teacher_prob, slice_alpha, hard, slice_dim, reduction):
    return logits.new_empty(logits.shape)

torch.library.register_autograd(
    "pyseg_noise::pint_pixel_loss", _pixel_backward, setup_context=_pixel_setup_context
)
torch.library.register_autograd(
    "pyseg_noise::pint_image_loss", _image_backward, setup_context=_image_setup_context
)


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def teacher_uncertainty(teacher_logits: Tensor, *, backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Mean teacher probability and its entropy (SPEC 1, PINT Eq. (1)).

    ``prob = (1/M) sum_m softmax_C(teacher_logits[m])``, ``entropy = -sum_c prob_c log prob_c``.
    Teacher quantities never receive gradients: the input is detached.

    Args:
        teacher_logits (Tensor[M, B, C, *S]): M perturbed passes of the EMA teacher.
        backend: None (by device), "reference", "cpu" or "triton".

    Returns:
        (prob (Tensor[B, C, *S]), entropy (Tensor[B, *S])), in the input dtype.

    Raises:
        TypeError, ValueError: wrong dtype, rank or an empty tensor.
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> prob, u = teacher_uncertainty(torch.randn(4, 2, 2, 16, 16, 8))
    """
    op = "teacher_uncertainty"
    checks.check_logits(op, "teacher_logits", teacher_logits, class_dim=2)
    teacher_logits = teacher_logits.detach()
    which = resolve_backend(op, [teacher_logits], backend)
    if which == "reference":
        return reference.teacher_uncertainty(teacher_logits)
    return tuple(op_runner(op, which)(teacher_logits))


class TeacherUncertaintyAccumulator:
    """Streaming form of :func:`teacher_uncertainty`: adds one teacher pass at a
    time, so the M passes never sit in memory together.

    The running sum of softmax outputs is kept in float32 (float64 for float64
    logits).

    Example:
        >>> acc = TeacherUncertaintyAccumulator()
        >>> for _ in range(4):
        ...     acc.add(teacher(x + noise()))
        >>> prob, entropy = acc.compute()
    """

    def __init__(self, *, backend: Optional[str] = None):
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self._sum: Optional[Tensor] = None
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, logits: Tensor) -> None:
        """Adds ``softmax_C(logits)`` of one pass, logits (Tensor[B, C, *S])."""
        op = "TeacherUncertaintyAccumulator.add"
        checks.check_logits(op, "logits", logits)
        logits = logits.detach()
        if self._sum is None:
            dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
            self._sum = torch.zeros(logits.shape, dtype=dtype, device=logits.device)
        elif logits.shape != self._sum.shape or logits.device != self._sum.device:
            raise ValueError(
                f"{op}: logits must match the first pass's shape {tuple(self._sum.shape)} on {self._sum.device}, "
                f"got {tuple(logits.shape)} on {logits.device}"
            )
        which = resolve_backend("softmax_accumulate_", [logits], self.backend)
        if which == "reference":
            self._sum += torch.softmax(logits.to(self._sum.dtype), dim=1)
        else:
            op_runner("softmax_accumulate_", which)(self._sum, logits)
        self._count += 1

    def compute(self) -> Tuple[Tensor, Tensor]:
        """Returns (prob (Tensor[B, C, *S]), entropy (Tensor[B, *S])) of the passes added so far."""
        if self._count == 0:
            raise RuntimeError("TeacherUncertaintyAccumulator.compute: no pass was added; call add(logits) first")
        which = resolve_backend("prob_entropy", [self._sum], self.backend)
        if which == "reference":
            prob = self._sum / self._count
            return prob, reference.prob_entropy(prob)
        return tuple(op_runner("prob_entropy", which)(self._sum, 1.0 / self._count))


def _check_pint_inputs(op, logits, target, teacher_prob, pseudo_label, reduction):
    checks.check_logits(op, "logits", logits)
    checks.check_target(op, target, logits)
    checks.check_teacher_prob(op, teacher_prob, logits)
    checks.check_same_device(op, logits=logits, target=target, teacher_prob=teacher_prob)
    checks.check_choice(op, "pseudo_label", pseudo_label, _PSEUDO_LABELS)
    checks.check_reduction(op, reduction)


def _check_values(op, which, target, teacher_prob, n_classes):
    if which == "reference":  # the C++ and Triton kernels check inside their own pass
        checks.check_target_values(op, target, n_classes)
        checks.check_teacher_prob_values(op, teacher_prob)


def pint_pixel_loss(
    logits: Tensor,
    target: Tensor,
    teacher_prob: Tensor,
    *,
    pseudo_label: str = "soft",
    reduction: str = "mean",
    normalize_entropy: bool = False,
    backend: Optional[str] = None,
) -> Tensor:
    """PINT's pixel-wise noise-tolerant loss (SPEC 2, PINT Eq. (2)-(3)).

    Per voxel, with ``s = softmax_C(logits)``, ``u = entropy(teacher_prob)``, ``alpha = exp(-u)``:
    ``loss = alpha * CE(s, target) + (1 - alpha) * mean_c (s_c - y_hat_c)^2``, where ``y_hat`` is
    ``teacher_prob`` (soft) or its one-hot argmax (hard, ties to the lowest class).
    Gradients flow to ``logits`` only.

    Args:
        logits (Tensor[B, C, *S]): student logits, float16/bfloat16/float32/float64, any strides.
        target (Tensor[B, *S]): noisy labels, integer dtype, values in [0, C).
        teacher_prob (Tensor[B, C, *S]): mean teacher probabilities (from :func:`teacher_uncertainty`).
        pseudo_label: "soft" or "hard".
        reduction: "mean" (over all voxels of all items), "sum" or "none" (Tensor[B, *S]).
        normalize_entropy: divide u by log C (so alpha spans (0, 1] for any C).
        backend: None (by device), "reference", "cpu" or "triton".

    Raises:
        TypeError, ValueError: wrong dtype, shape, device, label out of range, NaN in teacher_prob.
        RuntimeError: the requested backend cannot run here.

    Example:
        >>> loss = pint_pixel_loss(logits, noisy_label, prob)
        >>> loss.backward()
    """
    op = "pint_pixel_loss"
    _check_pint_inputs(op, logits, target, teacher_prob, pseudo_label, reduction)
    teacher_prob = teacher_prob.detach()
    which = resolve_backend(op, [logits, target, teacher_prob], backend)
    _check_values(op, which, target, teacher_prob, logits.shape[1])
    if which == "reference":
        return reference.pint_pixel_loss(
            logits, target, teacher_prob, pseudo_label=pseudo_label, reduction=reduction,
            normalize_entropy=normalize_entropy,
        )
    args = (logits, target, teacher_prob, pseudo_label == "hard", bool(normalize_entropy), reduction)
    if which == "cpu" and logits.requires_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return _PixelLossGradInForward.apply(*args)[0]
    run = op_runner(op, which, _pixel_setup_context, _pixel_backward)
    return checks.run_checked(op, which, logits.shape[1], run, *args)


def slice_uncertainty(entropy: Tensor, *, slice_dim: int = -1, backend: Optional[str] = None) -> Tensor:
    """Mean entropy of each slice (SPEC 3, PINT §2.2): ``U_i = mean_{v in slice i} u_v``.

    Args:
        entropy (Tensor[B, *S]): per-voxel uncertainty, S = (H, W) or (X, Y, Z).
        slice_dim: the spatial axis along which a volume is cut into images (-1: the last, Z in LA).
            For 2D input each image is one slice.
        backend: None (by device), "reference", "cpu" or "triton".

    Returns:
        Tensor[B, n_slices] in entropy's dtype (no gradient: a teacher quantity).
    """
    op = "slice_uncertainty"
    checks.check_float(op, "entropy", entropy)
    if entropy.dim() not in (3, 4):
        raise ValueError(f"{op}: entropy must be [B, H, W] or [B, X, Y, Z], got shape {tuple(entropy.shape)}")
    if entropy.numel() == 0:
        raise ValueError(f"{op}: entropy is empty (shape {tuple(entropy.shape)})")
    checks.check_size(op, "entropy", entropy)
    slice_dim = checks.normalize_slice_dim(op, slice_dim, entropy.dim() - 1)
    entropy = entropy.detach()
    which = resolve_backend(op, [entropy], backend)
    if which == "reference":
        return reference.slice_uncertainty(entropy, slice_dim=slice_dim)
    return op_runner(op, which)(entropy, slice_dim)


def pint_image_loss(
    logits: Tensor,
    target: Tensor,
    teacher_prob: Tensor,
    *,
    pseudo_label: str = "soft",
    reduction: str = "mean",
    normalize_entropy: bool = False,
    slice_dim: int = -1,
    backend: Optional[str] = None,
) -> Tensor:
    """PINT's image-level noise-tolerant loss (SPEC 4, PINT Eq. (4)-(5)).

    Each slice ``i`` of each item is an image: ``U_i`` is its mean teacher entropy,
    ``alpha_i = exp(-U_i)``, ``loss_i = alpha_i * mean(ce) + (1 - alpha_i) * mean(mse)`` with the
    per-voxel ce and mse of :func:`pint_pixel_loss`.

    Args:
        logits (Tensor[B, C, *S]), target (Tensor[B, *S]), teacher_prob (Tensor[B, C, *S]): as in
            :func:`pint_pixel_loss`; S = (H, W) (one image per item) or (X, Y, Z).
        slice_dim: spatial axis that indexes the images (-1: the last).
        reduction: "mean" over all slices of all items, "sum", or "none" (Tensor[B, n_slices]).

    Raises:
        TypeError, ValueError, RuntimeError: as :func:`pint_pixel_loss`.
    """
    op = "pint_image_loss"
    _check_pint_inputs(op, logits, target, teacher_prob, pseudo_label, reduction)
    if logits.dim() not in (4, 5):
        raise ValueError(f"{op}: logits must be [B, C, H, W] or [B, C, X, Y, Z], got shape {tuple(logits.shape)}")
    slice_dim = checks.normalize_slice_dim(op, slice_dim, logits.dim() - 2)
    teacher_prob = teacher_prob.detach()
    which = resolve_backend(op, [logits, target, teacher_prob], backend)
    _check_values(op, which, target, teacher_prob, logits.shape[1])
    if which == "reference":
        return reference.pint_image_loss(
            logits, target, teacher_prob, pseudo_label=pseudo_label, reduction=reduction,
            normalize_entropy=normalize_entropy, slice_dim=slice_dim,
        )
    run = op_runner(op, which, _image_setup_context, _image_backward)
    loss, _ = checks.run_checked(op, which, logits.shape[1], run, logits, target, teacher_prob, pseudo_label == "hard",
                                 bool(normalize_entropy), slice_dim, reduction)
    return loss
