"""Numpy transforms of (image, label) volume pairs: z-score, pad, random crop, in-plane rot90/flip.

``image`` is ``ndarray[C, X, Y, Z]`` float32, ``label`` ``ndarray[X, Y, Z]``.
Random transforms take an explicit ``numpy.random.Generator`` so that a
dataset can derive one per item from ``(seed, epoch, index)`` and give the
same crops whatever the number of DataLoader workers.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["zscore", "pad_to_size", "random_crop", "random_rot_flip", "check_crop_size"]

_EPS = 1e-8


def zscore(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per channel over the whole volume (PINT §3.1).

    A constant channel becomes all zeros instead of dividing by zero.

    Args:
        image (ndarray[C, *S]): float image.

    Returns:
        float32 ndarray[C, *S].
    """
    image = image.astype(np.float32, copy=True)
    for c in range(image.shape[0]):
        channel = image[c]
        # float64 accumulators: float32 sums drift on 10^7-voxel LA volumes
        mean = channel.mean(dtype=np.float64)
        std = channel.std(dtype=np.float64)
        channel -= np.float32(mean)
        channel /= np.float32(max(std, _EPS))
    return image


def check_crop_size(crop_size: Optional[Sequence[int]]) -> Optional[Tuple[int, int, int]]:
    """``crop_size`` as a tuple of three positive ints, or None.

    Raises:
        ValueError: not three positive integers.
    """
    if crop_size is None:
        return None
    try:
        size = tuple(int(s) for s in crop_size)
        ok = len(size) == 3 and all(s > 0 and s == c for s, c in zip(size, crop_size))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"crop_size must be three positive integers (X, Y, Z) or None, got {crop_size!r}")
    return size


def pad_to_size(image: np.ndarray, label: np.ndarray, size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pad every spatial axis shorter than ``size`` to exactly ``size``.

    The padding is split evenly (the extra voxel goes after) and filled with 0
    in both the image — the mean intensity after :func:`zscore` — and the label
    (background). The LA reference code pads ``(size - s) // 2 + 3`` voxels on
    each side instead; the extra 3 voxels only add background, so we pad the minimum.

    Args:
        image (ndarray[C, X, Y, Z]), label (ndarray[X, Y, Z]), size: (x, y, z).

    Returns:
        (image, label), unchanged if already large enough.
    """
    spatial = label.shape
    pads = []
    for s, target in zip(spatial, size):
        total = max(int(target) - s, 0)
        pads.append((total // 2, total - total // 2))
    if not any(p for pair in pads for p in pair):
        return image, label
    image = np.pad(image, [(0, 0)] + pads, mode="constant", constant_values=0)
    label = np.pad(label, pads, mode="constant", constant_values=0)
    return image, label


def random_crop(
    image: np.ndarray, label: np.ndarray, size: Sequence[int], rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """Pad (see :func:`pad_to_size`) then crop a uniformly placed ``size`` box, as LA's ``RandomCrop``.

    Args:
        image (ndarray[C, X, Y, Z]), label (ndarray[X, Y, Z]), size: (x, y, z),
        rng: the generator that places the box.

    Returns:
        (image[C, *size], label[*size]) as views of the (padded) inputs.
    """
    image, label = pad_to_size(image, label, size)
    starts = [int(rng.integers(0, s - t + 1)) for s, t in zip(label.shape, size)]
    box = tuple(slice(st, st + t) for st, t in zip(starts, size))
    return image[(slice(None),) + box], label[box]


def random_rot_flip(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    axes: Tuple[int, int] = (0, 1),
    always_flip: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k * 90°`` (k uniform in 0..3) in the plane ``axes``, then maybe flip an in-plane axis.

    In-plane only, like the LA code's ``RandomRotFlip``: the slice axis Z is
    never moved. The LA code always flips (along axis 0 or 1), and a flip after
    a rotation is always a reflection, so it only ever yields 4 of the 8
    in-plane symmetries and never the original orientation. Here the flip
    happens with probability 1/2, so all 8 symmetries (identity included) are
    equally likely; ``always_flip=True`` gives the LA behaviour. Call it
    before cropping: an odd ``k`` swaps X and Y.

    Args:
        image (ndarray[C, X, Y, Z]), label (ndarray[X, Y, Z]), rng: the generator,
        axes: the two spatial axes of the plane,
        always_flip: reproduce the LA code exactly (see above).

    Returns:
        (image, label) as views (negative strides; copy before ``torch.from_numpy``).
    """
    k = int(rng.integers(0, 4))
    flip_axis = axes[int(rng.integers(0, 2))]
    flip = always_flip or bool(rng.integers(0, 2))
    label = np.rot90(label, k, axes=axes)
    image = np.rot90(image, k, axes=(axes[0] + 1, axes[1] + 1))
    if flip:
        label = np.flip(label, axis=flip_axis)
        image = np.flip(image, axis=flip_axis + 1)
    return image, label
