"""DenseVoxNet (Yu et al., MICCAI 2017), the sub-network of TSMAN (Min et al. 2019).

Layout (defaults are the paper's values; sizes relative to the input):

====================  =====================================================  ==========  ========
part                  layers                                                 channels    size
====================  =====================================================  ==========  ========
stem                  Conv 3^3, stride 2                                     16          1/2
dense block 1         12 x (BN-ReLU-Conv 3^3 -> 12, Dropout 0.2), concat     16 + 144    1/2
transition            BN-ReLU-Conv 1^3, Dropout 0.2 (-> aux head) ; MaxPool  160         1/4
dense block 2         12 x (BN-ReLU-Conv 3^3 -> 12, Dropout 0.2), concat     160 + 144   1/4
upsampling            BN-ReLU-Conv 1^3 ; Deconv 2^3/2 -> 128, BN-ReLU ;       64          1
                      Deconv 2^3/2 -> 64, BN-ReLU
classifier            Conv 1^3                                               n_classes   1
aux head              Conv 1^3 on the transition output ; Deconv 2^3/2       n_classes   1
====================  =====================================================  ==========  ========

The paper's figure is not in our copy of the text; the deconvolutions use
2^3 kernels with stride 2 (exact 2x upsampling, as in V-Net), which gives the
~1.8 M parameters the DenseVoxNet paper reports (1,703,009 for 1 input channel
and 3 classes). Batch norm + ReLU follow each deconvolution of the main path
(TensorFlow re-implementations put only a ReLU there).
"""
from __future__ import annotations

import torch
from torch import nn

from .input_checks import check_positive_int, check_rate, check_volume_batch
from .staged import OUTPUT, StageGenerator, run_stages


class DenseLayer(nn.Sequential):
    """BN -> ReLU -> Conv 3^3 (``in_ch`` -> ``growth_rate``) -> Dropout; the block concatenates its output."""

    def __init__(self, in_ch: int, growth_rate: int, dropout_rate: float):
        super().__init__(
            nn.BatchNorm3d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv3d(in_ch, growth_rate, kernel_size=3, padding=1),
            nn.Dropout(dropout_rate),
        )


class DenseBlock(nn.Module):
    """``n_layers`` densely connected :class:`DenseLayer` s: each sees the concatenation of all before it.

    Output channels: ``in_ch + n_layers * growth_rate``.
    """

    def __init__(self, n_layers: int, in_ch: int, growth_rate: int, dropout_rate: float):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth_rate, growth_rate, dropout_rate) for i in range(n_layers)
        )
        self.out_channels = in_ch + n_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            # the layer starts with an in-place ReLU, but after a BatchNorm, so x itself is untouched
            x = torch.cat([x, layer(x)], dim=1)
        return x


