"""Argument checking shared by the metrics: masks, spacing and connectivity.

Every metric accepts numpy arrays or torch tensors of any dtype, like
``medpy.metric.binary``: zero is background, anything else is foreground.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

try:  # torch is a hard dependency of the package, but keep the metrics usable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None

ArrayLike = Union[np.ndarray, "torch.Tensor"]

__all__ = ["as_binary_mask", "check_pair", "check_spacing", "check_connectivity"]


def as_binary_mask(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x != 0`` as a C-contiguous numpy bool array.

    Args:
        x (ndarray | Tensor[*S]): a mask of any dtype (torch tensors may live on any device).
        name: the argument's name, used in error messages.

    Raises:
        TypeError: ``x`` is neither a numpy array nor a torch tensor.
        ValueError: ``x`` is 0-dimensional or contains NaN.
    """
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError(f"{name} contains NaN; expected a binary mask")
    if x.dtype == np.bool_:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x != 0)


def check_pair(prediction: ArrayLike, reference: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Both masks as numpy bool arrays of the same shape.

    Raises:
        ValueError: the shapes differ.
    """
    pred = as_binary_mask(prediction, "prediction")
    ref = as_binary_mask(reference, "reference")
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(ref.shape)}"
        )
    return pred, ref


def check_spacing(spacing: Optional[Union[float, Sequence[float]]], ndim: int) -> Optional[np.ndarray]:
    """Spacing as a float64 array of length ``ndim`` (a scalar applies to every axis), or None.

    Raises:
        ValueError: wrong length, or a value that is not finite and > 0.
    """
    if spacing is None:
        return None
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.ndim == 0:
        sp = np.full(ndim, float(sp))
    if sp.ndim != 1 or sp.shape[0] != ndim:
        raise ValueError(
            f"spacing must be a number or a sequence of {ndim} numbers (one per axis), got {spacing!r}"
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be finite and > 0 on every axis, got {spacing!r}")
    return np.ascontiguousarray(sp)


def check_connectivity(connectivity: int, ndim: int) -> int:
    """``connectivity`` as scipy.ndimage.generate_binary_structure reads it, clamped to ``ndim``.

    1 = face neighbours only, ``ndim`` = all neighbours. Values above ``ndim``
    act like ``ndim`` (scipy's and hence medpy's behaviour); values below 1,
    which scipy turns into a structure without neighbours, are rejected.

    Raises:
        TypeError: not an integer.
        ValueError: below 1.
    """
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)):
        raise TypeError(f"connectivity must be an int >= 1, got {connectivity!r}")
    if int(connectivity) < 1:
        raise ValueError(f"connectivity must be >= 1 (1 = face neighbours, {ndim} = all), got {connectivity}")
    return min(int(connectivity), ndim)
