"""Decoupling "when to update" from "how to update" (Malach & Shalev-Shwartz, NeurIPS 2017).

Follows: Malach & Shalev-Shwartz 2017, Algorithm 1 — two networks with
different random initialisations see the same mini-batch; both are updated,
with their usual loss, only on the samples where their predictions disagree.
For segmentation a sample is a voxel (TSMAN's re-implementation: "assigning a
non-zero loss weight for a voxel when their predictions are different"):

    d_v = [argmax a_v != argmax b_v]          (ties: lowest class index)
    L   = CE_d(a) + CE_d(b),   CE_d(z) = sum_v d_v ce_v(z) / max(sum_v d_v, 1)

Departures and choices:

* ``normalize="all"`` (default) averages over all voxels, which is exactly
  TSMAN's description of the method ("assigning a non-zero loss weight for a
  voxel when their predictions are different"; TSMAN's loss attention
  without the Gaussian smoothing, ``tsman_loss`` with a 1-voxel kernel) — the
  form TSMAN's Figures 6 and 7 compare against;
  ``normalize="selected"`` averages over the disagreeing voxels, i.e. an SGD
  step on the selected samples as in Malach's Algorithm 1.
* When the networks agree everywhere the loss is 0 and nothing is learned
  (TSMAN's loss attention has the same trivial minimum, see
  :mod:`pyseg_noise.training.tsman`); two randomly initialised V-Nets keep
  disagreeing on our synthetic data, so the default follows the paper (no
  warm-up, ``warmup_fraction: 0``), and the opt-in ``warmup_fraction`` trains
  both networks on all voxels for that share of the run first.
* DenseVoxNet's auxiliary heads use the same mask (from the main outputs),
  weighted by ``aux_weight``.
* Prediction: the mean of both networks' softmax (TSMAN's protocol;
  :mod:`.peer_networks`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import Tensor

from ..config import ConfigError
from ..registry import register_method
from .peer_networks import PeerNetworksMethod
from .voxel_selection import NORMALIZATIONS, masked_cross_entropy

__all__ = ["DecouplingOptions", "Decoupling", "decoupling_mask", "decoupling_loss"]


def decoupling_mask(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Voxels where the two networks' hard predictions differ: ``Tensor[B, *S]`` bool, no gradient."""
    with torch.no_grad():
        return logits_a.argmax(dim=1) != logits_b.argmax(dim=1)


def decoupling_loss(logits_a: Tensor, logits_b: Tensor, target: Tensor, *,
                    normalize: str = "all") -> Tuple[Tensor, Tensor]:
    """Both networks' cross-entropy on their disagreement voxels.

    Args:
        logits_a, logits_b (Tensor[B, C, *S]), target (Tensor[B, *S]).
        normalize: ``"selected"`` or ``"all"`` (module docstring).

    Returns:
        ``(loss, mask)``: the summed loss of both networks and the update mask (Tensor[B, *S] bool).
    """
    mask = decoupling_mask(logits_a, logits_b)
    loss = (masked_cross_entropy(logits_a, target, mask, normalize=normalize)
            + masked_cross_entropy(logits_b, target, mask, normalize=normalize))
    return loss, mask


@dataclass
class DecouplingOptions:
    """Decoupling's options.

    Attributes:
        backbone: ``"vnet"`` (PINT's comparison) or ``"densevoxnet"`` (TSMAN's).
        normalize: ``"all"`` (TSMAN's description: a loss weight on the disagreement voxels,
            mean over all voxels) or ``"selected"`` (Malach's SGD on the disagreement set).
        warmup_fraction: opt-in share of the iterations trained with plain CE on all voxels
            before decoupling starts (0 = the paper, the default).
    """

    backbone: str = "vnet"
    normalize: str = "all"
    warmup_fraction: float = 0.0


@register_method
class Decoupling(PeerNetworksMethod):
    """Two networks updated only where they disagree (module docstring)."""

    name = "decoupling"
    description = "Decoupling (Malach 2017): two networks, update on voxels where they disagree"
    Options = DecouplingOptions
    num_networks = 2

    @classmethod
    def validate_config(cls, config) -> None:
        super().validate_config(config)
        o = config.method_options
        if o.normalize not in NORMALIZATIONS:
            raise ConfigError(f"method_options.normalize must be one of {', '.join(NORMALIZATIONS)}, got {o.normalize!r}")
        if not 0.0 <= o.warmup_fraction < 1.0:
            raise ConfigError(f"method_options.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        (a, aux_a), (b, aux_b) = self.forward_all(batch.image)
        y = batch.label
        if iteration < round(self.options.warmup_fraction * self.total_iterations()):
            mask = torch.ones_like(y, dtype=torch.bool)
        else:
            mask = decoupling_mask(a, b)
        norm = self.options.normalize
        main = masked_cross_entropy(a, y, mask, normalize=norm) + masked_cross_entropy(b, y, mask, normalize=norm)
        loss = main
        logs = {}
        if aux_a is not None and self.aux_weight > 0:
            aux = masked_cross_entropy(aux_a, y, mask, normalize=norm) + masked_cross_entropy(aux_b, y, mask, normalize=norm)
            loss = loss + self.aux_weight * aux
            logs["loss_aux"] = aux.detach()
        return {"loss": loss, "loss_main": main.detach(), "update_fraction": mask.float().mean(), **logs}
