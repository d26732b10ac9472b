"""The torch ``Dataset`` behind both layouts: load a case, normalise, augment, crop, tensorise."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import check_crop_size, random_crop, random_rot_flip, zscore

__all__ = ["VolumeDataset", "DEFAULT_CROP_SIZE"]

# PINT §3.1: "We randomly crop 112 x 112 x 80 sub-volumes as the inputs."
DEFAULT_CROP_SIZE = (112, 112, 80)


class VolumeDataset(Dataset):
    """Base class: subclasses implement :meth:`load_case`, returning raw arrays of one case.

    Items are ``{"image": Tensor[C, X, Y, Z] float32, "label": Tensor[X, Y, Z] int64,
    "case": str}`` (``C`` = 1 for LA). The pipeline per item is: load ->
    z-score per channel (``normalize``) -> in-plane rot90 + flip (``augment``)
    -> pad and random crop to ``crop_size`` (None = the whole volume).

    Randomness: each item draws from ``numpy.random.default_rng([seed, epoch, index])``,
    so a run is reproducible for a given ``seed`` whatever the number of
    DataLoader workers or the order of the sampler; call :meth:`set_epoch` at
    the start of each epoch (as with ``DistributedSampler``) to get new crops.
    ``seed=None`` draws fresh OS entropy for every item (not reproducible).

    Args:
        cases: case names, in item order.
        crop_size: (x, y, z) or None for whole volumes.
        augment: apply the random in-plane rot90/flip.
        normalize: z-score the image.
        seed: non-negative int or None.
        num_classes: if given, labels must lie in ``[0, num_classes)``.
        cache: keep each case's normalised arrays in memory after its first load
            (per worker process; worth it for NIfTI, whose gzip decoding dominates).

    Raises:
        ValueError: bad ``crop_size``, ``seed`` or ``num_classes``, or no cases.
    """

    def __init__(
        self,
        cases: Sequence[str],
        *,
        crop_size: Optional[Sequence[int]] = DEFAULT_CROP_SIZE,
        augment: bool = True,
        normalize: bool = True,
        seed: Optional[int] = None,
        num_classes: Optional[int] = None,
        cache: bool = False,
    ) -> None:
        self.cases: List[str] = list(cases)
        if not self.cases:
            raise ValueError(f"{type(self).__name__} has no cases")
        self.crop_size = check_crop_size(crop_size)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        if num_classes is not None and (not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self.augment = bool(augment)
        self.normalize = bool(normalize)
        self.seed = None if seed is None else int(seed)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.cache = bool(cache)
        self.epoch = 0
        self._cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    # -- to implement -----------------------------------------------------------------
    def load_case(self, case: str) -> Tuple[np.ndarray, np.ndarray]:
        """Raw ``(image ndarray[C, X, Y, Z] float32, label ndarray[X, Y, Z] int64)`` of one case, checked."""
        raise NotImplementedError

    # -- public -----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of epoch ``epoch`` (crops and flips change per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cases)

    def item_rng(self, index: int) -> np.random.Generator:
        """The generator item ``index`` uses in the current epoch."""
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> Dict[str, Union[torch.Tensor, str]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} cases")
        index = index % len(self)
        case = self.cases[index]
        image, label = self._prepared(case)
        rng = self.item_rng(index)
        if self.augment:
            image, label = random_rot_flip(image, label, rng)
        if self.crop_size is not None:
            image, label = random_crop(image, label, self.crop_size, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
            "case": case,
        }

    # -- internals --------------------------------------------------------------------
    def _prepared(self, case: str) -> Tuple[np.ndarray, np.ndarray]:
        if case in self._cache:
            return self._cache[case]
        image, label = self.load_case(case)
        if self.normalize:
            image = zscore(image)
        if self.cache:
            self._cache[case] = (image, label)
        return image, label

    @staticmethod
    def _check_shapes(image: np.ndarray, label: np.ndarray, image_path, label_path) -> None:
        if image.shape[1:] != label.shape:
            raise ValueError(
                f"image {image_path} has spatial shape {tuple(image.shape[1:])} but label {label_path} "
                f"has shape {tuple(label.shape)}; they must match"
            )

    @staticmethod
    def _check_label_paths(label_paths: Optional[Mapping[str, Union[str, Path]]], cases: Sequence[str]):
        if label_paths is None:
            return {}
        unknown = sorted(set(label_paths) - set(cases))
        if unknown:
            raise ValueError(
                f"label_paths names case(s) {unknown[:5]} that are not in this split "
                f"({len(cases)} cases, e.g. {list(cases)[:3]})"
            )
        return {case: Path(p) for case, p in label_paths.items()}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cases={len(self)}, crop_size={self.crop_size}, augment={self.augment}, "
            f"normalize={self.normalize}, seed={self.seed})"
        )
