"""TSMAN's mutual feature attentions: spatial (f3) and channel-wise (f1, f2).

TSMAN (Min et al. 2019, §"Spatial and Channel-wise Attention") connects its two
sub-networks by attention models that "take in both feature maps from two
sub-networks and give two feedback attention maps". Each map multiplies its
stream's features, so it selects features in the forward pass and, by the
chain rule, scales the gradients flowing back through them (the paper's Eq. (5):
``dL/do^d -> dL/do^d * f_att^k(o^d, ô^d)``).

The paper's Fig. 4 (the modules' diagrams) is not in our copy of the text, which
only says that it contains convolutions and element-wise additions. Our design:

* a convolution over the channel-concatenation ``[h_a, h_b]`` is the sum
  (the element-wise addition) of one convolution per stream, so each module
  first mixes both streams that way;
* it then produces **one map per stream** (two output channels / two halves),
  not one shared map: the two sub-networks are initialised independently, so
  their channels do not correspond, and each stream may need to suppress
  different things;
* sigmoid gates in (0, 1); the modules start near 0.5 everywhere and are
  trained with the rest of the network by the segmentation loss.
"""
from __future__ import annotations

import torch
from torch import nn

from .input_checks import check_positive_int


def _check_pair(h_a: torch.Tensor, h_b: torch.Tensor, channels: int, name: str) -> None:
    if h_a.shape != h_b.shape:
        raise ValueError(
            f"{name}: the two streams' features must have the same shape, got {tuple(h_a.shape)} "
            f"and {tuple(h_b.shape)}"
        )
    if h_a.ndim < 3 or h_a.shape[1] != channels:
        raise ValueError(
            f"{name}: features must be Tensor[B, {channels}, *S], got shape {tuple(h_a.shape)}"
        )


class MutualSpatialAttention(nn.Module):
    """TSMAN's spatial attention f3: one voxel-wise gate per stream from both streams' features.

    ``z = ReLU(Conv_k([h_a, h_b]))`` (``2C -> hidden``, kernel ``k``, same
    padding), ``[m_a, m_b] = sigmoid(Conv_1(z))`` (``hidden -> 2``), and the
    outputs are ``h_a * m_a`` and ``h_b * m_b`` (each map broadcast over the
    channels).

    Args:
        channels: ``C``, channels of each stream's features.
        hidden: channels of the intermediate map. Default ``max(C // 2, 1)``.
        kernel_size: odd kernel of the first convolution. Default 3.

    Example:
        >>> sa = MutualSpatialAttention(64)
        >>> g_a, g_b = sa(h_a, h_b)           # h_a, h_b, g_a, g_b: Tensor[B, 64, X, Y, Z]
        >>> m_a, m_b = sa.maps(h_a, h_b)      # Tensor[B, 1, X, Y, Z] each
    """

    def __init__(self, channels: int, hidden: int | None = None, kernel_size: int = 3):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        hidden = max(channels // 2, 1) if hidden is None else check_positive_int(hidden, "hidden")
        check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.mix = nn.Conv3d(2 * channels, hidden, kernel_size, padding=kernel_size // 2)
        self.act = nn.ReLU(inplace=True)
        self.to_maps = nn.Conv3d(hidden, 2, kernel_size=1)

    def maps(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two gates ``(m_a, m_b)``, each ``Tensor[B, 1, *S]`` in (0, 1)."""
        _check_pair(h_a, h_b, self.channels, "MutualSpatialAttention")
        m = torch.sigmoid(self.to_maps(self.act(self.mix(torch.cat([h_a, h_b], dim=1)))))
        return m[:, 0:1], m[:, 1:2]

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate both streams: ``h_a (Tensor[B, C, *S]), h_b -> (h_a * m_a, h_b * m_b)``."""
        m_a, m_b = self.maps(h_a, h_b)
        return h_a * m_a, h_b * m_b


class MutualChannelAttention(nn.Module):
    """TSMAN's channel-wise attention f1, f2: one channel gate per stream from both streams' features.

    ``g = [GAP(h_a), GAP(h_b)]`` (global average pooling, ``Tensor[B, 2C]``),
    ``[w_a, w_b] = sigmoid(W_2 ReLU(W_1 g))`` (``2C -> hidden -> 2C``, split in
    two halves of ``C``), and the outputs are ``h_a * w_a`` and ``h_b * w_b``
    (each weight broadcast over the voxels), as in a squeeze-and-excitation
    block fed by both streams.

    Args:
        channels: ``C``, channels of each stream's features.
        reduction: ``hidden = max(2C // reduction, 1)``. Default 8.

    Example:
        >>> ca = MutualChannelAttention(160)
        >>> g_a, g_b = ca(h_a, h_b)           # Tensor[B, 160, X, Y, Z] each
        >>> w_a, w_b = ca.weights(h_a, h_b)   # Tensor[B, 160] each
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        check_positive_int(reduction, "reduction")
        hidden = max(2 * channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Linear(2 * channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * channels),
        )

    def weights(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two gates ``(w_a, w_b)``, each ``Tensor[B, C]`` in (0, 1)."""
        _check_pair(h_a, h_b, self.channels, "MutualChannelAttention")
        spatial = tuple(range(2, h_a.ndim))
        pooled = torch.cat([h_a.mean(dim=spatial), h_b.mean(dim=spatial)], dim=1)
        w = torch.sigmoid(self.mlp(pooled))
        return w[:, : self.channels], w[:, self.channels:]

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate both streams: ``h_a (Tensor[B, C, *S]), h_b -> (h_a * w_a, h_b * w_b)``."""
        w_a, w_b = self.weights(h_a, h_b)
        expand = (slice(None), slice(None)) + (None,) * (h_a.ndim - 2)
        return h_a * w_a[expand], h_b * w_b[expand]
