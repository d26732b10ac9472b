"""The synthetic LA-like generator: determinism, foreground fraction, layouts, difficulty."""
import json

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from pyseg_noise.data import LAH5Dataset, NiftiDataset, generate_synthetic_dataset, make_synthetic_case
from pyseg_noise.metrics import dice


def _h5(root, case):
    with h5py.File(root / case / "mri_norm2.h5", "r") as f:
        return f["image"][()], f["label"][()]


def test_same_seed_same_files_and_case_independence(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", n_train=3, n_test=1, shape=(24, 24, 16), seed=2)
    b = generate_synthetic_dataset(tmp_path / "b", n_train=3, n_test=1, shape=(24, 24, 16), seed=2)
    c = generate_synthetic_dataset(tmp_path / "c", n_train=1, n_test=1, shape=(24, 24, 16), seed=3)
    # case i depends on (seed, i) only, not on how many cases are generated
    d = generate_synthetic_dataset(tmp_path / "d", n_train=1, n_test=0, shape=(24, 24, 16), seed=2)
    assert a["train"] == ["case_000", "case_001", "case_002"] and a["test"] == ["case_003"]
    for case in a["train"] + a["test"]:
        ia, la = _h5(tmp_path / "a", case)
        ib, lb = _h5(tmp_path / "b", case)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(_h5(tmp_path / "a", "case_000")[0], _h5(tmp_path / "c", "case_000")[0])
    np.testing.assert_array_equal(_h5(tmp_path / "a", "case_000")[0], _h5(tmp_path / "d", "case_000")[0])
    assert (tmp_path / "a" / "train.list").read_text() == "case_000\ncase_001\ncase_002\n"
    assert (tmp_path / "a" / "test.list").read_text() == "case_003\n"
    settings = json.loads((tmp_path / "a" / "synthetic.json").read_text())
    assert settings["seed"] == 2 and settings["shape"] == [24, 24, 16]


def test_foreground_fraction_and_structure():
    for i in range(6):
        image, label = make_synthetic_case((48, 48, 32), np.random.default_rng([0, i]))
        assert image.dtype == np.float32 and label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
        assert 0.05 <= label.mean() <= 0.10
        # one connected target, kept off the volume faces (as in LA crops)
        assert ndi.label(label, structure=np.ones((3, 3, 3)))[1] == 1
        for axis in range(3):
            assert not label.take([0, 1, -2, -1], axis=axis).any()
        # brighter than the background on average
        assert image[label == 1].mean() > image[label == 0].mean() + 0.3
    _, small = make_synthetic_case((16, 16, 16), np.random.default_rng(0), foreground_fraction=(0.08, 0.08))
    assert small.sum() == round(0.08 * 16 ** 3)


def test_not_a_threshold_task():
    # the best global intensity threshold is far from perfect: bright distractors and noise
    image, label = make_synthetic_case((64, 64, 48), np.random.default_rng([1, 0]))
    best = max(dice(image > t, label) for t in np.quantile(image, np.linspace(0.5, 0.99, 50)))
    assert best < 0.8
    # ...and the distractors are really there: bright voxels (> target's 10th percentile) outside the target
    bright = image > np.quantile(image[label == 1], 0.1)
    assert (bright & (label == 0)).sum() > 0.5 * (label == 1).sum()


def test_nifti_layout(tmp_path):
    info = generate_synthetic_dataset(tmp_path, n_train=2, n_test=1, shape=(20, 18, 16), layout="nifti", seed=1,
                                      spacing=(0.625, 0.625, 1.25))
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "left_atrium": 1} and meta["numTraining"] == 2
    img = nib.load(str(tmp_path / "imagesTr" / "case_000_0000.nii.gz"))
    assert img.shape == (20, 18, 16) and img.header.get_zooms() == (0.625, 0.625, 1.25)
    assert (tmp_path / "labelsTs" / "case_002.nii.gz").is_file()
    # same seed, same volumes as the h5 layout
    generate_synthetic_dataset(tmp_path / "h5", n_train=2, n_test=1, shape=(20, 18, 16), layout="h5", seed=1)
    np.testing.assert_array_equal(np.asarray(img.dataobj), _h5(tmp_path / "h5", "case_000")[0])
    assert NiftiDataset(tmp_path, "test")[0]["image"].shape == (1, 20, 18, 16)
    assert LAH5Dataset(tmp_path / "h5", "test")[0]["label"].shape == (20, 18, 16)
    assert info["foreground_fraction"]["case_000"] == pytest.approx(_h5(tmp_path / "h5", "case_000")[1].mean())


