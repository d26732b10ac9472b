"""V-Net as the left-atrium (LA) code bases use it, with PINT's two dropout layers.

Milletari et al. 2016, in the plain form of the LA semi-/noisy-supervised
literature (UA-MT and its descendants, which PINT builds on): no residual
connections inside a stage, batch norm after every convolution, additive skips.
PINT §3.1 adds "two dropout layers after the L-5 and R-1 stage layers with
dropout rate 0.5", i.e. at the bottleneck and before the output convolution.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .input_checks import check_positive_int, check_rate, check_volume_batch
from .staged import OUTPUT, StageGenerator, run_stages

ENCODER_CONVS = (1, 2, 3, 3, 3)
DECODER_CONVS = (3, 3, 2, 1)


class ConvStage(nn.Sequential):
    """``n_convs`` x (Conv 3^3, padding 1 -> BatchNorm -> ReLU); the first maps ``in_ch`` to ``out_ch``."""

    def __init__(self, n_convs: int, in_ch: int, out_ch: int):
        layers = []
        for i in range(n_convs):
            layers += [
                nn.Conv3d(in_ch if i == 0 else out_ch, out_ch, kernel_size=3, padding=1),
                nn.BatchNorm3d(out_ch),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class Down(nn.Sequential):
    """Strided 2^3 convolution (halves every spatial size) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv3d(in_ch, out_ch, kernel_size=2, stride=2),
            nn.BatchNorm3d(out_ch),
            nn.ReLU(inplace=True),
        )


