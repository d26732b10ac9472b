"""NIfTI volumes in the nnU-Net layout.

Layout::

    <root>/dataset.json                  optional: labels, channel_names / modality, file_ending
    <root>/imagesTr/CASE_0000.nii.gz     channel 0 (CASE_0001... for more channels)
    <root>/labelsTr/CASE.nii.gz          integer labels, same (X, Y, Z) grid
    <root>/imagesTs/, labelsTs/          the test split, same naming

Both nnU-Net v1 (``"labels": {"0": "background", ...}``, ``"modality"``) and
v2 (``"labels": {"background": 0, ...}``, ``"channel_names"``) ``dataset.json``
are read. Noisy labels made by :func:`pyseg_noise.data.corrupt_dataset` go
to ``labelsTr_noisy/`` (every training case, the clean ones copied): train
with ``label_dir="labelsTr_noisy"``, evaluate with the default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .volume_dataset import DEFAULT_CROP_SIZE, VolumeDataset
from .volume_io import check_label, read_json, read_nifti, read_volume, require_file

__all__ = ["NiftiDataset", "read_dataset_json", "split_dirs", "list_label_cases", "list_image_cases",
           "check_every_image_labelled"]

PathLike = Union[str, Path]

_SPLIT_DIRS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}


def split_dirs(split: str) -> Tuple[str, str]:
    """(image folder, label folder) of ``split``: ``"train"`` -> Tr, ``"test"`` -> Ts."""
    if split not in _SPLIT_DIRS:
        raise ValueError(f"split must be 'train' or 'test' for the NIfTI layout, got {split!r}")
    return _SPLIT_DIRS[split]


def read_dataset_json(root: PathLike) -> Dict[str, Any]:
    """``<root>/dataset.json`` reduced to ``{"num_classes", "num_channels", "file_ending"}`` (None where absent).

    Raises:
        ValueError: unparsable JSON or a ``labels`` entry that is not a class-index mapping.
    """
    path = Path(root) / "dataset.json"
    info: Dict[str, Any] = {"num_classes": None, "num_channels": None, "file_ending": ".nii.gz"}
    if not path.is_file():
        return info
    meta = read_json(path, what="dataset.json")
    labels = meta.get("labels")
    if labels is not None:
        try:
            values = []
            for k, v in labels.items():
                # v2: {"name": index or [indices]}; v1: {"index": "name"}
                raw = v if not isinstance(v, str) else k
                values.extend(raw if isinstance(raw, (list, tuple)) else [raw])
            info["num_classes"] = max(int(v) for v in values) + 1
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"dataset.json {path}: cannot read class indices from 'labels' {labels!r}") from exc
    channels = meta.get("channel_names", meta.get("modality"))
    if isinstance(channels, dict) and channels:
        info["num_channels"] = len(channels)
    if isinstance(meta.get("file_ending"), str):
        info["file_ending"] = meta["file_ending"]
    return info


def _strip_ending(name: str, ending: str) -> Optional[str]:
    return name[: -len(ending)] if name.endswith(ending) else None


def list_label_cases(label_dir: PathLike, file_ending: str = ".nii.gz") -> List[str]:
    """Sorted case names of the ``CASE<file_ending>`` files in ``label_dir``.

    Raises:
        FileNotFoundError: ``label_dir`` missing.
        ValueError: it holds no label file.
    """
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise FileNotFoundError(f"label folder not found: {label_dir}")
    cases = sorted(c for c in (_strip_ending(p.name, file_ending) for p in label_dir.iterdir() if p.is_file()) if c)
    if not cases:
        raise ValueError(f"label folder {label_dir} holds no '*{file_ending}' file")
    return cases


def list_image_cases(image_dir: PathLike, file_ending: str = ".nii.gz") -> List[str]:
    """Sorted case names of the ``CASE_0000<file_ending>`` files (channel 0) in ``image_dir`` ([] if it is missing)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        return []
    names = (_strip_ending(p.name, "_0000" + file_ending) for p in image_dir.iterdir() if p.is_file())
    return sorted(c for c in names if c)


def check_every_image_labelled(root: PathLike, split: str = "train", label_dir: Optional[PathLike] = None) -> None:
    """Raise if an image of ``split`` has no label file.

    :class:`NiftiDataset` lists its cases from the label folder, so an image whose
    label is missing would silently drop out of training or validation; this check
    (run by the Trainer and ``pyseg-noise predict``) makes it an error instead.

    Args:
        root: the dataset folder.
        split: ``"train"`` or ``"test"``.
        label_dir: the label folder used instead of the split's (relative to ``root`` or absolute).

    Raises:
        FileNotFoundError: naming the first missing label file and its image.
    """
    root = Path(root)
    image_folder, default_label_folder = split_dirs(split)
    ending = read_dataset_json(root)["file_ending"]
    labels = root / (label_dir if label_dir is not None else default_label_folder)
    if not labels.is_dir():
        return  # the dataset itself reports a missing label folder
    missing = [c for c in list_image_cases(root / image_folder, ending) if not (labels / f"{c}{ending}").is_file()]
    if missing:
        more = f" ({len(missing) - 1} more image(s) lack a label)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"label file not found: {labels / (missing[0] + ending)}, the label of "
            f"{root / image_folder / (missing[0] + '_0000' + ending)}{more}"
        )


