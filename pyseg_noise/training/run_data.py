"""The datasets a training run reads, built from its :class:`~pyseg_noise.training.DataConfig`.

* training crops with the configured labels (clean, the ``corrupt`` suffix, or
  per-case override files), seeded by the run;
* whole volumes of the validation split with the clean labels;
* a training case with both its clean and its training label, for the case plot.

Setup problems (missing folder, unknown layout, missing noisy labels, an
image without a label file, a class count that disagrees with the data) raise
:class:`ConfigError` or ``FileNotFoundError`` up front, before any training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from pyseg_noise.data import detect_layout, find_case_list, open_dataset
from pyseg_noise.data.nifti import check_every_image_labelled, read_dataset_json, split_dirs

from .config import ConfigError, TrainConfig

__all__ = ["resolve_layout", "label_override_paths", "train_dataset", "validation_dataset", "case_for_plot",
           "LABEL_FILE_ENDINGS"]

#: per-case label files accepted in ``data.label_overrides``
LABEL_FILE_ENDINGS = (".nii.gz", ".nii", ".h5")


def resolve_layout(config: TrainConfig) -> str:
    """``"h5"`` or ``"nifti"`` of ``config.data.root``.

    Raises:
        ConfigError: no root given, or the layout is not recognised.
        FileNotFoundError: the folder does not exist.
    """
    root = config.data.root
    if not root:
        raise ConfigError("data.root is required: pass --data DIR (an LA .h5 folder or an nnU-Net NIfTI folder)")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if config.data.layout:
        return config.data.layout
    try:
        return detect_layout(root)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def label_override_paths(folder: str) -> Dict[str, Path]:
    """``{case: file}`` of the label files (``<case>.nii.gz|.nii|.h5``) in ``folder``.

    Raises:
        FileNotFoundError: missing folder.
        ConfigError: no label file in it.
    """
    folder_path = Path(folder)
    if not folder_path.is_dir():
        raise FileNotFoundError(f"data.label_overrides folder not found: {folder_path}")
    out: Dict[str, Path] = {}
    for p in sorted(folder_path.iterdir()):
        for ending in LABEL_FILE_ENDINGS:
            if p.is_file() and p.name.endswith(ending):
                out[p.name[: -len(ending)]] = p
                break
    if not out:
        raise ConfigError(f"data.label_overrides folder {folder_path} holds no label file ({', '.join(LABEL_FILE_ENDINGS)})")
    return out


def _label_source(config: TrainConfig, layout: str, cases) -> dict:
    d = config.data
    kwargs: dict = {}
    if d.noisy_labels:
        if layout == "h5":
            kwargs["label_key"] = f"label_{d.noisy_labels}"
        else:
            base = "labelsTr" if d.train_split == "train" else "labelsTs"
            kwargs["label_dir"] = f"{base}_{d.noisy_labels}"
    if d.label_overrides:
        paths = label_override_paths(d.label_overrides)
        if cases is not None:
            paths = {c: p for c, p in paths.items() if c in set(cases)}
        if not paths:
            raise ConfigError(f"data.label_overrides {d.label_overrides} holds no label of a {d.train_split} case")
        kwargs["label_paths"] = paths
    return kwargs


def _check_classes(config: TrainConfig, layout: str) -> None:
    d = config.data
    if layout == "nifti":
        info = read_dataset_json(d.root)
        if info["num_classes"] is not None and info["num_classes"] != d.num_classes:
            raise ConfigError(
                f"data.num_classes={d.num_classes} but {Path(d.root) / 'dataset.json'} declares "
                f"{info['num_classes']} classes"
            )
        if info["num_channels"] is not None and info["num_channels"] != d.in_channels:
            raise ConfigError(
                f"data.in_channels={d.in_channels} but {Path(d.root) / 'dataset.json'} declares "
                f"{info['num_channels']} channels"
            )
    elif d.in_channels != 1:
        raise ConfigError(f"data.in_channels={d.in_channels} but LA .h5 files hold one channel")


def train_dataset(config: TrainConfig):
    """The training dataset (random crops, augmentation, the configured labels), checked on its first case.

    Raises:
        ConfigError, FileNotFoundError: see the module docstring.
    """
    layout = resolve_layout(config)
    d = config.data
    _check_classes(config, layout)
    common = dict(crop_size=tuple(d.crop_size), augment=d.augment, seed=config.seed, num_classes=d.num_classes,
                  cache=d.cache)
    if layout == "nifti":
        common["num_channels"] = d.in_channels
    try:
        probe = open_dataset(d.root, d.train_split, layout=layout, **common)
        source = _label_source(config, layout, probe.cases)
        if layout == "nifti":  # an image without a label would silently drop out of training
            check_every_image_labelled(d.root, d.train_split)
            if "label_dir" in source:
                check_every_image_labelled(d.root, d.train_split, source["label_dir"])
        ds = open_dataset(d.root, d.train_split, layout=layout, **common, **source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    # Read the first case now: a wrong class count, missing noisy labels or an
    # unreadable file then fails here with one message instead of inside a worker.
    try:
        ds.load_case(ds.cases[0])
    except (ValueError, KeyError) as exc:
        hint = ""
        if d.noisy_labels:
            hint = f" (were the noisy labels written? `pyseg-noise corrupt {d.root} --suffix {d.noisy_labels}`)"
        raise ConfigError(f"{exc}{hint}") from exc
    return ds


def _split_exists(root: str, split: str, layout: str) -> bool:
    if layout == "h5":
        try:
            find_case_list(root, split)
        except FileNotFoundError:
            return False
        return True
    try:
        image_folder, label_folder = split_dirs(split)
    except ValueError:
        return False
    return (Path(root) / image_folder).is_dir() and (Path(root) / label_folder).is_dir()


def validation_dataset(config: TrainConfig):
    """Whole volumes of ``data.val_split`` with clean labels, or None if the dataset has no such split.

    Raises:
        FileNotFoundError: the split exists but a case's file (e.g. a label) is missing.
        ConfigError: the split's files are inconsistent (e.g. an empty case list).
    """
    layout = resolve_layout(config)
    d = config.data
    if not _split_exists(d.root, d.val_split, layout):
        return None
    kwargs = dict(crop_size=None, augment=False, seed=config.seed, num_classes=d.num_classes)
    if layout == "nifti":
        kwargs["num_channels"] = d.in_channels
    try:
        if layout == "nifti":
            check_every_image_labelled(d.root, d.val_split)
        return open_dataset(d.root, d.val_split, layout=layout, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"validation split {d.val_split!r}: {exc}") from exc


def case_for_plot(config: TrainConfig, scan: int = 16) -> Optional[dict]:
    """A training case whose training label differs from the clean one (else the first case).

    Returns:
        ``{"case", "image" ndarray[C, X, Y, Z], "clean" ndarray[X, Y, Z], "noisy" ndarray | None}``.
    """
    layout = resolve_layout(config)
    d = config.data
    kwargs = dict(crop_size=None, augment=False, seed=config.seed, num_classes=d.num_classes)
    if layout == "nifti":
        kwargs["num_channels"] = d.in_channels
    clean = open_dataset(d.root, d.train_split, layout=layout, **kwargs)
    noisy_source = _label_source(config, layout, clean.cases)
    noisy = open_dataset(d.root, d.train_split, layout=layout, **kwargs, **noisy_source) if noisy_source else None
    best = None
    for case in clean.cases[:scan]:
        item = clean[clean.cases.index(case)]
        image, label = item["image"].numpy(), item["label"].numpy()
        if noisy is None:
            return {"case": case, "image": image, "clean": label, "noisy": None}
        noisy_label = noisy[noisy.cases.index(case)]["label"].numpy()
        differs = int(np.count_nonzero(noisy_label != label))
        if best is None or differs > best[0]:
            best = (differs, {"case": case, "image": image, "clean": label, "noisy": noisy_label})
    return None if best is None else best[1]
