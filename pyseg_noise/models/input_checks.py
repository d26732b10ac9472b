"""Validation of the arguments and inputs of the volumetric networks.

Every network in :mod:`pyseg_noise.models` takes ``x (Tensor[B, C_in, X, Y, Z])``
and shrinks it by a fixed power of two before upsampling it back; a size that is
not a multiple of that factor would make the skip connections (V-Net) or the
final resolution (DenseVoxNet) not line up, and PyTorch would fail deep inside a
layer with a message about some intermediate shape. These checks fail first, with
a message naming the argument.
"""
from __future__ import annotations

import torch


def check_positive_int(value, name: str) -> int:
    """Return ``value`` if it is a positive ``int`` (not a bool), else raise.

    Raises:
        TypeError: if ``value`` is not an int.
        ValueError: if ``value < 1``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_rate(value, name: str) -> float:
    """Return ``value`` as a float if it is a probability in ``[0, 1)``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_volume_batch(x, in_channels: int, divisor: int, model: str, name: str = "x") -> None:
    """Check that ``x`` is a ``Tensor[B, in_channels, X, Y, Z]`` with X, Y, Z multiples of ``divisor``.

    Args:
        x: the network input.
        in_channels: the channel count the network was built for.
        divisor: the total down-sampling factor of the network.
        model: the network's name, for the message.
        name: the argument's name, for the message.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: on a wrong rank, channel count or spatial size.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{model}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 5:
        raise ValueError(
            f"{model}: {name} must be a 5-D tensor [B, C_in, X, Y, Z], got {x.ndim}-D shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model}: {name} has {x.shape[1]} channels (shape {tuple(x.shape)}) but the network "
            f"was built with in_channels={in_channels}"
        )
    spatial = tuple(x.shape[2:])
    if any(s == 0 or s % divisor for s in spatial):
        raise ValueError(
            f"{model}: the spatial size of {name} must be a positive multiple of {divisor} on every "
            f"axis, got {spatial} (pad or crop the input, e.g. to the patch size)"
        )
