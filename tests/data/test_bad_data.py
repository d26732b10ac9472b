"""Missing, corrupt or inconsistent files give clear errors naming the file."""
import re

import h5py
import nibabel as nib
import numpy as np
import pytest

from .conftest import SMALL_SHAPE
from pyseg_noise.data import LAH5Dataset, NiftiDataset, corrupt_dataset, generate_synthetic_dataset


def _named(path):
    return re.escape(str(path))


def _rewrite_h5(path, **datasets):
    with h5py.File(path, "r+") as f:
        for key, data in datasets.items():
            del f[key]
            f.create_dataset(key, data=data)


def _rewrite_nifti(path, data):
    affine = nib.load(str(path)).affine
    nib.save(nib.Nifti1Image(data, affine), str(path))


# ------------------------------------------------------------------ missing files
def test_missing_paths_h5(h5_root):
    with pytest.raises(FileNotFoundError, match=_named(h5_root / "nope")):
        LAH5Dataset(h5_root / "nope")
    case_file = h5_root / "case_002" / "mri_norm2.h5"
    case_file.unlink()
    with pytest.raises(FileNotFoundError, match=_named(case_file)):
        LAH5Dataset(h5_root)
    (h5_root / "test.list").unlink()
    with pytest.raises(FileNotFoundError, match=_named(h5_root / "test.list")):
        LAH5Dataset(h5_root, "test")
    with pytest.raises(FileNotFoundError, match=_named(h5_root / "missing.h5")):
        LAH5Dataset(h5_root, cases=["case_000"], label_paths={"case_000": h5_root / "missing.h5"})


def test_missing_paths_nifti(nifti_root):
    image = nifti_root / "imagesTr" / "case_001_0000.nii.gz"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=_named(image)):
        NiftiDataset(nifti_root)
    with pytest.raises(FileNotFoundError, match=_named(nifti_root / "labelsTr_noisy")):
        NiftiDataset(nifti_root, "test", label_dir="labelsTr_noisy")
    label = nifti_root / "labelsTs" / "case_007.nii.gz"
    label.unlink()
    with pytest.raises(FileNotFoundError, match=_named(label)):
        NiftiDataset(nifti_root, "test", cases=["case_006", "case_007"])


# ------------------------------------------------------------------ unreadable files
def test_corrupt_nifti_names_the_file(nifti_root):
    garbage = nifti_root / "imagesTr" / "case_001_0000.nii.gz"
    garbage.write_bytes(b"this is not a nifti file" * 10)
    truncated = nifti_root / "labelsTr" / "case_002.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:200])
    ds = NiftiDataset(nifti_root, crop_size=None, augment=False)
    with pytest.raises(ValueError, match=_named(garbage)):
        ds[1]
    with pytest.raises(ValueError, match=_named(truncated)):
        ds[2]
    assert ds[0]["image"].shape == (1, *SMALL_SHAPE)  # the healthy cases still load


def test_corrupt_h5_names_the_file(h5_root):
    bad = h5_root / "case_001" / "mri_norm2.h5"
    bad.write_bytes(b"\x89HDF garbage" * 20)
    ds = LAH5Dataset(h5_root, crop_size=None)
    with pytest.raises(ValueError, match=_named(bad)):
        ds[1]
    with pytest.raises(ValueError, match=r"no dataset 'label_noisy'.*\['image', 'label'\]"):
        LAH5Dataset(h5_root, label_key="label_noisy")[0]


def test_corrupt_dataset_json(nifti_root):
    (nifti_root / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match=_named(nifti_root / "dataset.json")):
        NiftiDataset(nifti_root)


def test_empty_case_list(h5_root):
    (h5_root / "train.list").write_text("\n  \n")
    with pytest.raises(ValueError, match="names no cases"):
        LAH5Dataset(h5_root)


# ------------------------------------------------------------------ inconsistent content
def test_shape_mismatch(h5_root, nifti_root):
    path = h5_root / "case_003" / "mri_norm2.h5"
    _rewrite_h5(path, label=np.zeros((24, 20, 15), np.uint8))
    with pytest.raises(ValueError, match=rf"{_named(path)}.*\(24, 20, 16\).*\(24, 20, 15\)"):
        LAH5Dataset(h5_root)[3]
    label = nifti_root / "labelsTr" / "case_000.nii.gz"
    _rewrite_nifti(label, np.zeros((24, 21, 16), np.uint8))
    with pytest.raises(ValueError, match=rf"must match"):
        NiftiDataset(nifti_root)[0]
    with pytest.raises(ValueError, match=_named(label)):
        NiftiDataset(nifti_root)[0]


