"""Surface-distance metrics (ASD, ASSD, HD, HD95) equal to ``medpy.metric.binary``'s.

The surface of a mask is medpy's: the mask minus its binary erosion by
``scipy.ndimage.generate_binary_structure(ndim, connectivity)``, with
everything outside the array counted as background. The distance of a
surface voxel of ``A`` to ``B`` is the Euclidean distance (in units of
``spacing``, voxels by default) to the nearest surface voxel of ``B``,
read from ``scipy.ndimage.distance_transform_edt``.

Speed: both masks are cropped to their joint bounding box plus a one-voxel
margin before the erosion and the distance transform, so the cost scales with
the object, not with the volume. The crop changes no value:

* the erosion of a foreground voxel only looks at its direct neighbours, and
  every voxel outside the bounding box is background in both masks, which is
  what scipy assumes outside the array (``border_value=0``) — so the surfaces
  are the same voxels;
* scipy's distance transform is exact (not a chamfer or propagation scheme),
  so the distance between two surface voxels is the same whether or not the
  array extends beyond them: the nearest surface voxel of ``B`` is always
  inside the box, and no path needs to leave the box.

The margin is not needed for correctness; it keeps the crop valid if a caller
ever switches the erosion to ``border_value=1``. The values are bitwise equal to
medpy's (same surface voxels in the same order, same distance transform).

Empty masks (medpy raises ``RuntimeError``): both empty -> 0.0 (the surfaces
agree; matches ``dice == 1``); exactly one empty -> ``inf`` (there is no
surface to measure against, and an ``inf`` in a mean over cases makes the
failure visible rather than silently dropping it as ``nan`` would with
``nanmean``).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from .masks import ArrayLike, check_connectivity, check_pair, check_spacing

__all__ = ["surface_distances", "asd", "assd", "hd", "hd95", "surface_distance_metrics"]

Spacing = Optional[Union[float, Sequence[float]]]

# The box is grown by this many voxels on each side (see the module docstring for why one is plenty).
_CROP_MARGIN = 1


def _joint_crop(pred: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of ``pred | ref`` grown by ``_CROP_MARGIN``."""
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        nonzero = np.flatnonzero(np.any(union, axis=others) if others else union)
        lo = max(int(nonzero[0]) - _CROP_MARGIN, 0)
        hi = min(int(nonzero[-1]) + 1 + _CROP_MARGIN, union.shape[axis])
        box.append(slice(lo, hi))
    box = tuple(box)
    return pred[box], ref[box]


