"""Pseudo labels on disk: the images distillation reads and the label files it writes.

:func:`read_case_image` reads one case's image without its label (the unlabelled
cases of TSMAN's self-training may have none), z-scored as the datasets do.
:func:`write_pseudo_labels` stores labels made by
:func:`pyseg_noise.training.distill.distill_dataset` in one of two places:

* inside the dataset (``out_dir=None``): LA ``.h5`` — dataset ``label_<suffix>`` in
  every training case's ``mri_norm2.h5``; NIfTI — folder ``labelsTr_<suffix>/``.
  The pseudo-labelled cases get their pseudo label, the others a copy of their
  label, as :func:`pyseg_noise.data.corrupt_dataset` does for noisy labels; train
  with ``data.noisy_labels: <suffix>`` (``LAH5Dataset(root, label_key="label_pseudo")`` /
  ``NiftiDataset(root, label_dir="labelsTr_pseudo")``);
* a separate folder (``out_dir``): one file per pseudo-labelled case, ``<case>.h5``
  (dataset ``h5_key``) or ``<case><file_ending>``, which a dataset reads through
  ``label_paths=`` (``data.label_overrides``), leaving the dataset untouched.

Both LA layouts of the public code bases are read (:func:`~pyseg_noise.data.la_case_root`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from .la_h5 import LA_FILE_NAME, la_case_path, la_case_root
from .loaders import detect_layout, training_case_names
from .nifti import read_dataset_json, split_dirs
from .transforms import zscore
from .volume_io import read_h5, read_nifti, require_file, write_nifti

__all__ = ["read_case_image", "write_pseudo_labels"]

PathLike = Union[str, Path]


def _layout(root: Path, layout: Optional[str]) -> str:
    layout = detect_layout(root) if layout is None else layout
    if layout not in ("h5", "nifti"):
        raise ValueError(f"layout must be 'h5', 'nifti' or None, got {layout!r}")
    return layout


def read_case_image(root: PathLike, case: str, *, layout: Optional[str] = None, split: str = "train",
                    normalize: bool = True) -> np.ndarray:
    """The image of one case (``ndarray[C, X, Y, Z]`` float32, z-scored as the datasets do), no label needed.

    Raises:
        FileNotFoundError: the case's image file(s).
        ValueError: unreadable file, or NaN/inf in the image.
    """
    root = Path(root)
    if _layout(root, layout) == "h5":
        path = require_file(la_case_path(root, case), f"h5 file of case {case!r}")
        image = read_h5(path, "image", what="LA h5 file").astype(np.float32)[None]
    else:
        info = read_dataset_json(root)
        image_dir = root / split_dirs(split)[0]
        n = info["num_channels"] or max(1, len(list(image_dir.glob(f"{case}_[0-9][0-9][0-9][0-9]{info['file_ending']}"))))
        chans = []
        for c in range(n):
            p = require_file(image_dir / f"{case}_{c:04d}{info['file_ending']}", f"image file of case {case!r}")
            chans.append(read_nifti(p, what="image file", as_float=True)[0])
        image = np.stack(chans).astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image of case {case!r} in {root} contains NaN or inf")
    return zscore(image) if normalize else image


def write_pseudo_labels(root: PathLike, labels: Mapping[str, np.ndarray], *, layout: Optional[str] = None,
                        out_dir: Optional[PathLike] = None, suffix: str = "pseudo",
                        source_label_key: str = "label", h5_key: str = "label", overwrite: bool = True,
                        split: str = "train") -> dict:
    """Store pseudo labels in the dataset (``out_dir=None``) or in a folder of per-case files (module docstring).

    A manifest lists the pseudo-labelled cases: ``<out_dir>/pseudo_labels.json``, or
    ``<root>/label_<suffix>_manifest.json`` / ``<root>/labelsTr_<suffix>_manifest.json``.

    Args:
        root: dataset folder.
        labels: ``{case: ndarray[X, Y, Z]}`` integer labels of training cases.
        layout: ``"h5"``, ``"nifti"`` or None (detected).
        out_dir: the separate folder (created).
        suffix: name suffix inside the dataset (letters, digits, ``_``, ``-``).
        source_label_key: h5 dataset copied for the training cases without a pseudo label.
        h5_key: dataset name in the folder's ``.h5`` files (a dataset reads override files at
            its ``label_key``: ``"label"``, or ``"label_<suffix>"`` when the run also sets
            ``data.noisy_labels``).
        overwrite: replace existing pseudo labels (else FileExistsError).
        split: the training split (``data.train_split``), see
            :func:`~pyseg_noise.data.training_case_names`.

    Returns:
        ``{"mode": "dataset" | "folder", "layout", "cases", "target", "label_paths": {case: path},
        "manifest"}`` (``label_paths`` names the pseudo-labelled cases only; ``target`` is the
        h5 key or folder to train from).

    Raises:
        FileNotFoundError: root or a case file missing.
        FileExistsError: existing output with ``overwrite=False``.
        ValueError: a case that is not a training case, a label of the wrong shape or
            dtype, a bad ``suffix``.
    """
    import h5py  # deferred: h5py and nibabel cost ~0.25 s to import, and a run may need neither
    import nibabel as nib

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not suffix or not all(ch.isalnum() or ch in "_-" for ch in suffix):
        raise ValueError(f"suffix must be a non-empty name of letters, digits, '_' or '-', got {suffix!r}")
    layout = _layout(root, layout)
    train_cases = training_case_names(root, layout, split)
    unknown = sorted(set(labels) - set(train_cases))
    if unknown:
        raise ValueError(f"labels names case(s) {unknown[:5]} that are not training cases of {root}")
    arrays = {case: np.asarray(lab) for case, lab in labels.items()}
    for case, arr in arrays.items():
        if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"pseudo label of case {case!r} must be an integer ndarray[X, Y, Z], "
                             f"got dtype {arr.dtype} shape {arr.shape}")
    ending = read_dataset_json(root)["file_ending"] if layout == "nifti" else ".h5"
    case_root = la_case_root(root, train_cases) if layout == "h5" else None
    clean_dir = root / split_dirs(split)[1] if layout == "nifti" else None

    # where each case goes: {case: file}, and the h5 key inside it
    if out_dir is not None:
        folder = Path(out_dir)
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise FileExistsError(f"{folder} is not empty (overwrite=False)")
        folder.mkdir(parents=True, exist_ok=True)
        dst = {c: folder / f"{c}{ending}" for c in arrays}
        key, mode, target, manifest = h5_key, "folder", str(folder), folder / "pseudo_labels.json"
    elif layout == "h5":
        key = f"label_{suffix}"
        dst = {c: require_file(case_root / c / LA_FILE_NAME, f"h5 file of case {c!r}") for c in train_cases}
        if not overwrite:
            for p in dst.values():
                with h5py.File(p, "r") as f:
                    if key in f:
                        raise FileExistsError(f"{p} already holds dataset {key!r} (overwrite=False)")
        mode, target, manifest = "dataset", key, root / f"{key}_manifest.json"
    else:
        folder = root / f"{clean_dir.name}_{suffix}"
        if folder.exists():
            if not overwrite:
                raise FileExistsError(f"{folder} already exists (overwrite=False)")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        dst = {c: folder / f"{c}{ending}" for c in train_cases}
        key, mode, target, manifest = None, "dataset", folder.name, root / f"{folder.name}_manifest.json"

    for case, path in dst.items():
        arr = arrays.get(case)
        if layout == "h5":
            source = case_root / case / LA_FILE_NAME
            if arr is None:  # a training case without pseudo label keeps its own label
                arr = read_h5(source, source_label_key, what="LA h5 file")
            else:
                with h5py.File(require_file(source, f"h5 file of case {case!r}"), "r") as f:
                    _check_shape(case, arr, f["image"].shape)
            with h5py.File(path, "w" if out_dir is not None else "r+") as f:
                if key in f:
                    del f[key]
                f.create_dataset(key, data=arr, compression="gzip")
        elif arr is None:
            shutil.copyfile(clean_dir / f"{case}{ending}", path)
        else:
            image = require_file(root / split_dirs(split)[0] / f"{case}_0000{ending}", f"image file of case {case!r}")
            template = nib.load(str(image))
            _check_shape(case, arr, template.shape[:3])
            write_nifti(path, arr, template=template)
    paths: Dict[str, str] = {c: str(dst[c]) for c in arrays}
    record = {"mode": mode, "layout": layout, "cases": sorted(arrays), "target": target}
    manifest.write_text(json.dumps(record, indent=1))
    return {**record, "label_paths": paths, "manifest": str(manifest)}


def _check_shape(case: str, label: np.ndarray, shape) -> None:
    if tuple(label.shape) != tuple(shape):
        raise ValueError(f"pseudo label of case {case!r} has shape {tuple(label.shape)} but its image has "
                         f"{tuple(shape)}")
