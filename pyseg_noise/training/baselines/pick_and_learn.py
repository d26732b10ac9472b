"""Pick-and-learn (Zhu, Shi & Wu, MICCAI 2019): per-image label-quality weights learned with the network.

Follows: Zhu et al. 2019, Fig. 2 — a quality awareness module (QAM), a CNN
that reads the image concatenated with its (noisy) label, scores every sample
of the mini-batch; the scores go through a softmax over the batch and weight
the samples' segmentation losses; the weighted sum is backpropagated into both
the segmentation network and the QAM:

    s_i = QAM([x_i, onehot(y_i)]),   w = softmax(s) over the batch (sum_i w_i = 1)
    L   = sum_i w_i * L_i,           L_i = mean cross-entropy of sample i

With equal scores ``L`` is the usual mean loss; the QAM lowers the weight of
samples whose loss is above the batch's weighted mean (``dL/ds_i = w_i (L_i - L)``),
i.e. of the labels the network finds least consistent with the image.

Departures: a sample is a 3-D crop (the noise of PINT's LA set is per case);
the QAM is a small VGG-like 3-D CNN (``qam_widths``, 3^3 convolutions + ReLU +
max-pooling per stage, then a 1^3 convolution to one channel and global
average pooling, as the paper's "one-channel average pooling" head); the
segmentation loss is cross-entropy on V-Net (PINT's comparison) where the
paper used Dice on U-Net; the paper's overfitting control module (OCM) is not
reproduced (its rule is not in the texts we have). In a distributed run the
softmax runs over each process's share of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..method import Method
from ..registry import register_method
from .backbone import aux_weight_of, build_backbone, check_backbone, main_and_aux

__all__ = ["QualityAwarenessNet", "PickAndLearnOptions", "PickAndLearn", "quality_weights", "weighted_image_loss"]


class QualityAwarenessNet(nn.Module):
    """The QAM: a score per sample from the image and its one-hot label.

    Args:
        in_channels: image channels.
        n_classes: classes of the label (one-hot channels).
        widths: channels of the conv stages; each stage is Conv 3^3 -> ReLU -> MaxPool 2 (ceil mode).

    Shapes:
        ``forward(image (Tensor[B, in_channels, X, Y, Z]), label (Tensor[B, X, Y, Z]) int) -> Tensor[B]``.
    """

    def __init__(self, in_channels: int, n_classes: int, widths: Tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        self.n_classes = int(n_classes)
        layers: List[nn.Module] = []
        c = in_channels + n_classes
        for w in widths:
            layers += [nn.Conv3d(c, int(w), 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool3d(2, ceil_mode=True)]
            c = int(w)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv3d(c, 1, 1)

    def forward(self, image: Tensor, label: Tensor) -> Tensor:
        onehot = F.one_hot(label.long(), self.n_classes).movedim(-1, 1).to(image.dtype)
        h = self.head(self.features(torch.cat([image, onehot], dim=1)))
        return h.mean(dim=(1, 2, 3, 4))


def quality_weights(scores: Tensor) -> Tensor:
    """``softmax(scores)`` over the batch: non-negative, summing to 1 (Tensor[B])."""
    return torch.softmax(scores.float(), dim=0)


def weighted_image_loss(logits: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``sum_i weights_i * mean_v ce_iv`` for logits (Tensor[B, C, *S]), target (Tensor[B, *S]), weights (Tensor[B])."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    per_image = ce.reshape(ce.shape[0], -1).mean(dim=1)
    return (weights * per_image).sum()


@dataclass
class PickAndLearnOptions:
    """Pick-and-learn's options.

    Attributes:
        backbone: segmentation network, ``"vnet"`` or ``"densevoxnet"``.
        qam_widths: channels of the QAM's conv stages.
    """

    backbone: str = "vnet"
    qam_widths: List[int] = field(default_factory=lambda: [16, 32, 64, 64])


@register_method
class PickAndLearn(Method):
    """Segmentation network + quality awareness module, trained together (module docstring)."""

    name = "pickandlearn"
    description = "Pick-and-learn (Zhu 2019): per-image quality weights (softmax over the batch) from a QAM"
    Options = PickAndLearnOptions

    @classmethod
    def validate_config(cls, config) -> None:
        check_backbone(config, config.method_options.backbone)
        widths = config.method_options.qam_widths
        if not widths or any(w < 1 for w in widths):
            raise ConfigError(f"method_options.qam_widths must be positive ints, got {list(widths)}")

    def build(self) -> None:
        self.model = build_backbone(self.config, self.options.backbone)
        d = self.config.data
        self.qam = QualityAwarenessNet(d.in_channels, d.num_classes, tuple(self.options.qam_widths))

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model, "qam": self.qam}

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        main, aux = main_and_aux(self.model(batch.image))
        weights = quality_weights(self.qam(batch.image, batch.label))
        seg = weighted_image_loss(main, batch.label, weights)
        loss, logs = seg, {}
        w_aux = aux_weight_of(self.model)
        if aux is not None and w_aux > 0:
            aux_loss = weighted_image_loss(aux, batch.label, weights)
            loss = loss + w_aux * aux_loss
            logs["loss_aux"] = aux_loss.detach()
        return {"loss": loss, "loss_main": seg.detach(), "weight_max": weights.detach().max(),
                "weight_min": weights.detach().min(), **logs}

    def predict(self, x: Tensor) -> Tensor:
        return torch.softmax(main_and_aux(self.model(x))[0].float(), dim=1)
