"""Building datasets and DataLoaders from a folder, whatever its layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Union

from torch.utils.data import DataLoader

from .la_h5 import LAH5Dataset, find_case_list, read_case_list
from .nifti import NiftiDataset, list_label_cases, read_dataset_json, split_dirs
from .volume_dataset import VolumeDataset

__all__ = ["detect_layout", "training_case_names", "open_dataset", "whole_volume_loader"]

PathLike = Union[str, Path]


def detect_layout(root: PathLike) -> str:
    """``"nifti"`` if ``root`` holds ``imagesTr``/``imagesTs``, ``"h5"`` if a ``train.list``/``test.list`` is found.

    Raises:
        FileNotFoundError: ``root`` missing.
        ValueError: neither layout recognised.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if any((root / d).is_dir() for d in ("imagesTr", "imagesTs")):
        return "nifti"
    if any((base / f"{s}.list").is_file() for base in (root, root.parent) for s in ("train", "test")):
        return "h5"
    raise ValueError(
        f"cannot tell the layout of {root}: expected imagesTr/ or imagesTs/ (NIfTI, nnU-Net) "
        f"or train.list/test.list (LA h5)"
    )


def training_case_names(root: PathLike, layout: Optional[str] = None, split: str = "train") -> List[str]:
    """The cases of ``split`` of a dataset folder, without opening them.

    LA h5: the names in ``<split>.list`` (:func:`find_case_list`; ``data.train_split``);
    NIfTI: the cases with a label file in ``labelsTr`` (``labelsTs`` for ``"test"``).

    Raises:
        FileNotFoundError: no case list for ``split`` / no label folder.
        ValueError: an empty list or label folder, an unknown layout.
    """
    root = Path(root)
    layout = detect_layout(root) if layout is None else layout
    if layout == "h5":
        return read_case_list(find_case_list(root, split))
    if layout == "nifti":
        return list_label_cases(root / split_dirs(split)[1], read_dataset_json(root)["file_ending"])
    raise ValueError(f"layout must be 'h5', 'nifti' or None, got {layout!r}")


def open_dataset(root: PathLike, split: str = "train", *, layout: Optional[str] = None, **kwargs: Any) -> VolumeDataset:
    """:class:`LAH5Dataset` or :class:`NiftiDataset` of ``root``, by ``layout`` (detected if None).

    ``kwargs`` go to the dataset (``label_key=``/``label_dir=``, ``crop_size=``, ``seed=`` ...).

    Example:
        >>> train = open_dataset(root, "train", seed=0, label_key="label_noisy")  # doctest: +SKIP
    """
    layout = detect_layout(root) if layout is None else layout
    if layout == "h5":
        return LAH5Dataset(root, split, **kwargs)
    if layout == "nifti":
        return NiftiDataset(root, split, **kwargs)
    raise ValueError(f"layout must be 'h5', 'nifti' or None, got {layout!r}")


def whole_volume_loader(
    root: PathLike, split: str = "test", *, layout: Optional[str] = None, num_workers: int = 0, **kwargs: Any
) -> DataLoader:
    """A DataLoader of whole, z-scored, un-augmented volumes for evaluation (batch size 1, fixed order).

    Items are batched dicts ``{"image": Tensor[1, C, X, Y, Z], "label": Tensor[1, X, Y, Z],
    "case": [str]}`` with the clean labels unless ``kwargs`` say otherwise. Volumes differ in
    size between cases, hence batch size 1; sliding-window inference is the caller's job.

    Example:
        >>> for batch in whole_volume_loader("data/LA", "test"):  # doctest: +SKIP
        ...     pred = sliding_window(model, batch["image"]); dice(pred, batch["label"][0])
    """
    kwargs.setdefault("crop_size", None)
    kwargs.setdefault("augment", False)
    dataset = open_dataset(root, split, layout=layout, **kwargs)
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers)
