"""Validation: sliding-window prediction of whole volumes and the papers' metrics against clean labels.

PINT Table 1 reports Dice (%) and ASD (voxels) of the predictions against the
*accurate* ground truth; TSMAN adds HD. Each case gets Dice, Jaccard, ASD (the
directed prediction -> reference distance the LA papers use, equal to
``medpy.metric.binary.asd``), HD95 and HD (the full Hausdorff distance, the
HVSMR platform's "HDD"), averaged over the foreground classes,
plus the predicted and reference foreground fractions (the collapse detector
reads them).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from pyseg_noise.inference import sliding_window_inference
from pyseg_noise.metrics import evaluate_multiclass

__all__ = ["METRIC_COLUMNS", "case_metrics", "evaluate_method", "summarize"]

_CASE_METRICS = ("dice", "jaccard", "asd", "hd95", "hd")
#: per-case columns, in table order
METRIC_COLUMNS = ("dice", "jaccard", "asd", "hd95", "hd", "fg_pred", "fg_ref")


def case_metrics(prediction: np.ndarray, reference: np.ndarray, num_classes: int,
                 spacing: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """Dice, Jaccard, ASD, HD95, HD averaged over classes ``1 .. num_classes - 1``, and foreground fractions.

    Args:
        prediction (ndarray[X, Y, Z]): integer label map.
        reference (ndarray[X, Y, Z]): integer clean label map.
        num_classes: including background.
        spacing: voxel size for the distances (None = voxels, as PINT reports).

    Returns:
        ``{"dice", "jaccard", "asd", "hd95", "hd", "fg_pred", "fg_ref"}``; distances are ``inf``
        when exactly one of the two masks of a class is empty.
    """
    per_label = evaluate_multiclass(prediction, reference, labels=range(1, num_classes),
                                    metrics=_CASE_METRICS, spacing=spacing)
    out = {m: float(np.mean([row[m] for row in per_label.values()])) for m in _CASE_METRICS}
    out["fg_pred"] = float(np.count_nonzero(prediction)) / prediction.size
    out["fg_ref"] = float(np.count_nonzero(reference)) / reference.size
    return out


@torch.no_grad()
def evaluate_method(method, dataset, *, patch_size: Sequence[int], stride: Sequence[int], batch_size: int = 1,
                    limit: Optional[int] = None, num_classes: Optional[int] = None) -> List[Dict[str, object]]:
    """Predict every case of ``dataset`` (whole volumes) with ``method.predict`` and score it.

    Args:
        method: a built :class:`~pyseg_noise.training.Method`.
        dataset: whole-volume dataset with clean labels (items ``image``, ``label``, ``case``).
        patch_size, stride: sliding window (the training crop and the LA stride by default).
        batch_size: windows per forward pass.
        limit: score only the first ``limit`` cases.
        num_classes: default ``method.config.data.num_classes``.

    Returns:
        one dict per case: ``{"case", **case_metrics}``.
    """
    num_classes = num_classes or method.config.data.num_classes
    method.eval()
    rows = []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        item = dataset[i]
        image = item["image"].to(method.device)
        probs = sliding_window_inference(image[None], method.predict, patch_size=tuple(patch_size),
                                         stride=tuple(stride), n_classes=num_classes, batch_size=batch_size,
                                         output="probs")
        pred = probs.argmax(1)[0].cpu().numpy().astype(np.int64)
        rows.append({"case": item["case"], **case_metrics(pred, item["label"].numpy(), num_classes)})
    return rows


def summarize(rows: Sequence[Mapping[str, object]], columns: Sequence[str] = METRIC_COLUMNS) -> Dict[str, float]:
    """``{metric: mean, metric_std: std}`` over cases (``inf`` stays ``inf``; std over finite values only if any is inf)."""
    out: Dict[str, float] = {"cases": float(len(rows))}
    for c in columns:
        values = np.array([float(r[c]) for r in rows], dtype=np.float64)
        if values.size == 0:
            out[c], out[f"{c}_std"] = math.nan, math.nan
            continue
        out[c] = float(values.mean()) if np.all(np.isfinite(values)) else math.inf
        finite = values[np.isfinite(values)]
        out[f"{c}_std"] = float(finite.std()) if finite.size else math.nan
        if c in ("asd", "hd95", "hd"):
            out[f"{c}_inf_cases"] = float(np.count_nonzero(~np.isfinite(values)))
    return out