def test_unexpected_label_values(h5_root, nifti_root):
    path = h5_root / "case_001" / "mri_norm2.h5"
    negative = np.zeros(SMALL_SHAPE, np.int8)
    negative[3, 3, 3] = -1
    _rewrite_h5(path, label=negative)
    with pytest.raises(ValueError, match=rf"{_named(path)}.*negative value -1"):
        LAH5Dataset(h5_root)[1]
    three = np.zeros(SMALL_SHAPE, np.uint8)
    three[1, 2, 3] = 3
    _rewrite_h5(path, label=three)
    assert LAH5Dataset(h5_root)[1]["label"].max() == 3  # no class count declared: accepted
    with pytest.raises(ValueError, match=rf"{_named(path)}.*value 3 but 2 classes"):
        LAH5Dataset(h5_root, num_classes=2)[1]
    # NIfTI: dataset.json declares background + left_atrium = 2 classes
    label = nifti_root / "labelsTr" / "case_004.nii.gz"
    _rewrite_nifti(label, three)
    with pytest.raises(ValueError, match=rf"{_named(label)}.*value 3 but 2 classes"):
        NiftiDataset(nifti_root)[4]
    fractional = np.zeros(SMALL_SHAPE, np.float32)
    fractional[0, 0, 0] = 0.5
    _rewrite_nifti(label, fractional)
    with pytest.raises(ValueError, match=rf"{_named(label)}.*non-integer"):
        NiftiDataset(nifti_root)[4]


def test_bad_image_content(h5_root, nifti_root):
    path = h5_root / "case_000" / "mri_norm2.h5"
    with h5py.File(path, "r") as f:
        image = f["image"][()]
    image[1, 1, 1] = np.nan
    _rewrite_h5(path, image=image)
    with pytest.raises(ValueError, match=rf"{_named(path)}.*NaN"):
        LAH5Dataset(h5_root)[0]
    four_d = nifti_root / "imagesTr" / "case_002_0000.nii.gz"
    _rewrite_nifti(four_d, np.zeros((*SMALL_SHAPE, 2), np.float32))
    with pytest.raises(ValueError, match=rf"{_named(four_d)}.*expected a 3-D volume"):
        NiftiDataset(nifti_root)[2]


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"crop_size": (112, 112)}, "crop_size"),
        ({"crop_size": (0, 8, 8)}, "crop_size"),
        ({"crop_size": "random"}, "crop_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"num_classes": 0}, "num_classes"),
        ({"label_paths": {"case_999": "x.h5"}}, "case_999"),
    ],
)
def test_bad_dataset_arguments(h5_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LAH5Dataset(h5_root, **kwargs)


def test_bad_split_and_index(h5_root, nifti_root):
    with pytest.raises(ValueError, match="split"):
        NiftiDataset(nifti_root, "validation")
    with pytest.raises(IndexError, match="out of range"):
        LAH5Dataset(h5_root)[6]


def test_bad_generator_and_noise_arguments(tmp_path, h5_root):
    with pytest.raises(ValueError, match="layout"):
        generate_synthetic_dataset(tmp_path / "a", n_train=1, n_test=0, shape=(16, 16, 16), layout="png")
    with pytest.raises(ValueError, match="shape"):
        generate_synthetic_dataset(tmp_path / "a", n_train=1, n_test=0, shape=(8, 16, 16))
    with pytest.raises(ValueError, match="n_train"):
        generate_synthetic_dataset(tmp_path / "a", n_train=0, n_test=1, shape=(16, 16, 16))
    with pytest.raises(FileExistsError, match=_named(h5_root)):
        generate_synthetic_dataset(h5_root, n_train=1, n_test=0, shape=(16, 16, 16))
    with pytest.raises(ValueError, match="fraction"):
        corrupt_dataset(h5_root, 1.5, seed=0)
    with pytest.raises(ValueError, match="radius_range"):
        corrupt_dataset(h5_root, 0.5, seed=0, radius_range=(9, 3))
    with pytest.raises(ValueError, match="header"):
        corrupt_dataset(h5_root, 0.5, seed=0, spacing="header")
    with pytest.raises(FileNotFoundError, match=_named(tmp_path / "none")):
        corrupt_dataset(tmp_path / "none", 0.5, seed=0)
