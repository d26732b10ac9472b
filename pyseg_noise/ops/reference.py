"""Eager PyTorch reference of every op: the executable form of SPEC.md.

Readable first, fast never. Each function computes in the input dtype except
where noted; tests call it on float64 copies. Backends must match these
numbers (forward and gradients) on every supported shape, stride and dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "teacher_uncertainty",
    "prob_entropy",
    "pint_pixel_loss",
    "slice_uncertainty",
    "pint_image_loss",
    "gaussian_kernel1d",
    "loss_attention",
    "attended_cross_entropy",
    "tsman_loss",
    "ema_update_",
]


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    # 0 * log 0 = 0 (SPEC conventions); a NaN (or negative) p gives NaN, it is not hidden as 0
    return p * torch.log(torch.where(p == 0, torch.ones_like(p), p))


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def prob_entropy(prob: torch.Tensor) -> torch.Tensor:
    """entropy (Tensor[B, *S]) = -sum_c prob_c log prob_c of prob (Tensor[B, C, *S])."""
    return -_xlogx(prob).sum(dim=1)


def teacher_uncertainty(teacher_logits: torch.Tensor):
    """SPEC 1 / PINT Eq. (1).

    teacher_logits (Tensor[M, B, C, *S]) -> (prob Tensor[B, C, *S], entropy Tensor[B, *S])
    """
    prob = torch.softmax(teacher_logits, dim=2).mean(dim=0)
    return prob, prob_entropy(prob)


def _pixel_terms(logits, target, teacher_prob, pseudo_label, normalize_entropy):
    """Per-voxel alpha, ce and mse of SPEC 2 (all Tensor[B, *S])."""
    C = logits.shape[1]
    logp = torch.log_softmax(logits, dim=1)
    s = logp.exp()
    u = prob_entropy(teacher_prob)
    if normalize_entropy:
        u = u / math.log(C)
    alpha = torch.exp(-u)
    ce = -logp.gather(1, target.long().unsqueeze(1)).squeeze(1)
    if pseudo_label == "soft":
        y_hat = teacher_prob
    elif pseudo_label == "hard":
        # torch.argmax returns the first maximal index: ties go to the lowest class
        y_hat = F.one_hot(teacher_prob.argmax(dim=1), C).movedim(-1, 1).to(s.dtype)
    else:
        raise ValueError(f"pseudo_label must be 'soft' or 'hard', got {pseudo_label!r}")
    mse = ((s - y_hat) ** 2).mean(dim=1)
    return alpha.to(s.dtype), ce, mse


def pint_pixel_loss(logits, target, teacher_prob, *, pseudo_label="soft", reduction="mean",
                    normalize_entropy=False):
    """SPEC 2 / PINT Eq. (2)-(3): alpha_v * ce_v + (1 - alpha_v) * mse_v."""
    teacher_prob = teacher_prob.detach()
    alpha, ce, mse = _pixel_terms(logits, target, teacher_prob, pseudo_label, normalize_entropy)
    return _reduce(alpha * ce + (1 - alpha) * mse, reduction)


def _slices_last(x: torch.Tensor, slice_dim: int, n_spatial: int) -> torch.Tensor:
    """View x (Tensor[B, *S]) as Tensor[B, n_slices, voxels per slice]."""
    d = 1 + (slice_dim % n_spatial)
    x = x.movedim(d, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def slice_uncertainty(entropy: torch.Tensor, *, slice_dim: int = -1) -> torch.Tensor:
    """SPEC 3: U_i = mean entropy over slice i. entropy (Tensor[B, *S]) -> Tensor[B, n_slices].

    For 2D input (S = (H, W)) each batch item is one image: n_slices = 1.
    """
    if entropy.dim() == 3:  # 2D: the whole image is one slice
        return entropy.reshape(entropy.shape[0], 1, -1).mean(dim=2)
    return _slices_last(entropy, slice_dim, entropy.dim() - 1).mean(dim=2)


def pint_image_loss(logits, target, teacher_prob, *, pseudo_label="soft", reduction="mean",
                    normalize_entropy=False, slice_dim=-1):
    """SPEC 4 / PINT Eq. (4)-(5): per slice alpha_i * ce_i + (1 - alpha_i) * mse_i."""
    teacher_prob = teacher_prob.detach()
    C = logits.shape[1]
    u = prob_entropy(teacher_prob)
    if normalize_entropy:
        u = u / math.log(C)
    _, ce, mse = _pixel_terms(logits, target, teacher_prob, pseudo_label, False)
    U = slice_uncertainty(u, slice_dim=slice_dim)
    alpha = torch.exp(-U).to(ce.dtype)
    ce_i = slice_uncertainty(ce, slice_dim=slice_dim)
    mse_i = slice_uncertainty(mse, slice_dim=slice_dim)
    return _reduce(alpha * ce_i + (1 - alpha) * mse_i, reduction)


def gaussian_kernel1d(sigma2: float, kernel_size: int, dtype=torch.float64) -> torch.Tensor:
    """Normalized 1-D Gaussian weights exp(-x^2 / (2 sigma2)), x = -(k//2)..k//2, summing to 1."""
    r = kernel_size // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-x * x / (2.0 * sigma2))
    return (w / w.sum()).to(dtype)


def loss_attention(logits_a, logits_b, *, sigma2=0.5, kernel_size=3, spatial_dims=2, slice_dim=-1):
    """SPEC 5 / TSMAN Eq. (7): Gaussian-smoothed XOR of the two streams' argmax.

    logits_a, logits_b (Tensor[B, C, *S]) -> attention (Tensor[B, *S]) in [0, 1], no gradient.
    Dense convolution with the outer product of the 1-D weights: the readable form.
    """
    with torch.no_grad():
        d = (logits_a.argmax(dim=1) != logits_b.argmax(dim=1)).to(torch.float64)
        n = d.dim() - 1
        w = gaussian_kernel1d(sigma2, kernel_size)
        axes = list(range(n))
        if spatial_dims == 2 and n == 3:
            axes.remove(slice_dim % n)
        kernel = torch.ones((1,) * n, dtype=torch.float64)
        for ax in range(n):
            shape = [1] * n
            if ax in axes:
                shape[ax] = kernel_size
                kernel = kernel * w.reshape(shape)
        pad = [kernel_size // 2 if ax in axes else 0 for ax in range(n)]
        conv = F.conv3d if n == 3 else F.conv2d
        kshape = [kernel.shape[ax] for ax in range(n)]
        att = conv(d.unsqueeze(1), kernel.reshape(1, 1, *kshape), padding=pad).squeeze(1)
        return att.clamp_(0, 1).to(logits_a.dtype)


def attended_cross_entropy(logits, target, attention, *, reduction="mean"):
    """SPEC 6 / TSMAN Eq. (3)-(6): attention_v * ce_v, attention a constant."""
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    return _reduce(attention.detach().to(ce.dtype) * ce, reduction)


def tsman_loss(logits_a, logits_b, target, *, sigma2=0.5, kernel_size=3, spatial_dims=2,
               slice_dim=-1, reduction="mean"):
    """Both streams' attended CE with one shared attention map -> (loss, attention)."""
    att = loss_attention(logits_a, logits_b, sigma2=sigma2, kernel_size=kernel_size,
                         spatial_dims=spatial_dims, slice_dim=slice_dim)
    loss = (attended_cross_entropy(logits_a, target, att, reduction=reduction)
            + attended_cross_entropy(logits_b, target, att, reduction=reduction))
    return loss, att


def ema_update_(ema_tensors, tensors, decay):
    """SPEC 7: ema <- decay * ema + (1 - decay) * tensor, in place."""
    with torch.no_grad():
        for e, t in zip(ema_tensors, tensors):
            d = decay.to(e.dtype) if isinstance(decay, torch.Tensor) else decay
            e.mul_(d).add_(t.to(e.dtype) * (1 - d))
