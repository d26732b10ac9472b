"""Overlap metrics: Dice and Jaccard, equal to ``medpy.metric.binary.dc`` / ``jc``."""
from __future__ import annotations

import numpy as np

from .masks import ArrayLike, check_pair

__all__ = ["dice", "jaccard"]


def dice(prediction: ArrayLike, reference: ArrayLike) -> float:
    """Dice coefficient ``2 |P ∩ R| / (|P| + |R|)`` of two binary masks.

    Equals ``medpy.metric.binary.dc``, including its convention for two empty
    masks: they agree perfectly, so the Dice is 1.0 (one empty and one
    non-empty mask give 0.0).

    Args:
        prediction (ndarray | Tensor[*S]): mask; nonzero = foreground.
        reference (ndarray | Tensor[*S]): mask of the same shape.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: the shapes differ.
        TypeError: an input is neither a numpy array nor a torch tensor.

    Example:
        >>> import numpy as np
        >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.5
    """
    pred, ref = check_pair(prediction, reference)
    intersection = int(np.count_nonzero(pred & ref))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return 1.0
    return 2.0 * intersection / float(total)


def jaccard(prediction: ArrayLike, reference: ArrayLike) -> float:
    """Jaccard index (IoU) ``|P ∩ R| / |P ∪ R|`` of two binary masks.

    Equals ``medpy.metric.binary.jc``; two empty masks give 1.0.

    Args:
        prediction (ndarray | Tensor[*S]): mask; nonzero = foreground.
        reference (ndarray | Tensor[*S]): mask of the same shape.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: the shapes differ.
        TypeError: an input is neither a numpy array nor a torch tensor.

    Example:
        >>> import numpy as np
        >>> jaccard(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.3333333333333333
    """
    pred, ref = check_pair(prediction, reference)
    intersection = int(np.count_nonzero(pred & ref))
    union = int(np.count_nonzero(pred | ref))
    if union == 0:
        return 1.0
    return intersection / float(union)
