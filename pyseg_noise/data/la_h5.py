"""The LA ``.h5`` layout used by the left-atrium papers (UA-MT, PINT, ...).

Layout::

    <root>/<case>/mri_norm2.h5     datasets "image" (float32) and "label" (uint8), both (X, Y, Z)
    <root>/train.list, test.list   one case name per line

The public code bases keep the case folders in ``2018LA_Seg_Training Set/``
with the two list files beside that folder::

    data/train.list, data/test.list                     one case name per line
    data/2018LA_Seg_Training Set/<case>/mri_norm2.h5

UA-MT points its code at ``data/2018LA_Seg_Training Set`` and reads the lists
one level up; SSL4MIS-style code points at ``data`` (the folder holding the
lists and ``2018LA_Seg_Training Set/``). Either folder can be given as the
root: lists are searched in ``<root>`` then ``<root>/..``
(:func:`find_case_list`), case folders in ``<root>/2018LA_Seg_Training Set``
when that folder exists, else in ``<root>`` (:func:`la_case_root`). Noisy labels made by
:func:`pyseg_noise.data.corrupt_dataset` live in the same h5 files as the
dataset ``"label_noisy"``: train on them with ``label_key="label_noisy"``,
evaluate with the default ``label_key="label"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .volume_dataset import DEFAULT_CROP_SIZE, VolumeDataset
from .volume_io import check_label, read_h5, read_volume, require_file

__all__ = ["LAH5Dataset", "read_case_list", "find_case_list", "la_case_root", "la_case_path", "LA_FILE_NAME",
           "LA_CASE_FOLDER"]

LA_FILE_NAME = "mri_norm2.h5"
#: the folder of case folders in the public LA release (UA-MT, SSL4MIS)
LA_CASE_FOLDER = "2018LA_Seg_Training Set"

PathLike = Union[str, Path]


def read_case_list(path: PathLike) -> List[str]:
    """Case names of a ``.list`` file: one per line, surrounding blanks and empty lines dropped.

    Raises:
        FileNotFoundError: missing file.
        ValueError: no case names in it, or a name repeated.
    """
    path = require_file(path, "case list")
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first name
        cases = [line.strip() for line in f if line.strip()]
    if not cases:
        raise ValueError(f"case list {path} names no cases")
    seen = set()
    for case in cases:
        if case in seen:
            raise ValueError(f"case list {path} names case {case!r} twice")
        seen.add(case)
    return cases


def find_case_list(root: PathLike, split: str) -> Path:
    """``<root>/<split>.list``, else ``<root>/../<split>.list`` (the public LA release).

    Raises:
        FileNotFoundError: neither exists (both paths are named).
    """
    root = Path(root)
    candidates = [root / f"{split}.list", root.parent / f"{split}.list"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"case list for split {split!r} not found: tried {', '.join(map(str, candidates))}")


def la_case_root(root: PathLike, cases: Sequence[str] = (), file_name: str = LA_FILE_NAME) -> Path:
    """The folder holding the case folders of the LA dataset at ``root``.

    ``<root>/2018LA_Seg_Training Set`` when that folder exists (``root`` is the folder holding
    the lists and the case folder, as in SSL4MIS-style code), else ``root`` itself (this
    library's layout, and UA-MT's ``--root_path data/2018LA_Seg_Training Set``). When both hold
    some of ``cases``, the one holding more of them wins (ties: the nested folder).

    Example:
        >>> la_case_root("data/2018LA_Seg_Training Set")  # doctest: +SKIP
        PosixPath('data/2018LA_Seg_Training Set')
        >>> la_case_root("data")  # doctest: +SKIP
        PosixPath('data/2018LA_Seg_Training Set')
    """
    root = Path(root)
    nested = root / LA_CASE_FOLDER
    if not nested.is_dir():
        return root
    if cases:
        def held(folder: Path) -> int:
            return sum((folder / case / file_name).is_file() for case in cases)

        if held(root) > held(nested):
            return root
    return nested


def la_case_path(root: PathLike, case: str, file_name: str = LA_FILE_NAME) -> Path:
    """``<case root>/<case>/<file_name>`` of the LA dataset at ``root`` (:func:`la_case_root`)."""
    return la_case_root(root, (case,), file_name) / case / file_name


class LAH5Dataset(VolumeDataset):
    """Cases of the LA ``.h5`` layout as ``{"image": Tensor[1, X, Y, Z], "label": Tensor[X, Y, Z], "case"}``.

    Args:
        root: folder holding one sub-folder per case, or holding ``2018LA_Seg_Training Set/``
            with them (see the module docstring).
        split: ``"train"`` or ``"test"`` (any name with a ``<split>.list``).
        cases: explicit case names instead of the list file.
        list_file: explicit list file instead of ``<root>[/..]/<split>.list``.
        file_name: the h5 file inside each case folder.
        image_key: h5 dataset of the image.
        label_key: h5 dataset of the label: ``"label"`` (clean) or e.g. ``"label_noisy"``
            written by :func:`pyseg_noise.data.corrupt_dataset`.
        label_paths: optional ``{case: path}`` overriding the label of some cases with another
            file (``.h5`` read at ``label_key``, or ``.nii``/``.nii.gz``); other cases keep theirs.
        crop_size: ``"auto"`` = (112, 112, 80) for ``split="train"`` and whole volumes
            otherwise; a tuple; or None (whole volumes).
        augment: None = ``split == "train"``.
        normalize, seed, num_classes, cache: see :class:`VolumeDataset`.

    Raises:
        FileNotFoundError: ``root``, the list file or a case's h5 file is missing (checked
            up front, naming the path and the list that names the case).
        ValueError: (when an item is loaded) unreadable h5, missing dataset, image/label
            shape mismatch, or label values outside ``[0, num_classes)`` — naming the file.

    Example:
        >>> train = LAH5Dataset("data/LA", split="train", label_key="label_noisy", seed=0)  # doctest: +SKIP
        >>> item = train[0]; item["image"].shape, item["label"].dtype                        # doctest: +SKIP
        (torch.Size([1, 112, 112, 80]), torch.int64)
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        cases: Optional[Sequence[str]] = None,
        list_file: Optional[PathLike] = None,
        file_name: str = LA_FILE_NAME,
        image_key: str = "image",
        label_key: str = "label",
        label_paths: Optional[Mapping[str, PathLike]] = None,
        crop_size: Union[str, Sequence[int], None] = "auto",
        augment: Optional[bool] = None,
        normalize: bool = True,
        seed: Optional[int] = None,
        num_classes: Optional[int] = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"LA data folder not found: {self.root}")
        self.list_file: Optional[Path] = None
        if cases is None:
            self.list_file = Path(list_file) if list_file is not None else find_case_list(self.root, split)
            cases = read_case_list(self.list_file)
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
            num_classes=num_classes,
            cache=cache,
        )
        self.split = split
        self.file_name = file_name
        self.image_key = image_key
        self.label_key = label_key
        self.label_paths = self._check_label_paths(label_paths, self.cases)
        self.case_root = la_case_root(self.root, self.cases, file_name)
        named_in = f" (named in {self.list_file})" if self.list_file is not None else ""
        for case in self.cases:  # fail at construction, not in epoch 3's worker
            require_file(self.case_path(case), f"h5 file of case {case!r}{named_in}")
        for case, path in self.label_paths.items():
            require_file(path, f"label file of case {case!r}")

    def case_path(self, case: str) -> Path:
        """``<case root>/<case>/<file_name>`` (the case root: :func:`la_case_root`)."""
        return self.case_root / case / self.file_name

    def load_case(self, case: str) -> Tuple[np.ndarray, np.ndarray]:
        path = self.case_path(case)
        image = read_h5(path, self.image_key, what="LA h5 file")
        if image.ndim != 3:
            raise ValueError(f"LA h5 file {path} dataset {self.image_key!r} has shape {tuple(image.shape)}; expected (X, Y, Z)")
        label_path = self.label_paths.get(case, path)
        if label_path == path:
            label = read_h5(path, self.label_key, what="LA h5 file")
        else:
            label = read_volume(label_path, key=self.label_key, what="label file")
        label_name = f"{label_path}[{self.label_key!r}]" if str(label_path).endswith((".h5", ".hdf5")) else label_path
        label = check_label(label, label_name, self.num_classes)
        image = image.astype(np.float32, copy=False)[None]
        self._check_shapes(image, label, f"{path}[{self.image_key!r}]", label_name)
        if not np.all(np.isfinite(image)):
            raise ValueError(f"LA h5 file {path} image contains NaN or inf")
        return image, label