class NiftiDataset(VolumeDataset):
    """Cases of an nnU-Net-layout folder as ``{"image": Tensor[C, X, Y, Z], "label": Tensor[X, Y, Z], "case"}``.

    Args:
        root: the dataset folder (holding ``imagesTr`` ...).
        split: ``"train"`` (imagesTr/labelsTr) or ``"test"`` (imagesTs/labelsTs).
        cases: explicit case names; default every label file of the split's label folder
            (of ``label_dir`` if given).
        label_dir: folder to read labels from instead of the split's (relative to ``root``
            or absolute), e.g. ``"labelsTr_noisy"``.
        label_paths: optional ``{case: path}`` overriding single cases (``.nii[.gz]`` or ``.h5``
            read at dataset ``"label"``).
        num_channels: channels per case; default from ``dataset.json``, else the number of
            ``CASE_XXXX`` files of the first case.
        num_classes: default from ``dataset.json``'s ``labels`` (max index + 1), else unchecked.
        crop_size, augment, normalize, seed, cache: as :class:`pyseg_noise.data.LAH5Dataset`.

    Raises:
        FileNotFoundError: root, a folder or any case's image/label file missing (checked up front).
        ValueError: (when loaded) unreadable NIfTI, shape mismatch between channels or with the
            label, labels outside ``[0, num_classes)`` — naming the file.

    Example:
        >>> train = NiftiDataset("Dataset001_LA", label_dir="labelsTr_noisy", seed=0)  # doctest: +SKIP
        >>> test = NiftiDataset("Dataset001_LA", split="test")  # whole volumes, no augmentation  # doctest: +SKIP
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        cases: Optional[Sequence[str]] = None,
        label_dir: Optional[PathLike] = None,
        label_paths: Optional[Mapping[str, PathLike]] = None,
        num_channels: Optional[int] = None,
        crop_size: Union[str, Sequence[int], None] = "auto",
        augment: Optional[bool] = None,
        normalize: bool = True,
        seed: Optional[int] = None,
        num_classes: Optional[int] = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"NIfTI dataset folder not found: {self.root}")
        image_dir, default_label_dir = split_dirs(split)
        info = read_dataset_json(self.root)
        self.file_ending = info["file_ending"]
        self.image_dir = self.root / image_dir
        self.label_dir = self.root / (label_dir if label_dir is not None else default_label_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        if cases is None:
            cases = list_label_cases(self.label_dir, self.file_ending)
        if isinstance(crop_size, str):
            if crop_size != "auto":
                raise ValueError(f"crop_size must be 'auto', None or (x, y, z), got {crop_size!r}")
            crop_size = DEFAULT_CROP_SIZE if split == "train" else None
        super().__init__(
            cases,
            crop_size=crop_size,
            augment=(split == "train") if augment is None else augment,
            normalize=normalize,
            seed=seed,
            num_classes=num_classes if num_classes is not None else info["num_classes"],
            cache=cache,
        )
        self.split = split
        self.label_paths = self._check_label_paths(label_paths, self.cases)
        if num_channels is None:
            num_channels = info["num_channels"]
        if num_channels is None:
            first = self.cases[0]
            num_channels = 0
            while (self.image_dir / f"{first}_{num_channels:04d}{self.file_ending}").is_file():
                num_channels += 1
            num_channels = max(num_channels, 1)  # 0 -> the check below names the missing _0000 file
        self.num_channels = int(num_channels)
        for case in self.cases:
            for path in self.image_paths(case):
                require_file(path, f"image file of case {case!r}")
            require_file(self.label_path(case), f"label file of case {case!r}")

    def image_paths(self, case: str) -> List[Path]:
        """``imagesXx/CASE_0000<ending>``, ... one per channel."""
        return [self.image_dir / f"{case}_{c:04d}{self.file_ending}" for c in range(self.num_channels)]

    def label_path(self, case: str) -> Path:
        """The label file used for ``case`` (override, else ``<label_dir>/CASE<ending>``)."""
        return self.label_paths.get(case, self.label_dir / f"{case}{self.file_ending}")

    def load_case(self, case: str) -> Tuple[np.ndarray, np.ndarray]:
        channels = []
        paths = self.image_paths(case)
        for path in paths:
            data, _ = read_nifti(path, what="image file", as_float=True)
            if channels and data.shape != channels[0].shape:
                raise ValueError(
                    f"image file {path} has shape {tuple(data.shape)} but {paths[0]} has {tuple(channels[0].shape)}"
                )
            if not np.all(np.isfinite(data)):
                raise ValueError(f"image file {path} contains NaN or inf")
            channels.append(data)
        image = np.stack(channels).astype(np.float32, copy=False)
        label_path = self.label_path(case)
        label = check_label(read_volume(label_path, key="label", what="label file"), label_path, self.num_classes)
        self._check_shapes(image, label, paths[0], label_path)
        return image, label