class Up(nn.Sequential):
    """Transposed 2^3 convolution, stride 2 (doubles every spatial size) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.ConvTranspose3d(in_ch, out_ch, kernel_size=2, stride=2),
            nn.BatchNorm3d(out_ch),
            nn.ReLU(inplace=True),
        )


class VNet(nn.Module):
    """V-Net for 3-D segmentation (LA code-base form) with PINT's switchable dropout.

    Encoder stages of 1/2/3/3/3 convolutions (3^3) with ``n, 2n, 4n, 8n, 16n``
    channels, each followed (except the last) by a strided 2^3 convolution;
    a decoder of transposed 2^3 convolutions and stages of 3/3/2/1 convolutions,
    with additive skips from the encoder stage of the same resolution; a 1^3
    output convolution. Every convolution is followed by batch norm and ReLU.

    Dropout (``nn.Dropout3d``, i.e. whole channels, as in the LA code bases;
    rate 0.5) sits after encoder stage 5 (the bottleneck) and after the last
    decoder stage, right before the output convolution (PINT §3.1).

    **Dropout and the mean teacher.** As usual, dropout is on in ``train()``
    mode and off in ``eval()`` mode. ``forward(x, dropout=True)`` forces it on
    whatever the mode: a teacher in ``eval()`` mode can run perturbed passes
    with dropout on and batch norm on its running statistics
    (``teacher.eval(); teacher(x + noise, dropout=True)``). PINT's trainer by
    default calls the teacher in ``train()`` mode instead (batch norm on the
    perturbed batch's statistics: with running statistics the teacher collapsed
    to background at small scale; ``teacher_batchnorm`` in
    ``pyseg_noise.training.pint`` chooses). ``dropout=False`` forces it off.

    With ``n_filters=16, in_channels=1, n_classes=2`` the network has
    9,448,866 parameters.

    Args:
        in_channels: channels of the input volume (1 for LA MRI).
        n_classes: output channels (classes, including background).
        n_filters: ``n``, the channel count of the first stage. Default 16.
        has_dropout: build the two dropout layers. Default True.
        dropout_rate: their rate. Default 0.5 (PINT).

    Raises:
        TypeError / ValueError: on a non-positive-int size or a rate outside [0, 1).

    Example:
        >>> net = VNet(in_channels=1, n_classes=2, n_filters=16)
        >>> logits = net(torch.randn(2, 1, 112, 112, 80))   # Tensor[2, 2, 112, 112, 80]
    """

    #: total down-sampling factor; input sizes must be multiples of it.
    size_divisor = 16
    #: ``channels_last_3d`` is faster for it on the CPU (oneDNN): measured 1.16x (forward + backward,
    #: n_filters 8) and 1.5x (whole V-Net step, n_filters 4); see :mod:`pyseg_noise.training.speed`.
    channels_last_pays = True

    def __init__(self, in_channels: int, n_classes: int, n_filters: int = 16, *,
                 has_dropout: bool = True, dropout_rate: float = 0.5):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.n_classes = check_positive_int(n_classes, "n_classes")
        self.n_filters = check_positive_int(n_filters, "n_filters")
        self.has_dropout = bool(has_dropout)
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        n = n_filters
        widths = [n * 2**i for i in range(5)]  # n, 2n, 4n, 8n, 16n

        self.enc = nn.ModuleList(
            ConvStage(k, in_channels if i == 0 else widths[i], widths[i])
            for i, k in enumerate(ENCODER_CONVS)
        )
        self.down = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(4))
        # decoder level j works at the resolution of encoder stage 4 - j (8n, 4n, 2n, n)
        self.up = nn.ModuleList(Up(widths[4 - j], widths[3 - j]) for j in range(4))
        self.dec = nn.ModuleList(
            ConvStage(k, widths[3 - j], widths[3 - j]) for j, k in enumerate(DECODER_CONVS)
        )
        self.out_conv = nn.Conv3d(n, n_classes, kernel_size=1)

    @property
    def attention_channels(self) -> dict[str, int]:
        """TSMAN attention points: end of encoder stages 4 and 5 (CA), last decoder stage (SA)."""
        n = self.n_filters
        return {"f1": 8 * n, "f2": 16 * n, "f3": n}

    def _dropout(self, h: torch.Tensor, active: bool) -> torch.Tensor:
        return F.dropout3d(h, p=self.dropout_rate, training=active) if active else h

    def _dropout_active(self, dropout: bool | None) -> bool:
        if dropout is None:
            return self.has_dropout and self.training
        if dropout and not self.has_dropout:
            raise ValueError("VNet.forward: dropout=True but the network was built with has_dropout=False")
        return bool(dropout)

    def forward_stages(self, x: torch.Tensor, *, dropout: bool | None = None) -> StageGenerator:
        """Staged forward pass (see :mod:`pyseg_noise.models.staged`); ends with ``(logits, None)``."""
        check_volume_batch(x, self.in_channels, self.size_divisor, "VNet")
        drop = self._dropout_active(dropout)
        skips = []
        h = x
        for i in range(5):
            h = self.enc[i](h)
            if i == 3:
                h = yield "f1", h
            if i < 4:
                skips.append(h)
                h = self.down[i](h)
        h = yield "f2", h
        h = self._dropout(h, drop)
        for j in range(4):
            h = self.dec[j](self.up[j](h) + skips[3 - j])
        h = yield "f3", h
        h = self._dropout(h, drop)
        yield OUTPUT, (self.out_conv(h), None)

    def forward(self, x: torch.Tensor, *, dropout: bool | None = None) -> torch.Tensor:
        """Segment a batch of volumes.

        Args:
            x (Tensor[B, in_channels, X, Y, Z]): X, Y, Z multiples of 16.
            dropout: ``None`` (default) follows ``self.training``; ``True`` forces
                the two dropout layers on (e.g. a teacher in eval mode, PINT's
                M passes); ``False`` forces them off.

        Returns:
            logits (Tensor[B, n_classes, X, Y, Z]).

        Raises:
            TypeError / ValueError: if ``x`` is not a float tensor of that shape,
                or ``dropout=True`` without dropout layers.
        """
        logits, _ = run_stages(self.forward_stages(x, dropout=dropout))
        return logits
