"""The plain baseline: V-Net trained with cross-entropy on the labels as given (PINT Table 1, "V-net [16]").

Trained on clean labels it is the paper's upper bound ("the V-net has the upper
bound of average Dice 91.14%"); trained on noisy labels, the row every noise-robust
method is compared with. Same network, data, optimizer and schedule as PINT's
phase 1 (6000 iterations, SGD 0.01 / 10 every 2500, batch 4, 112 x 112 x 80).

With ``restart_iterations > 0`` (NOT a row of the paper) it is the equal-budget
control of ``reproduce pint``: PINT trains 6000 iterations and then restarts at
the constant learning rate 0.01 for 2000 more (its image-level phase), so a
V-Net trained 6000 iterations sees a quarter fewer steps and ends on the
smaller learning rate. The control trains plain CE on the same labels for the
same iterations *and* the same phase-2 restart, so that what remains of PINT's
lead is the method's and not the extra iterations' or the restart's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch.nn.functional as F
from torch import Tensor, nn

from pyseg_noise.models import VNet

from .config import ConfigError, TrainConfig
from .lr_schedule import learning_rate
from .method import Batch, Method, check_vnet_crop
from .registry import register_method
from .step_parts import part

__all__ = ["PlainVNet", "VNetOptions", "build_vnet"]


def build_vnet(config: TrainConfig) -> VNet:
    """The V-Net of ``config`` (``data.in_channels``, ``data.num_classes``, ``model.*``), freshly initialised."""
    d, m = config.data, config.model
    return VNet(d.in_channels, d.num_classes, m.n_filters, has_dropout=m.dropout, dropout_rate=m.dropout_rate)


@dataclass
class VNetOptions:
    """Options of the plain V-Net; the defaults are the paper's baseline (no restart).

    Attributes:
        restart_iterations: NOT in the paper (0 = off). Iterations appended after
            ``config.iterations`` at the constant learning rate ``restart_lr``: the
            equal-budget control of ``reproduce pint`` sets them to PINT's phase 2
            (``image_phase_iterations``, 2000 in the paper), so the V-Net trains as many
            steps as PINT with the same learning-rate restart.
        restart_lr: the constant learning rate of those iterations (PINT's
            ``image_phase_lr``, 0.01).
    """

    restart_iterations: int = 0
    restart_lr: float = 0.01


@register_method
class PlainVNet(Method):
    """V-Net + cross-entropy over every voxel (``pyseg-noise train vnet``).

    Schedule: ``config.optim``'s policy over ``config.iterations``, then (only with
    ``method_options.restart_iterations > 0``) ``restart_iterations`` more at the constant
    ``restart_lr`` — the equal-budget control of PINT (module docstring).

    Example:
        >>> from pyseg_noise.training.config import config_from_dict
        >>> cfg = config_from_dict({"method": "vnet", "iterations": 6, "optim": {"lr_step": 3},
        ...                         "method_options": {"restart_iterations": 2, "restart_lr": 0.01}})
        >>> m = PlainVNet(cfg); m.total_iterations(), [round(m.lr_at(t), 6) for t in range(8)]
        (8, [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.01, 0.01])
    """

    name = "vnet"
    Options = VNetOptions
    description = "V-Net with plain cross-entropy (PINT Table 1 baseline; clean-label upper bound)"

    @classmethod
    def validate_config(cls, config: TrainConfig) -> None:
        check_vnet_crop(config)
        o: VNetOptions = config.method_options
        if not isinstance(o.restart_iterations, int) or o.restart_iterations < 0:
            raise ConfigError(f"method_options.restart_iterations must be an integer >= 0, got {o.restart_iterations!r}")
        if not o.restart_lr > 0:
            raise ConfigError(f"method_options.restart_lr must be > 0, got {o.restart_lr!r}")

    def total_iterations(self) -> int:
        return self.config.iterations + self.options.restart_iterations

    def lr_at(self, iteration: int) -> float:
        if iteration < self.config.iterations:
            return learning_rate(self.config.optim, iteration, self.config.iterations)
        return self.options.restart_lr

    def build(self) -> None:
        self.model = build_vnet(self.config)

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model}

    def train_step(self, batch: Batch, iteration: int) -> Dict[str, Tensor]:
        with part("student_forward"):
            logits = self.model(batch.image)
        with part("loss"):
            loss = F.cross_entropy(logits.float(), batch.label)
        return {"loss": loss}

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x).float().softmax(1)
