"""The plain baseline: V-Net trained with cross-entropy on the labels as given (PINT Table 1, "V-net [16]").

Trained on clean labels it is the paper's upper bound ("the V-net has the upper
bound of average Dice 91.14%"); trained on noisy labels, the row every noise-robust
method is compared with. Same network, data, optimizer and schedule as PINT's
phase 1 (6000 iterations, SGD 0.01 / 10 every 2500, batch 4, 112 x 112 x 80).
"""
from __future__ import annotations

from typing import Dict

import torch.nn.functional as F
from torch import Tensor, nn

from pyseg_noise.models import VNet

from .config import TrainConfig
from .method import Batch, Method, check_vnet_crop
from .registry import register_method

__all__ = ["PlainVNet", "build_vnet"]


def build_vnet(config: TrainConfig) -> VNet:
    """The V-Net of ``config`` (``data.in_channels``, ``data.num_classes``, ``model.*``), freshly initialised."""
    d, m = config.data, config.model
    return VNet(d.in_channels, d.num_classes, m.n_filters, has_dropout=m.dropout, dropout_rate=m.dropout_rate)


@register_method
class PlainVNet(Method):
    """V-Net + cross-entropy over every voxel (``pyseg-noise train vnet``)."""

    name = "vnet"
    description = "V-Net with plain cross-entropy (PINT Table 1 baseline; clean-label upper bound)"

    @classmethod
    def validate_config(cls, config: TrainConfig) -> None:
        check_vnet_crop(config)

    def build(self) -> None:
        self.model = build_vnet(self.config)

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model}

    def train_step(self, batch: Batch, iteration: int) -> Dict[str, Tensor]:
        logits = self.model(batch.image)
        return {"loss": F.cross_entropy(logits.float(), batch.label)}

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x).float().softmax(1)