class DenseVoxNet(nn.Module):
    """Densely-connected volumetric ConvNet with an auxiliary side path (see the module docstring).

    **Outputs.** ``forward(x)`` returns the main logits in ``eval()`` mode and
    ``(main, aux)`` in ``train()`` mode; ``return_aux=True/False`` overrides the
    mode. ``aux`` is the auxiliary side path's logits, upsampled to the input's
    resolution. The training loss is ``loss(main) + aux_weight * loss(aux)``;
    :attr:`aux_weight` is only a stored setting the training loop reads (and may
    change or decay), the network never uses it. Its default 0.33 is our choice:
    neither the TSMAN paper nor our copy of DenseVoxNet's states the weight.

    Args:
        in_channels: channels of the input volume.
        n_classes: output channels (classes, including background).
        stem_channels: channels of the stride-2 stem convolution. Default 16.
        growth_rate: channels each dense layer adds. Default 12.
        n_layers: dense layers per block, one int for both blocks or a pair.
            Default 12.
        dropout_rate: dropout after every dense layer and the transition. Default 0.2.
        up_channels: channels after the two deconvolutions. Default (128, 64).
        aux_weight: weight of the auxiliary loss, read by the training loop. Default 0.33.

    Raises:
        TypeError / ValueError: on a non-positive size or a rate outside [0, 1).

    Example:
        >>> net = DenseVoxNet(in_channels=1, n_classes=3)
        >>> main, aux = net.train()(torch.randn(2, 1, 64, 64, 64))
        >>> loss = F.cross_entropy(main, y) + net.aux_weight * F.cross_entropy(aux, y)
        >>> logits = net.eval()(torch.randn(1, 1, 64, 64, 64))  # Tensor[1, 3, 64, 64, 64]
    """

    #: total down-sampling factor; input sizes must be multiples of it.
    size_divisor = 4

    #: ``channels_last_3d`` does not pay for it on the CPU at the reproduction's widths (stem 8,
    #: growth 4: a TSMAN step 1.08x *slower*; every dense layer concatenates along the channels,
    #: a strided copy in that format); at the paper's widths forward + backward was 1.2-1.35x
    #: faster. ``channels_last: on`` forces it; see :mod:`pyseg_noise.training.speed`.
    channels_last_pays = False

    def __init__(self, in_channels: int, n_classes: int, *, stem_channels: int = 16,
                 growth_rate: int = 12, n_layers: int | tuple[int, int] = 12,
                 dropout_rate: float = 0.2, up_channels: tuple[int, int] = (128, 64),
                 aux_weight: float = 0.33):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.n_classes = check_positive_int(n_classes, "n_classes")
        check_positive_int(stem_channels, "stem_channels")
        check_positive_int(growth_rate, "growth_rate")
        layers = (n_layers, n_layers) if isinstance(n_layers, int) and not isinstance(n_layers, bool) \
            else tuple(n_layers)
        if len(layers) != 2:
            raise ValueError(f"n_layers must be an int or a pair of ints, got {n_layers!r}")
        for i, k in enumerate(layers):
            check_positive_int(k, f"n_layers[{i}]")
        ups = tuple(up_channels)
        if len(ups) != 2:
            raise ValueError(f"up_channels must be a pair of ints, got {up_channels!r}")
        for i, c in enumerate(ups):
            check_positive_int(c, f"up_channels[{i}]")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        if isinstance(aux_weight, bool) or not isinstance(aux_weight, (int, float)) or aux_weight < 0:
            raise ValueError(f"aux_weight must be a non-negative float, got {aux_weight!r}")
        self.aux_weight = float(aux_weight)

        self.stem = nn.Conv3d(in_channels, stem_channels, kernel_size=3, stride=2, padding=1)
        self.block1 = DenseBlock(layers[0], stem_channels, growth_rate, dropout_rate)
        c1 = self.block1.out_channels
        self.transition = nn.Sequential(
            nn.BatchNorm3d(c1),
            nn.ReLU(inplace=True),
            nn.Conv3d(c1, c1, kernel_size=1),
            nn.Dropout(dropout_rate),
        )
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)
        self.block2 = DenseBlock(layers[1], c1, growth_rate, dropout_rate)
        c2 = self.block2.out_channels
        self.upsample = nn.Sequential(
            nn.BatchNorm3d(c2),
            nn.ReLU(inplace=True),
            nn.Conv3d(c2, c2, kernel_size=1),
            # no bias: batch norm follows and would cancel it
            nn.ConvTranspose3d(c2, ups[0], kernel_size=2, stride=2, bias=False),
            nn.BatchNorm3d(ups[0]),
            nn.ReLU(inplace=True),
            nn.ConvTranspose3d(ups[0], ups[1], kernel_size=2, stride=2, bias=False),
            nn.BatchNorm3d(ups[1]),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv3d(ups[1], n_classes, kernel_size=1)
        self.aux_head = nn.Sequential(
            nn.Conv3d(c1, n_classes, kernel_size=1),
            nn.ConvTranspose3d(n_classes, n_classes, kernel_size=2, stride=2),
        )
        self._attention_channels = {"f1": c1, "f2": c2, "f3": ups[1]}

    @property
    def attention_channels(self) -> dict[str, int]:
        """TSMAN attention points: after dense block 1 and 2 (CA), last decoder features (SA)."""
        return dict(self._attention_channels)

    def forward_stages(self, x: torch.Tensor) -> StageGenerator:
        """Staged forward pass (see :mod:`pyseg_noise.models.staged`); ends with ``(logits, aux)``."""
        check_volume_batch(x, self.in_channels, self.size_divisor, "DenseVoxNet")
        h = self.block1(self.stem(x))
        h = yield "f1", h
        t = self.transition(h)
        aux = self.aux_head(t)
        h = self.block2(self.pool(t))
        h = yield "f2", h
        h = self.upsample(h)
        h = yield "f3", h
        yield OUTPUT, (self.classifier(h), aux)

    def forward(self, x: torch.Tensor, *, return_aux: bool | None = None):
        """Segment a batch of volumes.

        Args:
            x (Tensor[B, in_channels, X, Y, Z]): X, Y, Z multiples of 4.
            return_aux: ``None`` (default) returns the aux logits in train mode
                only; ``True``/``False`` force it.

        Returns:
            logits (Tensor[B, n_classes, X, Y, Z]), or ``(logits, aux_logits)``
            (both ``Tensor[B, n_classes, X, Y, Z]``) when the aux output is returned.

        Raises:
            TypeError / ValueError: if ``x`` is not a float tensor of that shape.
        """
        logits, aux = run_stages(self.forward_stages(x))
        if self.training if return_aux is None else return_aux:
            return logits, aux
        return logits
