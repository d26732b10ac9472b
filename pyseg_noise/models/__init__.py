"""Segmentation networks: the V-Net of PINT and the LA code bases, DenseVoxNet, and TSMAN.

* :class:`VNet` — V-Net with PINT's two switchable dropout layers (the PINT backbone).
* :class:`DenseVoxNet` — Yu et al. 2017, with its auxiliary side path (TSMAN's sub-network).
* :class:`TSMAN` — two sub-networks linked by mutual spatial/channel attention.
* :class:`MutualSpatialAttention`, :class:`MutualChannelAttention` — TSMAN's f3 and f1/f2.

Every network takes ``x (Tensor[B, in_channels, X, Y, Z])`` and returns logits
``Tensor[B, n_classes, X, Y, Z]`` of the same spatial size.
"""
from .attention import MutualChannelAttention, MutualSpatialAttention
from .densevoxnet import DenseVoxNet
from .tsman import TSMAN
from .vnet import VNet

__all__ = ["VNet", "DenseVoxNet", "TSMAN", "MutualSpatialAttention", "MutualChannelAttention"]
