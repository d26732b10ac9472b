"""Voxel selection shared by the sample-selection baselines (Decoupling, Co-teaching, Tri-network).

These methods come from image classification, where a "sample" is an image;
for segmentation every voxel is a sample with its own label, so selection
happens per voxel over the whole mini-batch (all voxels of all crops), as
TSMAN and PINT's re-implementations do.

* :func:`keep_rate` — Co-teaching's schedule ``R(t) = 1 - min(t / T_k, 1) * tau``.
* :func:`small_loss_mask` — the ``floor(R * n)`` voxels of smallest loss among ``n`` candidates.
* :func:`masked_cross_entropy` — cross-entropy over the selected voxels, through
  the library's ``attended_cross_entropy`` op (the mask is the attention map).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyseg_noise.ops import attended_cross_entropy as _attended_ce

__all__ = ["keep_rate", "voxel_cross_entropy", "small_loss_mask", "masked_cross_entropy", "NORMALIZATIONS"]

#: how a masked loss is averaged: over the selected voxels, or over all voxels
NORMALIZATIONS = ("selected", "all")


def keep_rate(iteration: int, forget_rate: float, num_gradual: int) -> float:
    """Co-teaching's share of voxels kept at 0-based ``iteration`` (Han et al. 2018, Eq. (1)).

    ``R(t) = 1 - min(t / T_k, 1) * tau``: all voxels at the start, then linearly
    fewer until ``1 - tau`` at ``t = T_k``, constant afterwards.

    Args:
        iteration: ``t`` (Han counts epochs; here optimizer steps).
        forget_rate: ``tau``, the estimated label-noise rate, in [0, 1].
        num_gradual: ``T_k`` >= 1.

    Example:
        >>> [keep_rate(t, 0.2, 10) for t in (0, 5, 10, 50)]
        [1.0, 0.9, 0.8, 0.8]
    """
    if not 0.0 <= forget_rate <= 1.0:
        raise ValueError(f"forget_rate must be in [0, 1], got {forget_rate}")
    if num_gradual < 1:
        raise ValueError(f"num_gradual must be >= 1, got {num_gradual}")
    return 1.0 - min(max(iteration, 0) / num_gradual, 1.0) * forget_rate


def voxel_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-voxel cross-entropy ``Tensor[B, *S]`` (float32 at least), for ranking; no gradient."""
    with torch.no_grad():
        x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return F.cross_entropy(x, target.long(), reduction="none")


def small_loss_mask(loss: Tensor, rate: float, among: Optional[Tensor] = None) -> Tensor:
    """The ``floor(rate * n)`` smallest-loss voxels of the batch among ``n`` candidates.

    At least one voxel is kept when ``rate > 0`` and there is a candidate. Equal
    losses are ranked by position (stable sort), so the selection is deterministic
    and has exactly that many voxels. No host synchronisation.

    Args:
        loss (Tensor[B, *S]): per-voxel losses.
        rate: share of the candidates to keep, in [0, 1].
        among (Tensor[B, *S] bool or None): candidate voxels (None = all).

    Returns:
        mask (Tensor[B, *S] bool).

    Example:
        >>> small_loss_mask(torch.tensor([[0.3, 0.1, 0.9, 0.2]]), 0.5).tolist()
        [[False, True, False, True]]
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    flat = loss.detach().reshape(-1)
    if among is None:
        cand = torch.ones_like(flat, dtype=torch.bool)
        n_keep = torch.tensor(max(math.floor(rate * flat.numel()), 1 if rate > 0 else 0), device=flat.device)
    else:
        if among.shape != loss.shape:
            raise ValueError(f"among shape {tuple(among.shape)} must equal loss shape {tuple(loss.shape)}")
        cand = among.reshape(-1).bool()
        n_cand = cand.sum()
        n_keep = torch.floor(n_cand.double() * rate).long()
        if rate > 0:
            n_keep = torch.maximum(n_keep, (n_cand > 0).long())
    key = torch.where(cand, flat.float(), torch.full_like(flat, float("inf"), dtype=torch.float32))
    order = torch.argsort(key, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return ((rank < n_keep) & cand).reshape(loss.shape)


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, *, normalize: str = "selected") -> Tensor:
    """Cross-entropy of the voxels in ``mask`` (the others give no gradient).

    Args:
        logits (Tensor[B, C, *S]), target (Tensor[B, *S]) integer, mask (Tensor[B, *S]) bool or 0/1.
        normalize: ``"selected"`` = sum over the mask / number of selected voxels
            (an SGD step on the selected samples only, as Decoupling and Co-teaching
            describe it; 0 if none is selected), ``"all"`` = sum / number of all voxels.

    Returns:
        the loss, a scalar tensor.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    weight = mask.to(torch.float32 if logits.dtype != torch.float64 else torch.float64)
    if normalize == "all":
        return _attended_ce(logits, target, weight, reduction="mean")
    return _attended_ce(logits, target, weight, reduction="sum") / weight.sum().clamp_min(1.0)
