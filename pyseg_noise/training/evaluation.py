"""``pyseg-noise evaluate``: a metrics table for a folder of predictions against reference labels.

Predictions are files ``<case>.nii.gz|.nii|.h5|.npy`` (``.h5``: dataset
``label``); references are either such a folder or a dataset folder (its
clean labels of one split). Cases are matched by name; a case missing on
either side is an error that lists them. Every case gets Dice, Jaccard, ASD
(directed, prediction -> reference, as the LA papers) and HD95 per foreground
class (equal to medpy's); the summary is the mean and std over cases.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from pyseg_noise.data import detect_layout, open_dataset
from pyseg_noise.data.nifti import check_every_image_labelled
from pyseg_noise.data.volume_io import read_npy, read_volume
from pyseg_noise.metrics import evaluate_multiclass

from .config import ConfigError

__all__ = ["evaluate_folder", "format_table", "EVAL_METRICS", "LABEL_ENDINGS"]

EVAL_METRICS = ("dice", "jaccard", "asd", "hd95")
LABEL_ENDINGS = (".nii.gz", ".nii", ".h5", ".npy")
PathLike = Union[str, Path]


def _label_files(folder: Path) -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        for ending in LABEL_ENDINGS:
            if p.is_file() and p.name.endswith(ending):
                out[p.name[: -len(ending)]] = p
                break
    return out


def _read_label(path: Path) -> np.ndarray:
    data = read_npy(path, what="label file") if path.name.endswith(".npy") else read_volume(path, key="label",
                                                                                              what="label file")
    data = np.asarray(data)
    if data.dtype.kind not in "biu":
        if data.dtype.kind == "f" and np.array_equal(data, np.round(data)):
            data = data.astype(np.int64)
        else:
            raise ConfigError(f"{path} does not hold integer labels (dtype {data.dtype})")
    return data


def _references(ref: Path, split: str) -> Dict[str, object]:
    try:
        layout = detect_layout(ref)
    except ValueError:
        layout = None
    if layout is None:
        return dict(_label_files(ref))
    if layout == "nifti":  # the dataset lists its cases by label: name a missing one instead of skipping it
        check_every_image_labelled(ref, split)
    ds = open_dataset(ref, split, layout=layout, crop_size=None, augment=False, normalize=False)
    return {case: (ds, i) for i, case in enumerate(ds.cases)}


def evaluate_folder(pred_dir: PathLike, ref: PathLike, *, split: str = "test",
                    labels: Optional[Sequence[int]] = None, spacing=None) -> List[Dict[str, object]]:
    """Per case and foreground class: Dice, Jaccard, ASD, HD95.

    Args:
        pred_dir: folder of predicted label files.
        ref: folder of reference label files, or a dataset folder (clean labels of ``split``).
        labels: classes to score (default every nonzero label in either map).
        spacing: voxel size for distances (None = voxels).

    Returns:
        rows ``{"case", "label", "dice", "jaccard", "asd", "hd95"}``.

    Raises:
        FileNotFoundError: a folder is missing.
        ConfigError: no prediction, cases without a reference (or the reverse), shape mismatch.
    """
    pred_dir, ref = Path(pred_dir), Path(ref)
    for p, what in ((pred_dir, "prediction folder"), (ref, "reference folder")):
        if not p.is_dir():
            raise FileNotFoundError(f"{what} not found: {p}")
    preds = _label_files(pred_dir)
    if not preds:
        raise ConfigError(f"no prediction file ({', '.join(LABEL_ENDINGS)}) in {pred_dir}")
    refs = _references(ref, split)
    missing = sorted(set(preds) - set(refs))
    if missing:
        raise ConfigError(f"no reference for {len(missing)} predicted case(s) in {ref}: {', '.join(missing[:5])}")
    rows: List[Dict[str, object]] = []
    for case, path in preds.items():
        pred = _read_label(path)
        source = refs[case]
        if isinstance(source, tuple):
            ds, i = source
            reference = ds[i]["label"].numpy()
        else:
            reference = _read_label(source)
        if pred.shape != reference.shape:
            raise ConfigError(f"case {case}: prediction shape {pred.shape} differs from reference {reference.shape}")
        result = evaluate_multiclass(pred, reference, labels=labels, metrics=EVAL_METRICS, spacing=spacing)
        for label, values in result.items():
            rows.append({"case": case, "label": label, **values})
    return rows


def write_rows_csv(rows: Sequence[Dict[str, object]], path: PathLike) -> None:
    """Rows as CSV (columns case, label, metrics)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case", "label", *EVAL_METRICS])
        w.writeheader()
        w.writerows(rows)


def format_table(rows: Sequence[Dict[str, object]]) -> str:
    """A Markdown table: one line per case and class, then mean ± std per class."""
    lines = ["| case | label | Dice | Jaccard | ASD | HD95 |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['label']} | " + " | ".join(f"{float(r[m]):.4f}" for m in EVAL_METRICS) + " |")
    for label in sorted({r["label"] for r in rows}):
        cells = []
        for m in EVAL_METRICS:
            v = np.array([float(r[m]) for r in rows if r["label"] == label])
            if np.all(np.isfinite(v)):
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            else:
                cells.append(f"inf ({int(np.count_nonzero(~np.isfinite(v)))} empty)")
        lines.append(f"| **mean** | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