def test_overwrite(tmp_path):
    generate_synthetic_dataset(tmp_path, n_train=3, n_test=0, shape=(16, 16, 16), seed=0)
    with pytest.raises(FileExistsError):
        generate_synthetic_dataset(tmp_path, n_train=1, n_test=0, shape=(16, 16, 16), seed=0)
    generate_synthetic_dataset(tmp_path, n_train=1, n_test=0, shape=(16, 16, 16), seed=0, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("case_*")) == ["case_000"]


# the binary output before the 3-class option existed (sha256 prefixes of the bytes of
# make_synthetic_case((40, 36, 24), default_rng([5, i])) at commit 4f3779c): the PINT reproduction depends on it
BINARY_DIGESTS = {0: ("fcc8252148c9989f", "60a84609af052aa3"), 1: ("92239580b2579668", "264da1b6f9ae25e2"),
                  2: ("3ca5ed3321557926", "530260fc7db40d8e")}


def _digest(a):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("i", sorted(BINARY_DIGESTS))
def test_binary_output_is_unchanged_and_three_classes_add_a_wall_ring(i):
    image, label = make_synthetic_case((40, 36, 24), np.random.default_rng([5, i]))
    assert (_digest(image), _digest(label)) == BINARY_DIGESTS[i]
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    image3, label3 = make_synthetic_case((40, 36, 24), np.random.default_rng([5, i]), num_classes=3)
    assert set(np.unique(label3)) == {0, 1, 2}
    # the same chamber; the ring is the shell around it, never inside it
    np.testing.assert_array_equal(label3 == 1, label == 1)
    ring = label3 == 2
    assert 0.02 < ring.mean() < 0.2
    from scipy.ndimage import binary_dilation

    assert (ring & ~binary_dilation(label == 1, iterations=8)).sum() == 0  # a thin wall next to the chamber
    # it is a visible, but not a threshold-separable, structure: between background and blood
    bg = label3 == 0
    assert np.median(image3[bg]) < np.median(image3[ring]) < np.median(image3[label3 == 1])
    # only the ring's own voxels change the image (spread by the partial-volume blur: radius 3 voxels)
    changed = np.abs(image3 - image) > 1e-5
    assert changed.any() and not (changed & (ndi.distance_transform_edt(~ring) > 4)).any()


def test_three_class_dataset_records_its_classes(tmp_path):
    import json

    info = generate_synthetic_dataset(tmp_path / "h5", n_train=2, n_test=1, shape=(24, 24, 16), seed=1,
                                      num_classes=3)
    assert json.loads((tmp_path / "h5" / "synthetic.json").read_text())["num_classes"] == 3
    case = LAH5Dataset(info["root"], "train", crop_size=None, augment=False)[0]
    assert set(case["label"].unique().tolist()) == {0, 1, 2}
    assert 0 < info["foreground_fraction"]["case_000"] == pytest.approx(float((case["label"] > 0).float().mean()))
    generate_synthetic_dataset(tmp_path / "two", n_train=1, n_test=0, shape=(24, 24, 16), seed=1)
    assert "num_classes" not in json.loads((tmp_path / "two" / "synthetic.json").read_text())
    generate_synthetic_dataset(tmp_path / "nii", n_train=1, n_test=1, shape=(24, 24, 16), seed=1, layout="nifti",
                               num_classes=3)
    labels = json.loads((tmp_path / "nii" / "dataset.json").read_text())["labels"]
    assert labels == {"background": 0, "blood_pool": 1, "myocardium": 2}
    with pytest.raises(ValueError, match="num_classes"):
        generate_synthetic_dataset(tmp_path / "bad", n_train=1, n_test=0, shape=(24, 24, 16), num_classes=4)
