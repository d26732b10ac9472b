"""Segmentation metrics equal to ``medpy.metric.binary``'s, without its exceptions on empty masks.

All functions take ``(prediction, reference, spacing=None, connectivity=1)``
(overlap metrics take only the masks) on numpy arrays or torch tensors; zero
is background, anything else foreground. Distances are in units of
``spacing`` (voxels by default). Empty masks: dice/jaccard of two empties = 1;
distances are 0.0 when both masks are empty and ``inf`` when exactly one is.
"""
from .evaluate import METRICS, evaluate_multiclass
from .overlap import dice, jaccard
from .surface_distance import asd, assd, hd, hd95, surface_distance_metrics, surface_distances

__all__ = [
    "dice",
    "jaccard",
    "asd",
    "assd",
    "hd",
    "hd95",
    "surface_distances",
    "surface_distance_metrics",
    "evaluate_multiclass",
    "METRICS",
]
