"""``nn.Module`` forms of PINT's noise-tolerant losses (SPEC 2 and 4)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from pyseg_noise import ops
from pyseg_noise.ops import checks

__all__ = ["PINTPixelLoss", "PINTImageLoss"]

_PSEUDO_LABELS = ("soft", "hard")


def _check_common(name: str, pseudo_label: str, reduction: str, backend: Optional[str]) -> None:
    checks.check_choice(name, "pseudo_label", pseudo_label, _PSEUDO_LABELS)
    checks.check_reduction(name, reduction)
    if backend is not None:
        checks.check_choice(name, "backend", backend, ops.BACKENDS)


class PINTPixelLoss(nn.Module):
    """PINT's pixel-wise noise-tolerant loss (SPEC 2, PINT Eq. (2)-(3)).

    Per voxel, with ``s = softmax_C(logits)``, ``alpha = exp(-entropy(teacher_prob))``:
    ``alpha * CE(s, target) + (1 - alpha) * mean_c (s_c - y_hat_c)^2``, ``y_hat`` the teacher
    probabilities (soft) or their one-hot argmax (hard). Voxels the EMA teacher is unsure of lean
    on the teacher (MSE); confident ones on the label (CE). Wraps
    :func:`pyseg_noise.ops.pint_pixel_loss`.

    Example:
        >>> import torch
        >>> from pyseg_noise.losses import PINTPixelLoss
        >>> logits = torch.randn(2, 2, 8, 8, 4, requires_grad=True)
        >>> target = torch.randint(0, 2, (2, 8, 8, 4))
        >>> teacher_prob = torch.softmax(torch.randn(2, 2, 8, 8, 4), dim=1)
        >>> loss = PINTPixelLoss()(logits, target, teacher_prob)
        >>> loss.backward()
        >>> tuple(logits.grad.shape)
        (2, 2, 8, 8, 4)
    """

    def __init__(
        self,
        pseudo_label: str = "soft",
        reduction: str = "mean",
        normalize_entropy: bool = False,
        backend: Optional[str] = None,
    ) -> None:
        """
        Args:
            pseudo_label: "soft" (the teacher probabilities) or "hard" (their one-hot argmax,
                ties to the lowest class).
            reduction: "mean" (over all voxels of all items), "sum" or "none" (Tensor[B, *S]).
            normalize_entropy: divide the entropy by log C, so alpha spans (0, 1] for any C.
            backend: None (by device), "reference", "cpu" or "triton".

        Raises:
            ValueError: an unknown ``pseudo_label``, ``reduction`` or ``backend``.
        """
        super().__init__()
        _check_common(type(self).__name__, pseudo_label, reduction, backend)
        self.pseudo_label = pseudo_label
        self.reduction = reduction
        self.normalize_entropy = bool(normalize_entropy)
        self.backend = backend

    def forward(self, logits: Tensor, target: Tensor, teacher_prob: Tensor) -> Tensor:
        """
        Args:
            logits (Tensor[B, C, *S]): student logits (receive the gradient).
            target (Tensor[B, *S]): noisy labels, integer dtype, values in [0, C).
            teacher_prob (Tensor[B, C, *S]): mean teacher probabilities (no gradient).

        Raises:
            TypeError, ValueError: as :func:`pyseg_noise.ops.pint_pixel_loss`.
        """
        return ops.pint_pixel_loss(
            logits, target, teacher_prob, pseudo_label=self.pseudo_label, reduction=self.reduction,
            normalize_entropy=self.normalize_entropy, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"pseudo_label={self.pseudo_label!r}, reduction={self.reduction!r}"


class PINTImageLoss(nn.Module):
    """PINT's image-level noise-tolerant loss (SPEC 4, PINT Eq. (4)-(5)).

    Each slice ``i`` is an image with ``alpha_i = exp(-U_i)``, ``U_i`` its mean teacher entropy:
    ``loss_i = alpha_i * mean(ce) + (1 - alpha_i) * mean(mse)`` over the slice. Wraps
    :func:`pyseg_noise.ops.pint_image_loss`.

    Example:
        >>> import torch
        >>> from pyseg_noise.losses import PINTImageLoss
        >>> logits = torch.randn(2, 2, 8, 8, 4, requires_grad=True)
        >>> target = torch.randint(0, 2, (2, 8, 8, 4))
        >>> teacher_prob = torch.softmax(torch.randn(2, 2, 8, 8, 4), dim=1)
        >>> per_slice = PINTImageLoss(reduction="none")(logits, target, teacher_prob)
        >>> tuple(per_slice.shape)  # [B, n_slices], slices along the last axis
        (2, 4)
    """

    def __init__(
        self,
        pseudo_label: str = "soft",
        reduction: str = "mean",
        normalize_entropy: bool = False,
        slice_dim: int = -1,
        backend: Optional[str] = None,
    ) -> None:
        """
        Args:
            pseudo_label: "soft" or "hard", as :class:`PINTPixelLoss`.
            reduction: "mean" (over all slices of all items), "sum" or "none" (Tensor[B, n_slices]).
            normalize_entropy: divide the entropy by log C.
            slice_dim: the spatial axis that indexes the images of 3D input (-1: the last).
            backend: None (by device), "reference", "cpu" or "triton".

        Raises:
            ValueError: an unknown ``pseudo_label``, ``reduction`` or ``backend``.
            TypeError: a ``slice_dim`` that is not an int.
        """
        super().__init__()
        name = type(self).__name__
        _check_common(name, pseudo_label, reduction, backend)
        if isinstance(slice_dim, bool) or not isinstance(slice_dim, int):
            raise TypeError(f"{name}: slice_dim must be an int (a spatial axis), got {type(slice_dim).__name__}")
        self.pseudo_label = pseudo_label
        self.reduction = reduction
        self.normalize_entropy = bool(normalize_entropy)
        self.slice_dim = slice_dim
        self.backend = backend

    def forward(self, logits: Tensor, target: Tensor, teacher_prob: Tensor) -> Tensor:
        """
        Args:
            logits (Tensor[B, C, H, W] or Tensor[B, C, X, Y, Z]): student logits.
            target (Tensor[B, *S]): noisy labels, integer dtype, values in [0, C).
            teacher_prob (Tensor[B, C, *S]): mean teacher probabilities (no gradient).

        Raises:
            TypeError, ValueError: as :func:`pyseg_noise.ops.pint_image_loss`.
        """
        return ops.pint_image_loss(
            logits, target, teacher_prob, pseudo_label=self.pseudo_label, reduction=self.reduction,
            normalize_entropy=self.normalize_entropy, slice_dim=self.slice_dim, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"pseudo_label={self.pseudo_label!r}, reduction={self.reduction!r}, slice_dim={self.slice_dim}"
