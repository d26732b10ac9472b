"""The segmentation network every baseline trains (one or several copies of it).

PINT compares its baselines on V-Net (PINT §3.1), TSMAN on DenseVoxNet (TSMAN
"Implementation Details"); ``backbone="vnet"`` builds
:class:`~pyseg_noise.models.VNet` from ``config.model`` (filters, PINT's
dropout), ``backbone="densevoxnet"`` builds :class:`~pyseg_noise.models.DenseVoxNet`
with its paper defaults. DenseVoxNet's auxiliary head is trained with the
same voxel selection or weighting as the main output, scaled by the
network's ``aux_weight``.
"""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from pyseg_noise.models import DenseVoxNet, VNet

from ..config import ConfigError, TrainConfig

__all__ = ["BACKBONES", "build_backbone", "check_backbone", "main_and_aux", "aux_weight_of"]

#: backbone names accepted by the baselines' ``backbone`` option
BACKBONES = ("vnet", "densevoxnet")


def check_backbone(config: TrainConfig, backbone: str) -> None:
    """The backbone name is known and ``data.crop_size`` fits its down-sampling.

    Raises:
        ConfigError: naming ``method_options.backbone`` or ``data.crop_size``.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"method_options.backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    divisor = VNet.size_divisor if backbone == "vnet" else DenseVoxNet.size_divisor
    crop = list(config.data.crop_size)
    if any(s % divisor for s in crop):
        raise ConfigError(f"data.crop_size must be multiples of {divisor} for {backbone}, got {crop}")


def build_backbone(config: TrainConfig, backbone: str = "vnet") -> nn.Module:
    """A fresh network (random weights from the current torch seed).

    Args:
        config: the run; ``data.in_channels``, ``data.num_classes`` and (V-Net) ``model.*`` are used.
        backbone: ``"vnet"`` or ``"densevoxnet"``.
    """
    d = config.data
    if backbone == "vnet":
        m = config.model
        return VNet(d.in_channels, d.num_classes, m.n_filters, has_dropout=m.dropout, dropout_rate=m.dropout_rate)
    if backbone == "densevoxnet":
        return DenseVoxNet(d.in_channels, d.num_classes)
    raise ConfigError(f"method_options.backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")


def main_and_aux(output) -> Tuple[Tensor, Optional[Tensor]]:
    """``(main logits, aux logits or None)`` of a network's train-mode output (a tensor or a pair)."""
    if isinstance(output, (tuple, list)):
        return output[0], (output[1] if len(output) > 1 else None)
    return output, None


def aux_weight_of(net: nn.Module) -> float:
    """The auxiliary-loss weight a network carries (0 without an aux head)."""
    return float(getattr(net, "aux_weight", 0.0))
