"""Datasets, noisy-label simulation and a synthetic LA-like dataset.

* :class:`LAH5Dataset` — the LA ``.h5`` layout (``<root>/<case>/mri_norm2.h5`` + ``train.list``, or the public
  release's ``<root>/2018LA_Seg_Training Set/<case>/mri_norm2.h5``).
* :class:`NiftiDataset` — nnU-Net NIfTI layout (``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``).
* :func:`open_dataset` / :func:`whole_volume_loader` — either layout, detected.
* :func:`erode_or_dilate`, :func:`corrupt_labels`, :func:`corrupt_dataset` — PINT §3.2 label noise.
* :func:`read_case_image`, :func:`write_pseudo_labels` — pseudo labels of distillation on disk.
* :func:`generate_synthetic_dataset` — a download-free LA-like dataset.

Items are ``{"image": Tensor[C, X, Y, Z] float32, "label": Tensor[X, Y, Z] int64, "case": str}``.
Train on noisy labels and evaluate on clean ones by choosing the label source:
``LAH5Dataset(root, label_key="label_noisy")`` / ``NiftiDataset(root, label_dir="labelsTr_noisy")``
(or ``label_paths={case: file}`` for single cases).
"""
from .la_h5 import LA_CASE_FOLDER, LA_FILE_NAME, LAH5Dataset, find_case_list, la_case_path, la_case_root, read_case_list
from .loaders import detect_layout, open_dataset, training_case_names, whole_volume_loader
from .nifti import NiftiDataset, read_dataset_json
from .noise import corrupt_dataset, corrupt_labels, erode_or_dilate, num_noisy_cases, plan_label_noise
from .pseudo_labels import read_case_image, write_pseudo_labels
from .synthetic import SYNTHETIC_SHAPE, generate_synthetic_dataset, make_synthetic_case
from .transforms import pad_to_size, random_crop, random_rot_flip, zscore
from .volume_dataset import DEFAULT_CROP_SIZE, VolumeDataset

__all__ = [
    "LAH5Dataset",
    "NiftiDataset",
    "VolumeDataset",
    "DEFAULT_CROP_SIZE",
    "LA_FILE_NAME",
    "LA_CASE_FOLDER",
    "la_case_root",
    "la_case_path",
    "read_case_list",
    "find_case_list",
    "read_dataset_json",
    "detect_layout",
    "training_case_names",
    "open_dataset",
    "whole_volume_loader",
    "erode_or_dilate",
    "corrupt_labels",
    "corrupt_dataset",
    "plan_label_noise",
    "num_noisy_cases",
    "read_case_image",
    "write_pseudo_labels",
    "generate_synthetic_dataset",
    "make_synthetic_case",
    "SYNTHETIC_SHAPE",
    "zscore",
    "pad_to_size",
    "random_crop",
    "random_rot_flip",
]
