"""TSMAN training (Min et al., AAAI 2019): two streams, mutual attention, loss attention.

The network is :class:`pyseg_noise.models.TSMAN` — two DenseVoxNet streams
linked by channel attention (f1, f2) and spatial attention (f3). The loss is
TSMAN Eq. (6) with the loss attention f4 of Eq. (7) (SPEC 5-6), computed by
the fused op :func:`pyseg_noise.ops.tsman_loss`:

    att  = omega * (argmax a XOR argmax b)                  (3x3 in-plane Gaussian, sigma^2 = 0.5)
    L    = mean_v att_v ce_v(a) + mean_v att_v ce_v(b)
    L   += aux_weight * [mean_v att'_v ce_v(aux_a) + mean_v att'_v ce_v(aux_b)]

Each stream's DenseVoxNet auxiliary head (deep supervision) is trained the
same way as the main outputs, with *its own* attention map ``att'`` computed
from the two aux heads' disagreement (the aux heads of the two streams form a
second, coarser pair of predictions; the main map would mask the aux heads'
own mistakes). ``aux_weight`` is DenseVoxNet's (0.33 unless set).

**Warm-up (our addition).** Trained from random weights, the attended loss
has a trivial minimum: where both streams give the same answer the loss is 0,
so two streams that agree everywhere stop learning. On our synthetic LA-like
data (32^3, 300 iterations) both streams predict "all background" for the
first ~100 iterations even with plain CE; switching f4 on from the start, or
after 30 iterations, freezes them there (loss 0, Dice 0), while after 150
iterations of plain CE the streams disagree on ~4 % of the voxels and f4 keeps
training them (Dice 0.68 vs 0.64 with plain CE throughout, one seed). The
paper is silent on initialisation; we train the first ``warmup_fraction``
(default 20 %) of the iterations with plain CE of both streams (as with f4
off) and switch f4 on afterwards. Short runs need a larger share;
``warmup_fraction: 0`` gives f4 from the first iteration.

Switching f4 off (``loss_attention: false``, Table 2's rows without f4) uses
the plain cross-entropy of both streams (and of both aux heads): with every
attention off, TSMAN is two independent networks trained with CE. The
test-time prediction is the mean of the two streams' softmax.

Table 2 of the paper, as options (``attention_points`` lists the mutual
attentions in the network; f1 and f2 are channel attention, f3 spatial):

===============  ======================  ================
row              attention_points        loss_attention
===============  ======================  ================
Baseline         []                      false
f4               []                      true
f3 + f4          [f3]                    true
f2 + f3 + f4     [f2, f3]                true
f1..f4 (TSMAN)   [f1, f2, f3]            true
===============  ======================  ================

The paper's schedule (DenseVoxNet's settings with 35,000 iterations) is not
this library's default (PINT's); a TSMAN run as published sets
``iterations: 35000``, ``optim: {lr: 0.05, lr_policy: poly, poly_power: 0.9,
weight_decay: 0.0005}`` and ``data: {crop_size: [64, 64, 64]}`` (DenseVoxNet's
64^3 crops, batch size as the GPU allows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyseg_noise.models import TSMAN, DenseVoxNet, VNet
from pyseg_noise.ops import tsman_loss as _tsman_loss_op

from .config import ConfigError
from .method import Method
from .registry import register_method

__all__ = ["TSMANOptions", "TSMANMethod", "tsman_pair_loss", "tsman_training_loss", "ATTENTION_POINTS"]

#: the network's mutual attention points: f1, f2 channel attention, f3 spatial attention
ATTENTION_POINTS = ("f1", "f2", "f3")


def tsman_pair_loss(logits_a: Tensor, logits_b: Tensor, target: Tensor, *, loss_attention: bool = True,
                    sigma2: float = 0.5, kernel_size: int = 3, spatial_dims: int = 2,
                    slice_dim: int = -1) -> Tuple[Tensor, Optional[Tensor]]:
    """The loss of one pair of stream outputs: TSMAN Eq. (6)-(7), or plain CE of both without f4.

    Args:
        logits_a, logits_b (Tensor[B, C, *S]): the two streams' logits.
        target (Tensor[B, *S]): integer labels.
        loss_attention: use f4; False = ``CE(a) + CE(b)`` (means over all voxels).
        sigma2, kernel_size, spatial_dims, slice_dim: the Gaussian of Eq. (7) (SPEC 5).

    Returns:
        ``(loss, attention)``: the scalar loss and the attention map (Tensor[B, *S]), None without f4.
    """
    if not loss_attention:
        loss = F.cross_entropy(logits_a.float(), target.long()) + F.cross_entropy(logits_b.float(), target.long())
        return loss, None
    kw = dict(sigma2=sigma2, kernel_size=kernel_size, spatial_dims=spatial_dims, slice_dim=slice_dim)
    return _tsman_loss_op(logits_a, logits_b, target, return_attention=True, **kw)


def tsman_training_loss(outputs, target: Tensor, *, loss_attention: bool = True, aux_weight: float = 0.33,
                        **smoothing) -> Tuple[Tensor, Dict[str, Tensor]]:
    """TSMAN's full training loss from the train-mode outputs ``(a, b, aux_a, aux_b)`` of :class:`~pyseg_noise.models.TSMAN`.

    ``loss = pair(a, b) + aux_weight * pair(aux_a, aux_b)`` with :func:`tsman_pair_loss`
    (each pair with its own attention map; the aux term is skipped for sub-networks
    without aux heads or ``aux_weight == 0``).

    Returns:
        ``(loss, logs)``; ``logs`` holds detached scalars: ``loss_main``, ``loss_aux``,
        ``disagreement`` (share of voxels where the streams' argmax differ) and, with f4,
        ``attention_mean``.
    """
    a, b, aux_a, aux_b = outputs
    main, att = tsman_pair_loss(a, b, target, loss_attention=loss_attention, **smoothing)
    loss = main
    with torch.no_grad():
        logs = {"loss_main": main.detach(), "disagreement": (a.argmax(1) != b.argmax(1)).float().mean()}
        if att is not None:
            logs["attention_mean"] = att.float().mean()
    if aux_a is not None and aux_b is not None and aux_weight > 0:
        aux, _ = tsman_pair_loss(aux_a, aux_b, target, loss_attention=loss_attention, **smoothing)
        loss = loss + aux_weight * aux
        logs["loss_aux"] = aux.detach()
    return loss, logs


@dataclass
class TSMANOptions:
    """TSMAN's options (defaults: the paper's network and loss).

    Attributes:
        subnet: ``"densevoxnet"`` (the paper's) or ``"vnet"`` (V-Net from ``config.model``).
        stem_channels, growth_rate, n_layers, dropout_rate, up_channels: DenseVoxNet's
            sizes (16, 12, 12 + 12 layers, 0.2, 128/64).
        aux_weight: weight of the aux heads' loss; None = DenseVoxNet's 0.33.
        attention_points: which mutual attentions the network has: f1, f2 (channel), f3 (spatial).
        loss_attention: f4 (Eq. (7)); false = plain CE of both streams.
        warmup_fraction: share of the run's iterations trained with plain CE before f4
            switches on (our addition, see the module docstring; 0 = f4 from the start; 0.2).
        channel_reduction: reduction of the channel attention's MLP.
        sigma2, kernel_size, spatial_dims: f4's Gaussian (0.5, 3, in-plane).
    """

    subnet: str = "densevoxnet"
    stem_channels: int = 16
    growth_rate: int = 12
    n_layers: List[int] = field(default_factory=lambda: [12, 12])
    dropout_rate: float = 0.2
    up_channels: List[int] = field(default_factory=lambda: [128, 64])
    aux_weight: Optional[float] = None
    attention_points: List[str] = field(default_factory=lambda: list(ATTENTION_POINTS))
    loss_attention: bool = True
    warmup_fraction: float = 0.2
    channel_reduction: int = 8
    sigma2: float = 0.5
    kernel_size: int = 3
    spatial_dims: int = 2


@register_method
class TSMANMethod(Method):
    """Two-stream mutual attention network trained with loss attention (module docstring)."""

    name = "tsman"
    description = "TSMAN (Min 2019): two DenseVoxNet streams, mutual + loss attention"
    Options = TSMANOptions

    @classmethod
    def validate_config(cls, config) -> None:
        o = config.method_options
        if o.subnet not in ("densevoxnet", "vnet"):
            raise ConfigError(f"method_options.subnet must be densevoxnet or vnet, got {o.subnet!r}")
        divisor = DenseVoxNet.size_divisor if o.subnet == "densevoxnet" else VNet.size_divisor
        crop = list(config.data.crop_size)
        if any(s % divisor for s in crop):
            raise ConfigError(f"data.crop_size must be multiples of {divisor} for TSMAN with {o.subnet}, got {crop}")
        bad = [p for p in o.attention_points if p not in ATTENTION_POINTS]
        if bad or len(set(o.attention_points)) != len(o.attention_points):
            raise ConfigError(f"method_options.attention_points must be distinct names from "
                              f"{list(ATTENTION_POINTS)}, got {list(o.attention_points)}")
        if len(o.n_layers) != 2 or min(o.n_layers) < 1:
            raise ConfigError(f"method_options.n_layers must be two positive ints, got {list(o.n_layers)}")
        if len(o.up_channels) != 2 or min(o.up_channels) < 1:
            raise ConfigError(f"method_options.up_channels must be two positive ints, got {list(o.up_channels)}")
        for key in ("stem_channels", "growth_rate", "channel_reduction"):
            if getattr(o, key) < 1:
                raise ConfigError(f"method_options.{key} must be >= 1, got {getattr(o, key)}")
        if not 0.0 <= o.dropout_rate < 1.0:
            raise ConfigError(f"method_options.dropout_rate must be in [0, 1), got {o.dropout_rate}")
        if o.aux_weight is not None and o.aux_weight < 0:
            raise ConfigError(f"method_options.aux_weight must be >= 0 or null, got {o.aux_weight}")
        if not 0.0 <= o.warmup_fraction < 1.0:
            raise ConfigError(f"method_options.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
        if not o.sigma2 > 0:
            raise ConfigError(f"method_options.sigma2 must be > 0, got {o.sigma2}")
        if o.kernel_size < 1 or o.kernel_size % 2 == 0:
            raise ConfigError(f"method_options.kernel_size must be an odd int >= 1, got {o.kernel_size}")
        if o.spatial_dims not in (2, 3):
            raise ConfigError(f"method_options.spatial_dims must be 2 or 3, got {o.spatial_dims}")

    def build(self) -> None:
        o, d = self.options, self.config.data
        if o.subnet == "densevoxnet":
            kwargs = dict(stem_channels=o.stem_channels, growth_rate=o.growth_rate, n_layers=tuple(o.n_layers),
                          dropout_rate=o.dropout_rate, up_channels=tuple(o.up_channels))
            if o.aux_weight is not None:
                kwargs["aux_weight"] = o.aux_weight
        else:
            m = self.config.model
            kwargs = dict(n_filters=m.n_filters, has_dropout=m.dropout, dropout_rate=m.dropout_rate)
        points = set(o.attention_points)
        self.model = TSMAN(d.in_channels, d.num_classes, subnet=o.subnet, subnet_kwargs=kwargs,
                           spatial_attention="f3" in points, channel_attention=bool(points & {"f1", "f2"}),
                           loss_attention=o.loss_attention, channel_reduction=o.channel_reduction)
        # the network switches f1 and f2 together; drop the one not asked for (an absent point passes through)
        for name in [n for n in list(self.model.attention.keys()) if n not in points]:
            del self.model.attention[name]
        self.aux_weight = self.model.aux_weight if o.aux_weight is None else float(o.aux_weight)

    def networks(self) -> Dict[str, nn.Module]:
        return {"model": self.model}

    @property
    def warmup_iterations(self) -> int:
        """Iterations of plain CE before the loss attention starts."""
        return int(round(self.options.warmup_fraction * self.total_iterations()))

    def train_step(self, batch, iteration: int) -> Dict[str, Tensor]:
        o = self.options
        use_f4 = o.loss_attention and iteration >= self.warmup_iterations
        loss, logs = tsman_training_loss(
            self.model(batch.image), batch.label, loss_attention=use_f4, aux_weight=self.aux_weight,
            sigma2=o.sigma2, kernel_size=o.kernel_size, spatial_dims=o.spatial_dims,
        )
        return {"loss": loss, **logs}

    def predict(self, x: Tensor) -> Tensor:
        return self.model.predict(x)

    def uncertainty(self, x: Tensor) -> Optional[Tensor]:
        """Where the streams disagree (the unsmoothed XOR of Eq. (7)), for the case plot."""
        a, b = self.model(x, return_aux=False)
        return (a.argmax(1) != b.argmax(1)).float()
