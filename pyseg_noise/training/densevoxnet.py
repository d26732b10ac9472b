"""The plain DenseVoxNet baseline: cross-entropy with deep supervision (TSMAN Table 2, "Baseline"; Yu et al. 2017).

TSMAN's self-training trains its base models A, B, C this way ("three
models, with different initializations and max iterations"), and TSMAN's two
streams are fine-tuned from two such networks (:mod:`pyseg_noise.training.tsman`).
The loss is DenseVoxNet's deep supervision::

    L = CE(main) + aux_weight * CE(aux)          (aux_weight = 0.33)

over every voxel. The network sizes are the same fields as TSMAN's
``method_options`` (stem_channels, growth_rate, n_layers, dropout_rate,
up_channels, aux_weight), so a run of this method initialises a TSMAN stream
of the same sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from pyseg_noise.models import DenseVoxNet

from .config import ConfigError, TrainConfig
from .method import Batch, Method
from .registry import register_method

__all__ = ["DenseVoxNetOptions", "PlainDenseVoxNet", "densevoxnet_kwargs", "check_densevoxnet_options",
           "deep_supervision_loss", "DENSEVOXNET_SIZE_KEYS"]

#: the option names that size a DenseVoxNet (shared by this method and TSMAN's streams)
DENSEVOXNET_SIZE_KEYS = ("stem_channels", "growth_rate", "n_layers", "dropout_rate", "up_channels")


def densevoxnet_kwargs(options) -> dict:
    """Keyword arguments of :class:`~pyseg_noise.models.DenseVoxNet` from options holding the size fields."""
    kwargs = dict(stem_channels=options.stem_channels, growth_rate=options.growth_rate,
                  n_layers=tuple(options.n_layers), dropout_rate=options.dropout_rate,
                  up_channels=tuple(options.up_channels))
    if getattr(options, "aux_weight", None) is not None:
        kwargs["aux_weight"] = options.aux_weight
    return kwargs


def check_densevoxnet_options(config: TrainConfig) -> None:
    """The DenseVoxNet size fields of ``config.method_options`` and the crop size.

    Raises:
        ConfigError: naming the first bad ``method_options`` key or ``data.crop_size``.
    """
    o = config.method_options
    crop = list(config.data.crop_size)
    if any(s % DenseVoxNet.size_divisor for s in crop):
        raise ConfigError(f"data.crop_size must be multiples of {DenseVoxNet.size_divisor} for DenseVoxNet, "
                          f"got {crop}")
    if len(o.n_layers) != 2 or min(o.n_layers) < 1:
        raise ConfigError(f"method_options.n_layers must be two positive ints, got {list(o.n_layers)}")
    if len(o.up_channels) != 2 or min(o.up_channels) < 1:
        raise ConfigError(f"method_options.up_channels must be two positive ints, got {list(o.up_channels)}")
    for key in ("stem_channels", "growth_rate"):
        if getattr(o, key) < 1:
            raise ConfigError(f"method_options.{key} must be >= 1, got {getattr(o, key)}")
    if not 0.0 <= o.dropout_rate < 1.0:
        raise ConfigError(f"method_options.dropout_rate must be in [0, 1), got {o.dropout_rate}")
    if o.aux_weight is not None and o.aux_weight < 0:
        raise ConfigError(f"method_options.aux_weight must be >= 0 or null, got {o.aux_weight}")


def deep_supervision_loss(main: Tensor, aux: Optional[Tensor], target: Tensor, aux_weight: float) -> Tensor:
    """``CE(main) + aux_weight * CE(aux)`` (the aux term dropped when ``aux`` is None or the weight 0)."""
    loss = F.cross_entropy(main.float(), target.long())
    if aux is not None and aux_weight > 0:
        loss = loss + aux_weight * F.cross_entropy(aux.float(), target.long())
    return loss


@dataclass
class DenseVoxNetOptions:
    """DenseVoxNet's sizes (defaults: the paper's 16, 12, 12 + 12 layers, 0.2, 128/64, aux weight 0.33).

    Attributes:
        stem_channels, growth_rate, n_layers, dropout_rate, up_channels: see
            :class:`~pyseg_noise.models.DenseVoxNet`.
        aux_weight: weight of the auxiliary head's CE; None = DenseVoxNet's 0.33.
    """

    stem_channels: int = 16
    growth_rate: int = 12
    n_layers: List[int] = field(default_factory=lambda: [12, 12])
    dropout_rate: float = 0.2
    up_channels: List[int] = field(default_factory=lambda: [128, 64])
    aux_weight: Optional[float] = None


@register_method
class PlainDenseVoxNet(Method):
    """DenseVoxNet + cross-entropy with deep supervision (``pyseg-noise train densevoxnet``)."""

    name = "densevoxnet"
    description = "DenseVoxNet with plain cross-entropy + deep supervision (TSMAN's base models, Table 2 baseline)"
    Options = DenseVoxNetOptions

    @classmethod
    def validate_config(cls, config: TrainConfig) -> None:
        check_densevoxnet_options(config)

    def build(self) -> None:
        d = self.config.data
        self.model = DenseVoxNet(d.in_channels, d.num_classes, **densevoxnet_kwargs(self.options))

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model}

    def train_step(self, batch: Batch, iteration: int) -> Dict[str, Tensor]:
        main, aux = self.model(batch.image)
        return {"loss": deep_supervision_loss(main, aux, batch.label, self.model.aux_weight)}

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x, return_aux=False).float().softmax(1)
