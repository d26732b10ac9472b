"""Per-label evaluation of a multi-class segmentation with every metric of the package."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

from .masks import ArrayLike, check_connectivity, check_spacing
from .overlap import dice, jaccard
from .surface_distance import surface_distance_metrics

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

__all__ = ["METRICS", "evaluate_multiclass"]

METRICS = ("dice", "jaccard", "asd", "assd", "hd", "hd95")
_DISTANCES = ("asd", "assd", "hd", "hd95")


def _as_label_map(x: ArrayLike, name: str) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integer labels, got dtype {x.dtype}")
    return x


def evaluate_multiclass(
    prediction: ArrayLike,
    reference: ArrayLike,
    labels: Optional[Iterable[int]] = None,
    metrics: Sequence[str] = METRICS,
    spacing: Optional[Union[float, Sequence[float]]] = None,
    connectivity: int = 1,
) -> Dict[int, Dict[str, float]]:
    """Each metric for each label ``l``, on the binary masks ``prediction == l`` and ``reference == l``.

    Args:
        prediction (ndarray | Tensor[*S]): integer label map.
        reference (ndarray | Tensor[*S]): integer label map of the same shape.
        labels: the labels to report; default every nonzero value found in
            either map (background 0 is not reported unless asked for).
        metrics: any of ``"dice", "jaccard", "asd", "assd", "hd", "hd95"``.
        spacing: voxel size per axis; None = voxel units.
        connectivity: surface neighbourhood, as in :func:`pyseg_noise.metrics.asd`.

    Returns:
        ``{label: {metric: value}}``. A label absent from both maps gets dice = jaccard = 1
        and distances 0; absent from one map only: dice = jaccard = 0 and distances inf
        (see :mod:`pyseg_noise.metrics.surface_distance`).

    Raises:
        ValueError: shapes differ, unknown metric name, bad spacing or connectivity.
        TypeError: non-integer label maps.

    Example:
        >>> import numpy as np
        >>> ref = np.zeros((8, 8), np.int64); ref[1:4, 1:4] = 1; ref[5:7, 5:7] = 2
        >>> evaluate_multiclass(ref, ref, metrics=("dice", "hd"))
        {1: {'dice': 1.0, 'hd': 0.0}, 2: {'dice': 1.0, 'hd': 0.0}}
    """
    pred = _as_label_map(prediction, "prediction")
    ref = _as_label_map(reference, "reference")
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference must have the same shape, got {tuple(pred.shape)} and {tuple(ref.shape)}"
        )
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected a subset of {list(METRICS)}")
    # validate once up front so a bad argument fails before any work, even with no labels present
    check_spacing(spacing, pred.ndim)
    check_connectivity(connectivity, pred.ndim)
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    result: Dict[int, Dict[str, float]] = {}
    for label in labels:
        label = int(label)
        p, r = pred == label, ref == label
        row: Dict[str, float] = {}
        if any(m in _DISTANCES for m in metrics):
            distances = surface_distance_metrics(p, r, spacing=spacing, connectivity=connectivity)
        for m in metrics:
            if m == "dice":
                row[m] = dice(p, r)
            elif m == "jaccard":
                row[m] = jaccard(p, r)
            else:
                row[m] = distances[m]
        result[label] = row
    return result
