"""``nn.Module`` wrappers of the fused loss ops, in the style of MONAI's losses.

* :class:`PINTPixelLoss`, :class:`PINTImageLoss` — PINT's uncertainty-weighted CE + MSE (SPEC 2, 4).
* :class:`LossAttention` — TSMAN's smoothed disagreement map of two streams (SPEC 5).
* :class:`AttendedCrossEntropyLoss` — CE weighted by a constant attention map (SPEC 6).
* :class:`TSMANLoss` — both streams' attended CE with one shared attention (SPEC 6).
"""
from pyseg_noise.losses.pint import PINTImageLoss, PINTPixelLoss
from pyseg_noise.losses.tsman import AttendedCrossEntropyLoss, LossAttention, TSMANLoss

__all__ = ["PINTPixelLoss", "PINTImageLoss", "LossAttention", "AttendedCrossEntropyLoss", "TSMANLoss"]
