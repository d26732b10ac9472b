"""``nn.Module`` forms of TSMAN's loss attention and losses (SPEC 5-6)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import Tensor, nn

from pyseg_noise import ops
from pyseg_noise.ops import checks

__all__ = ["LossAttention", "AttendedCrossEntropyLoss", "TSMANLoss"]


def _check_backend(name: str, backend: Optional[str]) -> None:
    if backend is not None:
        checks.check_choice(name, "backend", backend, ops.BACKENDS)


class _Smoothing:
    """The Gaussian arguments of SPEC 5, validated once at construction."""

    def _set_smoothing(self, sigma2, kernel_size, spatial_dims, slice_dim) -> None:
        # n_spatial=3 accepts both spatial_dims; 2D input with spatial_dims=3 is refused at call time.
        checks.check_smoothing(type(self).__name__, sigma2, kernel_size, spatial_dims, slice_dim, 3)
        self.sigma2 = float(sigma2)
        self.kernel_size = kernel_size
        self.spatial_dims = spatial_dims
        self.slice_dim = slice_dim

    def _smoothing_kwargs(self) -> dict:
        return dict(sigma2=self.sigma2, kernel_size=self.kernel_size, spatial_dims=self.spatial_dims,
                    slice_dim=self.slice_dim)

    def _smoothing_repr(self) -> str:
        return (f"sigma2={self.sigma2}, kernel_size={self.kernel_size}, spatial_dims={self.spatial_dims}, "
                f"slice_dim={self.slice_dim}")


class LossAttention(_Smoothing, nn.Module):
    """TSMAN's loss attention (SPEC 5, TSMAN Eq. (7)): the Gaussian-smoothed XOR of two streams'
    hard predictions. Voxels where the streams agree (very easy, or so hard that the label is
    likely wrong) get weight 0 far from any disagreement; disagreements and their neighbourhood
    keep weight. No gradient. Wraps :func:`pyseg_noise.ops.loss_attention`.

    Example:
        >>> import torch
        >>> from pyseg_noise.losses import LossAttention
        >>> a = torch.zeros(1, 2, 5, 5); b = a.clone()
        >>> b[0, 1, 2, 2] = 1.0  # the streams disagree at one voxel
        >>> att = LossAttention()(a, b)
        >>> round(att[0, 2, 2].item(), 3), att[0, 0, 0].item()
        (0.332, 0.0)
    """

    def __init__(
        self,
        sigma2: float = 0.5,
        kernel_size: int = 3,
        spatial_dims: int = 2,
        slice_dim: int = -1,
        backend: Optional[str] = None,
    ) -> None:
        """
        Args:
            sigma2: variance of the Gaussian, > 0.
            kernel_size: odd kernel size >= 1.
            spatial_dims: 2 smooths within each slice (the paper's 3x3 kernel), 3 over the volume.
            slice_dim: the spatial axis that indexes the slices of 3D input (-1: the last).
            backend: None (by device), "reference", "cpu" or "triton".

        Raises:
            TypeError, ValueError: an even or non-int ``kernel_size``, ``sigma2 <= 0``,
                ``spatial_dims`` not 2 or 3, a ``slice_dim`` that does not index 3 axes,
                an unknown ``backend``.
        """
        super().__init__()
        self._set_smoothing(sigma2, kernel_size, spatial_dims, slice_dim)
        _check_backend(type(self).__name__, backend)
        self.backend = backend

    def forward(self, logits_a: Tensor, logits_b: Tensor) -> Tensor:
        """
        Args:
            logits_a (Tensor[B, C, *S]), logits_b (Tensor[B, C, *S]): the two streams' logits,
                same shape and dtype, S = (H, W) or (X, Y, Z).

        Returns:
            attention (Tensor[B, *S]) in [0, 1], dtype of ``logits_a``.

        Raises:
            TypeError, ValueError: as :func:`pyseg_noise.ops.loss_attention`.
        """
        return ops.loss_attention(logits_a, logits_b, **self._smoothing_kwargs(), backend=self.backend)

    def extra_repr(self) -> str:
        return self._smoothing_repr()


class AttendedCrossEntropyLoss(nn.Module):
    """Cross-entropy weighted per voxel by a constant attention map (SPEC 6, TSMAN Eq. (3)-(6)):
    ``attention_v * ce_v``; the attention receives no gradient. Wraps
    :func:`pyseg_noise.ops.attended_cross_entropy`.

    Example:
        >>> import torch
        >>> from pyseg_noise.losses import AttendedCrossEntropyLoss
        >>> logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
        >>> target = torch.zeros(1, 4, 4, dtype=torch.long)
        >>> attention = torch.full((1, 4, 4), 0.5)
        >>> loss = AttendedCrossEntropyLoss()(logits, target, attention)
        >>> round(loss.item(), 4)  # 0.5 * ln 2
        0.3466
    """

    def __init__(self, reduction: str = "mean", backend: Optional[str] = None) -> None:
        """
        Args:
            reduction: "mean" (over all voxels of all items), "sum" or "none" (Tensor[B, *S]).
            backend: None (by device), "reference", "cpu" or "triton".

        Raises:
            ValueError: an unknown ``reduction`` or ``backend``.
        """
        super().__init__()
        checks.check_reduction(type(self).__name__, reduction)
        _check_backend(type(self).__name__, backend)
        self.reduction = reduction
        self.backend = backend

    def forward(self, logits: Tensor, target: Tensor, attention: Tensor) -> Tensor:
        """
        Args:
            logits (Tensor[B, C, *S]): logits (receive the gradient).
            target (Tensor[B, *S]): labels, integer dtype, values in [0, C).
            attention (Tensor[B, *S]): per-voxel weights, treated as a constant.

        Raises:
            TypeError, ValueError: as :func:`pyseg_noise.ops.attended_cross_entropy`.
        """
        return ops.attended_cross_entropy(logits, target, attention, reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class TSMANLoss(_Smoothing, nn.Module):
    """TSMAN's two-stream loss (SPEC 6, TSMAN Eq. (6)) with its shared loss attention (Eq. (7)):
    ``attended_ce(logits_a, target, att) + attended_ce(logits_b, target, att)``,
    ``att = loss_attention(logits_a, logits_b)``. Both streams receive gradients. Wraps the fused
    :func:`pyseg_noise.ops.tsman_loss`.

    Example:
        >>> import torch
        >>> from pyseg_noise.losses import TSMANLoss
        >>> logits_a = torch.randn(2, 2, 8, 8, 4, requires_grad=True)
        >>> logits_b = torch.randn(2, 2, 8, 8, 4, requires_grad=True)
        >>> target = torch.randint(0, 2, (2, 8, 8, 4))
        >>> loss, att = TSMANLoss(return_attention=True)(logits_a, logits_b, target)
        >>> loss.backward()
        >>> tuple(att.shape), logits_a.grad is not None and logits_b.grad is not None
        ((2, 8, 8, 4), True)
    """

    def __init__(
        self,
        sigma2: float = 0.5,
        kernel_size: int = 3,
        spatial_dims: int = 2,
        slice_dim: int = -1,
        reduction: str = "mean",
        return_attention: bool = False,
        backend: Optional[str] = None,
    ) -> None:
        """
        Args:
            sigma2, kernel_size, spatial_dims, slice_dim: the Gaussian of :class:`LossAttention`.
            reduction: "mean" (each stream's mean over all voxels, summed), "sum" or "none"
                (Tensor[B, *S]).
            return_attention: ``forward`` returns ``(loss, attention)`` (for logging).
            backend: None (by device), "reference", "cpu" or "triton".

        Raises:
            TypeError, ValueError: as :class:`LossAttention`, or an unknown ``reduction``.
        """
        super().__init__()
        name = type(self).__name__
        self._set_smoothing(sigma2, kernel_size, spatial_dims, slice_dim)
        checks.check_reduction(name, reduction)
        _check_backend(name, backend)
        self.reduction = reduction
        self.return_attention = bool(return_attention)
        self.backend = backend

    def forward(self, logits_a: Tensor, logits_b: Tensor, target: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """
        Args:
            logits_a (Tensor[B, C, *S]), logits_b (Tensor[B, C, *S]): the two sub-networks' logits.
            target (Tensor[B, *S]): noisy labels, integer dtype, values in [0, C).

        Returns:
            loss, or (loss, attention (Tensor[B, *S])) when ``return_attention``.

        Raises:
            TypeError, ValueError: as :func:`pyseg_noise.ops.tsman_loss`.
        """
        return ops.tsman_loss(
            logits_a, logits_b, target, **self._smoothing_kwargs(), reduction=self.reduction,
            return_attention=self.return_attention, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"{self._smoothing_repr()}, reduction={self.reduction!r}"