def _surface(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    # border_value=0 (scipy's default, as in medpy): the outside of the array is background.
    return mask ^ binary_erosion(mask, structure=footprint, iterations=1)


def _directed(src_surface: np.ndarray, dst_surface: np.ndarray, spacing: Optional[np.ndarray]) -> np.ndarray:
    # The EDT measures distance to the nearest zero, so the destination surface is inverted.
    dt = distance_transform_edt(~dst_surface, sampling=spacing)
    return dt[src_surface]


def _prepare(prediction, reference, spacing, connectivity):
    pred, ref = check_pair(prediction, reference)
    sp = check_spacing(spacing, pred.ndim)
    conn = check_connectivity(connectivity, pred.ndim)
    return pred, ref, sp, conn


def _empty_value(pred: np.ndarray, ref: np.ndarray) -> Optional[float]:
    """0.0 if both masks are empty, inf if exactly one is, None if neither."""
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if pred_any and ref_any:
        return None
    return 0.0 if not (pred_any or ref_any) else math.inf


def _both_directions(pred, ref, sp, conn) -> Tuple[np.ndarray, np.ndarray]:
    pred, ref = _joint_crop(pred, ref)
    footprint = generate_binary_structure(pred.ndim, conn)
    pred_surface = _surface(pred, footprint)
    ref_surface = _surface(ref, footprint)
    return _directed(pred_surface, ref_surface, sp), _directed(ref_surface, pred_surface, sp)


def surface_distances(
    prediction: ArrayLike, reference: ArrayLike, spacing: Spacing = None, connectivity: int = 1
) -> np.ndarray:
    """Distances from each surface voxel of ``prediction`` to the surface of ``reference``.

    Same values, in the same (C) order, as medpy's private ``__surface_distances``.

    Args:
        prediction (ndarray | Tensor[*S]): mask; nonzero = foreground.
        reference (ndarray | Tensor[*S]): mask of the same shape.
        spacing: voxel size per axis (a number applies to all axes); None = 1 voxel.
        connectivity: neighbourhood of the surface extraction, as in
            ``scipy.ndimage.generate_binary_structure`` (1 = faces, ``ndim`` = all).

    Returns:
        float64 ndarray[N] with one distance per surface voxel of ``prediction``
        (empty if ``prediction`` is empty; all ``inf`` if only ``reference`` is).

    Raises:
        ValueError: the shapes differ, bad spacing, connectivity < 1.
    """
    pred, ref, sp, conn = _prepare(prediction, reference, spacing, connectivity)
    if not pred.any():
        return np.zeros(0, dtype=np.float64)
    footprint = generate_binary_structure(pred.ndim, conn)
    if not ref.any():
        return np.full(int(_surface(pred, footprint).sum()), math.inf)
    pred, ref = _joint_crop(pred, ref)
    return _directed(_surface(pred, footprint), _surface(ref, footprint), sp)


def asd(prediction: ArrayLike, reference: ArrayLike, spacing: Spacing = None, connectivity: int = 1) -> float:
    """Average surface distance, directed prediction -> reference (``medpy.metric.binary.asd``).

    The mean over the surface voxels of ``prediction`` of their distance to the
    surface of ``reference``. This is the "ASD" the LA papers (PINT, UA-MT) report.
    Not symmetric; see :func:`assd`.

    Args:
        prediction (ndarray | Tensor[*S]): mask; nonzero = foreground.
        reference (ndarray | Tensor[*S]): mask of the same shape.
        spacing: voxel size per axis (number or sequence); None = voxel units.
        connectivity: surface neighbourhood (1..ndim), as in medpy.

    Returns:
        float; 0.0 if both masks are empty, inf if exactly one is.

    Raises:
        ValueError: the shapes differ, bad spacing, connectivity < 1.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((5, 5), bool); a[1:4, 1:4] = True
        >>> b = np.zeros((5, 5), bool); b[2, 2] = True
        >>> asd(a, b)  # the 8 ring voxels lie 1 or sqrt(2) from the centre voxel
        1.2071067811865475
    """
    pred, ref, sp, conn = _prepare(prediction, reference, spacing, connectivity)
    empty = _empty_value(pred, ref)
    if empty is not None:
        return empty
    pred, ref = _joint_crop(pred, ref)
    footprint = generate_binary_structure(pred.ndim, conn)
    return float(_directed(_surface(pred, footprint), _surface(ref, footprint), sp).mean())


def assd(prediction: ArrayLike, reference: ArrayLike, spacing: Spacing = None, connectivity: int = 1) -> float:
    """Average symmetric surface distance (``medpy.metric.binary.assd``, medpy >= 0.5).

    The mean over the surface voxels of *both* masks of their distance to the
    other mask's surface (the two distance lists are concatenated, then
    averaged — medpy 0.4 averaged the two directed means instead).

    Args / Returns / Raises: as :func:`asd`.
    """
    pred, ref, sp, conn = _prepare(prediction, reference, spacing, connectivity)
    empty = _empty_value(pred, ref)
    if empty is not None:
        return empty
    d_pr, d_rp = _both_directions(pred, ref, sp, conn)
    return float(np.concatenate([d_pr, d_rp]).mean())


def hd(prediction: ArrayLike, reference: ArrayLike, spacing: Spacing = None, connectivity: int = 1) -> float:
    """Hausdorff distance between the two surfaces (``medpy.metric.binary.hd``).

    Args / Returns / Raises: as :func:`asd`.
    """
    pred, ref, sp, conn = _prepare(prediction, reference, spacing, connectivity)
    empty = _empty_value(pred, ref)
    if empty is not None:
        return empty
    d_pr, d_rp = _both_directions(pred, ref, sp, conn)
    return float(max(d_pr.max(), d_rp.max()))


def hd95(prediction: ArrayLike, reference: ArrayLike, spacing: Spacing = None, connectivity: int = 1) -> float:
    """95th percentile of the pooled surface distances of both directions (``medpy.metric.binary.hd95``).

    Uses ``numpy.percentile``'s default (linear) interpolation, as medpy does.

    Args / Returns / Raises: as :func:`asd`.
    """
    pred, ref, sp, conn = _prepare(prediction, reference, spacing, connectivity)
    empty = _empty_value(pred, ref)
    if empty is not None:
        return empty
    d_pr, d_rp = _both_directions(pred, ref, sp, conn)
    return float(np.percentile(np.hstack((d_pr, d_rp)), 95))


def surface_distance_metrics(
    prediction: ArrayLike, reference: ArrayLike, spacing: Spacing = None, connectivity: int = 1
) -> Dict[str, float]:
    """``{"asd", "assd", "hd", "hd95"}`` from one pair of distance transforms.

    Same values as calling the four functions, at the cost of one.

    Args / Raises: as :func:`asd`.

    Returns:
        dict of floats keyed ``"asd"``, ``"assd"``, ``"hd"``, ``"hd95"``.
    """
    pred, ref, sp, conn = _prepare(prediction, reference, spacing, connectivity)
    empty = _empty_value(pred, ref)
    if empty is not None:
        return {"asd": empty, "assd": empty, "hd": empty, "hd95": empty}
    d_pr, d_rp = _both_directions(pred, ref, sp, conn)
    return {
        "asd": float(d_pr.mean()),
        "assd": float(np.concatenate([d_pr, d_rp]).mean()),
        "hd": float(max(d_pr.max(), d_rp.max())),
        "hd95": float(np.percentile(np.hstack((d_pr, d_rp)), 95)),
    }
