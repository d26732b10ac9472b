"""TSMAN: Two-Stream Mutual Attention Network (Min et al., AAAI 2019).

Two sub-networks of the same architecture (DenseVoxNet in the paper) see the
same input and are linked by attention models that read both streams'
features and gate each stream (forward features and, through the product,
backward gradients):

* f1, f2 — channel-wise attention (:class:`MutualChannelAttention`) at the
  sub-network's earlier attention points (DenseVoxNet: after dense blocks 1 and 2),
* f3 — spatial attention (:class:`MutualSpatialAttention`) on the last decoder
  features, just before the classifier,
* f4 — loss attention (TSMAN Eq. (7)), which lives in the loss, not in the
  network: ``pyseg_noise.ops.tsman_loss(logits_a, logits_b, target)``. The
  model only carries the switch :attr:`TSMAN.loss_attention` that the training
  loop reads.

The test-time prediction is the mean of the two streams' softmax (:meth:`TSMAN.predict`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attention import MutualChannelAttention, MutualSpatialAttention
from .densevoxnet import DenseVoxNet
from .input_checks import check_positive_int
from .staged import OUTPUT
from .vnet import VNet

SUBNETS: dict[str, Callable[..., nn.Module]] = {"densevoxnet": DenseVoxNet, "vnet": VNet}


class TSMAN(nn.Module):
    """Two-stream mutual attention network with switchable attentions (for the paper's Table 2).

    The sub-networks' last attention point gets the spatial attention (f3), all
    earlier ones the channel attention (f1, f2), following the paper's argument
    that only layers close to the loss have few enough noisy gradients for a
    spatial selector. A switched-off attention is not built at all (its
    parameters do not exist) and its point passes the features through; with
    every attention off the two streams are independent networks.

    **Training-loop contract.**

    * ``forward(x)`` in ``train()`` mode returns
      ``(logits_a, logits_b, aux_a, aux_b)``: the aux logits of each stream's
      auxiliary head (DenseVoxNet), ``None`` for a sub-network without one
      (V-Net). In ``eval()`` mode it returns ``(logits_a, logits_b)``.
      ``return_aux`` overrides the mode.
    * If :attr:`loss_attention` is true, the loss is
      ``tsman_loss(logits_a, logits_b, target)`` (TSMAN Eq. (6)-(7), SPEC 5-6),
      otherwise the plain sum of both streams' cross-entropies (the attention
      map set to 1; Table 2's "without f4"). The aux terms are added with the
      weight :attr:`aux_weight`.
    * :meth:`predict` gives the test-time probabilities.

    Args:
        in_channels: channels of the input volume.
        n_classes: output channels (classes, including background).
        subnet: ``"densevoxnet"`` (default, the paper's), ``"vnet"``, or a
            callable ``subnet(in_channels, n_classes, **subnet_kwargs)`` returning
            a module that follows the protocol of :mod:`pyseg_noise.models.staged`.
            It is called twice, so the streams start from different random weights.
        subnet_kwargs: extra keyword arguments for ``subnet`` (e.g. smaller
            ``n_layers`` for DenseVoxNet, ``n_filters`` for V-Net).
        spatial_attention: build f3. Default True.
        channel_attention: build f1, f2. Default True.
        loss_attention: the training loop's switch for f4. Default True.
        channel_reduction: reduction of the channel attention's MLP. Default 8.
        spatial_hidden: hidden channels of the spatial attention. Default ``C // 2``.

    Raises:
        ValueError: on an unknown ``subnet`` name or a sub-network without the
            staged-forward protocol.

    Example:
        >>> model = TSMAN(in_channels=1, n_classes=3)
        >>> logits_a, logits_b, aux_a, aux_b = model.train()(x)     # x: Tensor[B, 1, 64, 64, 64]
        >>> probs = model.eval().predict(x)                         # Tensor[B, 3, 64, 64, 64]
    """

    def __init__(self, in_channels: int, n_classes: int, *,
                 subnet: str | Callable[..., nn.Module] = "densevoxnet",
                 subnet_kwargs: dict | None = None,
                 spatial_attention: bool = True, channel_attention: bool = True,
                 loss_attention: bool = True, channel_reduction: int = 8,
                 spatial_hidden: int | None = None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.n_classes = check_positive_int(n_classes, "n_classes")
        if isinstance(subnet, str):
            if subnet.lower() not in SUBNETS:
                raise ValueError(f"subnet must be one of {sorted(SUBNETS)} or a callable, got {subnet!r}")
            factory = SUBNETS[subnet.lower()]
        elif callable(subnet):
            factory = subnet
        else:
            raise TypeError(f"subnet must be a name or a callable, got {type(subnet).__name__}")
        kwargs = dict(subnet_kwargs or {})
        self.stream_a = factory(in_channels, n_classes, **kwargs)
        self.stream_b = factory(in_channels, n_classes, **kwargs)
        for attr in ("attention_channels", "forward_stages"):
            if not hasattr(self.stream_a, attr):
                raise ValueError(
                    f"subnet {type(self.stream_a).__name__} lacks `{attr}`; a TSMAN sub-network must "
                    "follow the staged-forward protocol of pyseg_noise.models.staged"
                )

        self.spatial_attention = bool(spatial_attention)
        self.channel_attention = bool(channel_attention)
        self.loss_attention = bool(loss_attention)
        points = list(self.stream_a.attention_channels.items())
        self.attention = nn.ModuleDict()
        for i, (name, channels) in enumerate(points):
            if i == len(points) - 1:
                if self.spatial_attention:
                    self.attention[name] = MutualSpatialAttention(channels, hidden=spatial_hidden)
            elif self.channel_attention:
                self.attention[name] = MutualChannelAttention(channels, reduction=channel_reduction)

    @property
    def channels_last_pays(self) -> bool:
        """Whether ``channels_last_3d`` speeds the streams up (their sub-network's own measurement)."""
        return bool(getattr(self.stream_a, "channels_last_pays", False))

    @property
    def aux_weight(self) -> float:
        """The sub-network's auxiliary-loss weight (0 for a sub-network without an aux head)."""
        return float(getattr(self.stream_a, "aux_weight", 0.0))

    def forward(self, x: torch.Tensor, *, return_aux: bool | None = None):
        """Run both streams in lockstep, applying the enabled attentions between them.

        Args:
            x (Tensor[B, in_channels, X, Y, Z]): sizes multiples of the
                sub-network's ``size_divisor`` (4 for DenseVoxNet, 16 for V-Net).
            return_aux: ``None`` (default) follows ``self.training``.

        Returns:
            ``(logits_a, logits_b)``, each ``Tensor[B, n_classes, X, Y, Z]``, or
            ``(logits_a, logits_b, aux_a, aux_b)`` when the aux outputs are
            returned (``aux_*`` is ``None`` for a sub-network without an aux head).

        Raises:
            TypeError / ValueError: if ``x`` is not a float tensor of a valid shape.
        """
        stages_a = self.stream_a.forward_stages(x)
        stages_b = self.stream_b.forward_stages(x)
        # both generators validate x on their first step; stream a raises first
        name_a, h_a = next(stages_a)
        name_b, h_b = next(stages_b)
        while name_a != OUTPUT:
            if name_a != name_b:  # only a broken sub-network can get here
                raise RuntimeError(f"TSMAN streams out of step: {name_a!r} vs {name_b!r}")
            if name_a in self.attention:
                h_a, h_b = self.attention[name_a](h_a, h_b)
            name_a, h_a = stages_a.send(h_a)
            name_b, h_b = stages_b.send(h_b)
        if name_b != OUTPUT:
            raise RuntimeError(f"TSMAN streams out of step: {name_a!r} vs {name_b!r}")
        logits_a, aux_a = h_a
        logits_b, aux_b = h_b
        if self.training if return_aux is None else return_aux:
            return logits_a, logits_b, aux_a, aux_b
        return logits_a, logits_b

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time prediction: the mean of the two streams' softmax (TSMAN §"Two-Stream Architecture").

        Runs in the current mode and with the current grad mode (wrap it in
        ``torch.no_grad()`` and call ``eval()`` for inference, as
        :func:`pyseg_noise.inference.sliding_window_inference` does).

        Args:
            x (Tensor[B, in_channels, X, Y, Z]).

        Returns:
            probabilities (Tensor[B, n_classes, X, Y, Z]); ``argmax(1)`` is the label map.
        """
        logits_a, logits_b = self.forward(x, return_aux=False)
        return 0.5 * (torch.softmax(logits_a, dim=1) + torch.softmax(logits_b, dim=1))
